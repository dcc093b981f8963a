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

import torch
from vos_probe import core_predictor, probe_parser, run_probe

from vseg.runtime.inference_core import InferenceCore


def gate(probs: torch.Tensor, threshold: float) -> torch.Tensor:
    """probs [1, K+1, H, W] -> the same with every object whose mean probability over the pixels
    it wins is below ``threshold`` moved to background."""
    winner = probs.argmax(1, keepdim=True)
    labels = torch.arange(probs.shape[1], device=probs.device).view(1, -1, 1, 1)
    won = (winner == labels).float()
    area = won.flatten(2).sum(2)  # [1, K+1] pixels each wins
    mean = (probs * won).flatten(2).sum(2) / area.clamp(min=1)
    unsure = (mean < threshold) & (area > 0)
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


def main(argv: list[str] | None = None) -> int:
    parser = probe_parser(__doc__, "confidence_gate.json")
    parser.add_argument("--thresholds", default="0.65", help="comma-separated thresholds to score beside 0")
    args = parser.parse_args(argv)
    thresholds = [float(x) for x in args.thresholds.split(",") if x]
    variants = [({"threshold": 0.0}, lambda model: model)]
    variants += [({"threshold": th}, lambda model, th=th: core_predictor(lambda: GatedCore(model, th)))
                 for th in thresholds]
    return run_probe(args, variants)


if __name__ == "__main__":
    sys.exit(main())
