"""Probe: drop an object's mask on frames where the model is unsure of it, at inference.

After each frame's decode, an object whose mean probability over its own predicted pixels (those
where it wins the argmax) is below a threshold is set to background there, before the frame's
output and its memory write: a false mask on a look-alike, while the target is out of the
picture, then neither scores as a false positive nor goes into memory as the object
(``vos_lost_targets.py`` measures how many false and good masks each threshold would drop).
Scored with ``validate_vos`` (the runtime's defaults otherwise) against the threshold 0.

    python benchmarks/vos_confidence_gate.py --model stm --data data/seed10 --thresholds 0.65 --json gate.json
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from vos_flip_ensemble import paired_gain
from vos_probe import probe_parser, scored_row

from vseg.errors import VsegError
from vseg.jsonio import write_json
from vseg.models.weights import load_named_model
from vseg.runtime.inference_core import InferenceCore


def gate(probs: torch.Tensor, threshold: float) -> torch.Tensor:
    """probs [1, K+1, H, W] -> the same with every object whose mean probability over the pixels
    it wins is below ``threshold`` moved to background."""
    winner = probs.argmax(1, keepdim=True)
    labels = torch.arange(probs.shape[1], device=probs.device).view(1, -1, 1, 1)
    won = (winner == labels).float()
    mean = (probs * won).flatten(2).sum(2) / won.flatten(2).sum(2).clamp(min=1)  # [1, K+1]
    unsure = (mean < threshold) & (won.flatten(2).sum(2) > 0)
    unsure[:, 0] = False
    dropped = probs * unsure[:, :, None, None]
    out = probs - dropped
    out[:, :1] += dropped.sum(1, keepdim=True)
    return out


class GatedCore(InferenceCore):
    def __init__(self, model, threshold: float) -> None:
        super().__init__(model)
        self.threshold = threshold

    def begin_step(self, *args, **kwargs):
        pending = super().begin_step(*args, **kwargs)
        if pending.index > 0:
            pending.probs = gate(pending.probs, self.threshold)
        return pending


def gated(model, threshold: float):
    """A validate_vos predictor: (name, frames uint8 [T, H, W, 3], first mask [H, W]) -> ids [T, H, W]."""
    def predict(name: str, frames: np.ndarray, first: np.ndarray) -> np.ndarray:
        core = GatedCore(model, threshold)
        return np.stack([core.step(f, first if t == 0 else None).ids for t, f in enumerate(frames)])
    return predict


def main(argv: list[str] | None = None) -> int:
    parser = probe_parser(__doc__, "confidence_gate.json")
    parser.add_argument("--thresholds", default="0.65", help="comma-separated thresholds to score beside 0")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    try:
        model = load_named_model(args.model, args.weights)
        for threshold in [0.0] + [float(x) for x in args.thresholds.split(",") if x]:
            predictor = model if threshold == 0 else gated(model, threshold)
            rows.append(scored_row(predictor, args.data, args.max_clips, threshold=threshold))
    except (VsegError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for row in rows[1:]:
        row["paired_gain_per_clip"] = paired_gain(row, rows[0])
        print({"threshold": row["threshold"], **row["paired_gain_per_clip"]})
    write_json(args.json, {"model": args.model, "weights": args.weights or "shipped", "data": args.data, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
