"""Test-time flip augmentation: the runtime's ``--flip`` against the plain run, with and
without its two memories sharing the average.

Variants, each scored with ``validate_vos`` (the runtime's defaults otherwise) on one set:

- ``plain``: one inference core;
- ``separate``: the runtime's :class:`~vseg.runtime.mirrored.MirroredCore` (``vseg run --flip``):
  a second core on the frames and first mask mirrored left to right, every frame's
  probabilities averaged (the mirrored ones mirrored back); each core writes its own masks;
- ``shared``: the same with ``share_memory=True``: both memories write the average (Cutie's
  ``flip_aug``).

Each row after the first gets its mean per-clip gain over the first row, with its standard error.

    python benchmarks/vos_flip_ensemble.py --model stm --data data/seed10 --json flip.json
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from vos_probe import probe_parser, scored_row

from vseg.errors import VsegError
from vseg.jsonio import write_json
from vseg.models.weights import load_named_model
from vseg.runtime.mirrored import MirroredCore
from vseg.train.validate import segment_sequence

VARIANTS = ("plain", "separate", "shared")


def shared_memory(model):
    """A validate_vos predictor: (name, frames uint8 [T, H, W, 3], first mask [H, W]) -> ids [T, H, W]."""
    def predict(name: str, frames: np.ndarray, first: np.ndarray) -> np.ndarray:
        core = MirroredCore(model, share_memory=True)
        return np.stack([core.step(f, first if t == 0 else None).ids for t, f in enumerate(frames)])
    return predict


def predictor(model, variant: str):
    if variant == "plain":
        return model
    if variant == "separate":
        return lambda name, frames, first: segment_sequence(model, frames, first, flip=True)
    return shared_memory(model)


def paired_gain(row: dict, base: dict) -> dict:
    gain = np.array([row["sequences"][n] - base["sequences"][n] for n in base["sequences"]])
    return {"mean": round(float(gain.mean()), 2),
            "standard_error": round(float(gain.std(ddof=1) / np.sqrt(len(gain))), 2) if len(gain) > 1 else None}


def main(argv: list[str] | None = None) -> int:
    parser = probe_parser(__doc__, "flip_ensemble.json")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {', '.join(VARIANTS)}")
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        print(f"error: --variants takes {', '.join(VARIANTS)}, got {args.variants!r}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    rows = []
    try:
        model = load_named_model(args.model, args.weights)
        for variant in variants:
            rows.append(scored_row(predictor(model, variant), args.data, args.max_clips, variant=variant))
    except VsegError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for row in rows[1:]:
        row["paired_gain_per_clip"] = paired_gain(row, rows[0])
        print({"variant": row["variant"], "against": rows[0]["variant"], **row["paired_gain_per_clip"]})
    write_json(args.json, {"model": args.model, "weights": args.weights or "shipped", "data": args.data,
                           "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
