"""Objects that enter later: tracked from a mask given on frame E against from frame 0.

YouTube-VOS gives each object's mask on the frame where it first appears. These synthetic
clips show every object from frame 0, so each clip with two or more objects is run twice:

- ``frame0``: every object given on frame 0 (the DAVIS way);
- ``entering``: the clip's highest id held back and given (its ground truth, alone) on the
  first frame from ``--enter-at`` on that shows it; the runtime pins that frame in memory and the
  object stops reading frame 0;
- ``reads_frame0`` (``--ablate``): as ``entering``, but the entering object keeps reading
  frame 0, whose mask labels it background everywhere (the runtime's choice, undone here by
  patching :meth:`MemoryStore.add` for the process).

Scores: J, F and J&F of the held-back object and of the others over the frames after its
entry (the last frame excluded, as DAVIS does), per clip and their means, with the paired
difference of ``entering`` minus ``frame0`` per clip (± standard error).

    python benchmarks/late_objects.py --model lite --data data/seed10 --enter-at 10 --ablate --json late.json
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from vseg.data.datasets import load_sequence, open_dataset
from vseg.errors import VsegError
from vseg.jsonio import write_json
from vseg.metrics.frame_jf import score_frame
from vseg.models.weights import load_named_model
from vseg.runtime.memory import MemoryStore
from vseg.train.validate import segment_sequence

_add = MemoryStore.add


def _add_reading_frame0(self, *args, introduces=None, **kwargs):
    return _add(self, *args, **kwargs)


def run_clip(model, frames: np.ndarray, gt: np.ndarray, late: int, enter: int | None) -> np.ndarray:
    """Predicted ids [T, H, W] (the runtime's defaults); ``late`` given on frame ``enter``
    (None: every object on frame 0)."""
    if enter is None:
        return segment_sequence(model, frames, gt[0])
    first = np.where(gt[0] == late, 0, gt[0]).astype(np.uint8)
    return segment_sequence(model, frames, first, later={enter: np.where(gt[enter] == late, late, 0).astype(np.uint8)})


def score_after(gt: np.ndarray, pred: np.ndarray, late: int, enter: int) -> dict:
    """Mean J, F, J&F (percent) of ``late`` and of the other objects over frames enter+1..T-2."""
    n = int(gt[0].max())
    per_frame = [score_frame(gt[t], pred[t], n) for t in range(enter + 1, len(gt) - 1)]
    j = np.mean([s[0] for s in per_frame], axis=0)
    f = np.mean([s[1] for s in per_frame], axis=0)
    others = [i for i in range(n) if i != late - 1 and (gt[0] == i + 1).any()]
    pick = {"late": [late - 1], "others": others}
    return {k: {"J": 100 * float(j[v].mean()), "F": 100 * float(f[v].mean()),
                "J&F": 50 * float(j[v].mean() + f[v].mean())} for k, v in pick.items()}


def paired(rows: list[dict], a: str, b: str, who: str) -> dict:
    diff = np.array([r[b][who]["J&F"] - r[a][who]["J&F"] for r in rows])
    return {"mean": round(float(diff.mean()), 2),
            "standard_error": round(float(diff.std(ddof=1) / np.sqrt(len(diff))), 2) if len(diff) > 1 else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lite")
    parser.add_argument("--weights", default=None, help="default: the shipped weights")
    parser.add_argument("--data", required=True, help="a DAVIS-layout folder (every frame annotated)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--enter-at", type=int, default=10)
    parser.add_argument("--ablate", action="store_true", help="also the run where the entering object reads frame 0")
    parser.add_argument("--max-clips", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default="late_objects.json")
    args = parser.parse_args(argv)
    try:
        torch.set_num_threads(args.threads)
        model = load_named_model(args.model, args.weights)
        sequences = list(open_dataset(args.data, args.split))[:args.max_clips]
        variants = ["frame0", "entering"] + (["reads_frame0"] if args.ablate else [])
        rows, start = [], time.perf_counter()
        for seq in sequences:
            frames, gt = load_sequence(seq)
            late = int(gt[0].max())
            shown = [t for t in range(args.enter_at, len(gt) - 2) if (gt[t] == late).any()]
            if len(np.unique(gt[0])) < 3 or not shown:  # needs another object on frame 0, and an entry
                continue
            enter, row = shown[0], {"clip": seq.name, "late_id": late}
            row["enter"] = enter
            for variant in variants:
                MemoryStore.add = _add_reading_frame0 if variant == "reads_frame0" else _add
                pred = run_clip(model, frames, gt, late, None if variant == "frame0" else enter)
                row[variant] = score_after(gt, pred, late, enter)
            MemoryStore.add = _add
            rows.append(row)
            print(f"{seq.name}: " + ", ".join(f"{v} {row[v]['late']['J&F']:.1f}" for v in variants), flush=True)
    except VsegError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    means = {v: {who: {m: round(float(np.mean([r[v][who][m] for r in rows])), 2) for m in ("J", "F", "J&F")}
                 for who in ("late", "others")} for v in variants}
    result = {
        "model": args.model, "weights": args.weights or "shipped", "data": args.data, "enter_at": args.enter_at,
        "clips": len(rows), "minutes": round((time.perf_counter() - start) / 60, 1), "means": means,
        "paired_gain_over_frame0": {v: {who: paired(rows, "frame0", v, who) for who in ("late", "others")}
                                    for v in variants[1:]},
        "rows": rows,
    }
    write_json(args.json, result)
    print({k: v for k, v in result.items() if k != "rows"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
