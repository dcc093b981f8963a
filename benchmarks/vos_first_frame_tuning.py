"""Probe: tune a copy of the network on the video's first frame before running it (OSVOS-style).

For each clip a copy of the model is fine-tuned for a few steps on its annotated first frame alone:
frame 0 (as it is, or warped) with its ground truth writes memory, a randomly warped copy of it
(rotation, scale, shift, brightness; the same warp for the masks) is segmented from that memory,
and the loss is training's (bootstrapped cross-entropy plus Dice) on the warped masks. Look-alikes
that frame 0 shows unannotated are background in that loss, so the tuned copy is asked to tell the
targets from them. BatchNorm stays in inference mode; the copy then runs through the runtime's
inference core with its defaults and is scored with ``validate_vos`` against the untuned model.

    python benchmarks/vos_first_frame_tuning.py --model stm --data data/seed10 --max-clips 8 \
        --variants 20:1e-5:decoder:1,40:5e-6:all:0.5 --json first_frame_tuning.json

A variant is STEPS:LR:PARTS:STRENGTH, PARTS a '+'-joined list of the network's submodules (e.g.
decoder+value_encoder+value_fusion) or 'all', STRENGTH scaling every warp range (1: up to 15
degrees, 15% scale, 15% shift, 15% gain).
"""

from __future__ import annotations

import copy
import math
import sys

import numpy as np
import torch
import torch.nn.functional as F
from vos_probe import probe_parser, run_probe

from vseg.errors import VsegError
from vseg.models.registry import build_model
from vseg.models.stm import MemoryNetwork
from vseg.runtime.framing import Framing
from vseg.train.losses import bootstrapped_cross_entropy, dice_loss, masks_to_ids
from vseg.train.validate import segment_sequence

TOP_FRACTION = 0.15  # bootstrapped CE keeps the hardest 15% of the pixels, as training ends with


def random_warp(image: torch.Tensor, masks: torch.Tensor, rng: torch.Generator,
                strength: float) -> tuple[torch.Tensor, torch.Tensor]:
    """image [1, 3, H, W] in [0, 1], masks [1, K, H, W] 0/1 -> both under one random similarity
    warp (image: bilinear with reflected borders, then a gain and an offset; masks: nearest, and
    what comes in from outside is background)."""
    def uniform(scale: float) -> float:
        return (torch.rand(1, generator=rng).item() * 2 - 1) * scale * strength

    angle, zoom = math.radians(uniform(15.0)), math.exp(uniform(0.15))
    shift_x, shift_y = uniform(0.15), uniform(0.15)
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    theta = torch.tensor([[[cos, -sin, shift_x], [sin, cos, shift_y]]], dtype=image.dtype)
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    warped = F.grid_sample(image, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    warped_masks = F.grid_sample(masks, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return (warped * (1 + uniform(0.15)) + uniform(0.05)).clamp(0, 1), warped_masks


def tuned_copy(model: MemoryNetwork, frame: np.ndarray, first: np.ndarray, steps: int, lr: float,
               parts: list[str], strength: float, seed: int) -> MemoryNetwork:
    """A copy of ``model`` tuned on one annotated frame: frame uint8 [H, W, 3], first ids uint8 [H, W]."""
    tuned = copy.deepcopy(model).eval()
    framing = Framing.of(*first.shape, getattr(model.config, "min_side", 0))
    image = framing.frame_in(torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255)
    ids = [int(v) for v in np.unique(first) if v]
    masks = framing.masks_in(torch.stack([torch.from_numpy(first == v).float() for v in ids])[None])
    tuned.requires_grad_(False)
    chosen = [tuned] if parts == ["all"] else [getattr(tuned, name) for name in parts]
    params = [p for module in chosen for p in module.parameters()]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=lr)
    rng = torch.Generator().manual_seed(seed)
    valid = torch.ones(1, len(ids), dtype=torch.bool)
    one_frame = torch.ones(1, 1, dtype=torch.bool)
    for _ in range(steps):
        memory_image, memory_masks = (image, masks) if torch.rand(1, generator=rng).item() < 0.5 else \
            random_warp(image, masks, rng, strength)
        query_image, query_masks = random_warp(image, masks, rng, strength)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            memory = tuned.encode_key(memory_image)
            values = tuned.encode_value(memory_image, memory_masks, memory.feat16)
            query = tuned.encode_key(query_image)
            logits = tuned.segment(query.key, query.feat16, query.skip8, query.skip4,
                                   memory.key.unsqueeze(2), values.unsqueeze(3), one_frame).float()
        loss = bootstrapped_cross_entropy(logits, masks_to_ids(query_masks), TOP_FRACTION) + \
            dice_loss(logits, query_masks, valid)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return tuned.requires_grad_(False).eval()


def tuning_predictor(model: MemoryNetwork, steps: int, lr: float, parts: list[str], strength: float):
    """A validate_vos predictor: tune a copy on the clip's first frame, then run it."""
    def predict(name: str, frames: np.ndarray, first: np.ndarray) -> np.ndarray:
        seed = sum(map(ord, name))  # each clip its own warps, the same in every variant
        tuned = tuned_copy(model, frames[0], first, steps, lr, parts, strength, seed)
        with torch.no_grad():
            return segment_sequence(tuned, frames, first)
    return predict


def parse_variant(text: str) -> dict:
    steps, lr, parts, strength = text.split(":")
    return {"steps": int(steps), "lr": float(lr), "parts": parts.split("+"), "strength": float(strength)}


def main(argv: list[str] | None = None) -> int:
    parser = probe_parser(__doc__, "first_frame_tuning.json")
    parser.add_argument("--variants", default="20:1e-5:decoder:1", help="comma-separated STEPS:LR:PARTS:STRENGTH")
    args = parser.parse_args(argv)
    try:
        specs = [parse_variant(v) for v in args.variants.split(",") if v]
    except ValueError:
        print(f"error: --variants {args.variants!r}: each must be STEPS:LR:PARTS:STRENGTH", file=sys.stderr)
        return 2
    try:  # refuse a part the network lacks now, not after the untuned run
        parts = {name for name, _ in build_model(args.model).named_children()} | {"all"}
    except VsegError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    unknown = sorted({part for spec in specs for part in spec["parts"]} - parts)
    if unknown:
        print(f"error: {args.model} has no part {', '.join(unknown)} (it has: {', '.join(sorted(parts))})",
              file=sys.stderr)
        return 2
    variants = [({"steps": 0}, lambda model: model)]
    variants += [({**spec, "parts": "+".join(spec["parts"])},
                  lambda model, spec=spec: tuning_predictor(model, **spec)) for spec in specs]
    return run_probe(args, variants)


if __name__ == "__main__":
    sys.exit(main())
