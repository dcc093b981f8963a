"""What the inference-time probes of `stm`/`lite` share: their options, one scored row, the
loop over variants with paired gains, and a predictor from a per-clip inference core.

A probe changes something at inference only and scores the result with ``validate_vos`` (the
runtime's defaults) on a choosing set; each row keeps the per-clip J&F so two rows can be
compared clip by clip. Used by ``vos_background_offset.py``, ``vos_confidence_gate.py`` and
``vos_flip_ensemble.py``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from vseg.errors import VsegError
from vseg.jsonio import write_json
from vseg.models.weights import load_named_model
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


def paired_gain(row: dict, base: dict) -> dict:
    """Mean per-clip J&F gain of ``row`` over ``base`` and its standard error."""
    gain = np.array([row["sequences"][n] - base["sequences"][n] for n in base["sequences"]])
    return {"mean": round(float(gain.mean()), 2),
            "standard_error": round(float(gain.std(ddof=1) / np.sqrt(len(gain))), 2) if len(gain) > 1 else None}


def core_predictor(new_core: Callable[[], object]):
    """A validate_vos predictor that runs a fresh ``new_core()`` (an inference core) over each
    clip: (name, frames uint8 [T, H, W, 3], first mask [H, W]) -> ids [T, H, W]."""
    def predict(name, frames, first):
        core = new_core()
        return np.stack([core.step(f, first if t == 0 else None).ids for t, f in enumerate(frames)])
    return predict


def run_probe(args: argparse.Namespace, variants: list[tuple[dict, Callable]]) -> int:
    """Score each (labels, model -> model or predictor) variant in turn, the first being the
    baseline of every paired gain; write them to args.json. Returns the exit code."""
    torch.set_num_threads(args.threads)
    rows = []
    try:
        model = load_named_model(args.model, args.weights)
        for labels, make in variants:
            rows.append(scored_row(make(model), args.data, args.max_clips, **labels))
    except VsegError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for row in rows[1:]:
        row["paired_gain_per_clip"] = paired_gain(row, rows[0])
        print({**{k: v for k, v in row.items() if k not in ("sequences", "J", "F", "minutes")}}, flush=True)
    write_json(args.json, {"model": args.model, "weights": args.weights or "shipped", "data": args.data, "rows": rows})
    return 0
