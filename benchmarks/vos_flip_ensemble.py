"""Probe: a mirrored second run averaged in (test-time flip augmentation), at twice the cost.

Each clip runs through two inference cores with the runtime's defaults, one on the frames and
first mask as they are and one on them mirrored left to right; every frame's probabilities
are averaged (the mirrored ones mirrored back) before the ids are taken. The two memories stay
apart: each core writes its own masks, so this is the simple form, not one whose memories share
the averaged masks. Scored with ``validate_vos`` against the plain run.

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
from vseg.runtime.inference_core import InferenceCore


def flip_ensemble(model):
    """A validate_vos predictor: (name, frames uint8 [T, H, W, 3], first mask [H, W]) -> ids [T, H, W]."""
    def predict(name: str, frames: np.ndarray, first: np.ndarray) -> np.ndarray:
        plain, mirrored = InferenceCore(model), InferenceCore(model)
        out = np.empty(frames.shape[:3], np.uint8)
        out[0] = first
        for t, frame in enumerate(frames):
            mask = first if t == 0 else None
            a = plain.step(frame, mask)
            b = mirrored.step(np.ascontiguousarray(frame[:, ::-1]),
                              None if mask is None else np.ascontiguousarray(mask[:, ::-1]))
            if t:
                probs = a.probabilities + torch.flip(b.probabilities, dims=[-1])
                out[t] = np.array([0, *a.object_ids], np.uint8)[probs.argmax(0).numpy()]
        return out
    return predict


def main(argv: list[str] | None = None) -> int:
    args = probe_parser(__doc__, "flip_ensemble.json").parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    try:
        model = load_named_model(args.model, args.weights)
        for variant, predictor in (("plain", model), ("flip_ensemble", flip_ensemble(model))):
            rows.append(scored_row(predictor, args.data, args.max_clips, variant=variant))
    except VsegError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    gain = np.array([rows[1]["sequences"][n] - rows[0]["sequences"][n] for n in rows[0]["sequences"]])
    paired = {"mean": round(float(gain.mean()), 2),
              "standard_error": round(float(gain.std(ddof=1) / np.sqrt(len(gain))), 2) if len(gain) > 1 else None}
    write_json(args.json, {"model": args.model, "weights": args.weights or "shipped", "data": args.data,
                           "rows": rows, "paired_gain_per_clip": paired})
    print({"paired_gain_per_clip": paired})
    return 0


if __name__ == "__main__":
    sys.exit(main())
