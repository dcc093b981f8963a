"""What the inference-time probes of `stm`/`lite` share: their options and one scored row.

A probe changes something at inference only and scores the result with ``validate_vos`` (the
runtime's defaults) on a choosing set; each row keeps the per-clip J&F so two rows can be
compared clip by clip. Used by ``vos_background_offset.py`` and ``vos_flip_ensemble.py``.
"""

from __future__ import annotations

import argparse
import time

from vseg.train import validate_vos


def probe_parser(doc: str, default_json: str) -> argparse.ArgumentParser:
    """--model, --weights, --data, --max-clips, --threads, --json; the probe adds its own."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--model", default="stm")
    parser.add_argument("--weights", default=None, help="default: the shipped weights")
    parser.add_argument("--data", required=True)
    parser.add_argument("--max-clips", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=default_json)
    return parser


def scored_row(predictor, data: str, max_clips: int | None, **labels) -> dict:
    """validate_vos of ``predictor`` (a model or a predictor) -> {labels, J&F, J, F, minutes,
    sequences: per-clip J&F}; prints the row without its clips."""
    start = time.perf_counter()
    score = validate_vos(predictor, data, max_sequences=max_clips)
    row = {**labels, "J&F": round(score["J&F"], 2), "J": round(score["J"], 2), "F": round(score["F"], 2),
           "minutes": round((time.perf_counter() - start) / 60, 1), "sequences": score["sequences"]}
    print({k: v for k, v in row.items() if k != "sequences"}, flush=True)
    return row
