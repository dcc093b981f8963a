"""Dense vs realized GFLOPs of `spvos` frames, from the decisions actually taken.

The project's rule (DESIGN.md, Measuring): dense work is counted by
``torch.utils.flop_counter.FlopCounterMode``; a gated convolution costs its dense FLOPs times
the active fraction of its output, a tile counting 0 (REUSE), 0.25 (COARSE) or 1 (DENSE).
Tiles cut by the map's edge weigh by the pixels they hold, so the shares below are shares of
each layer's output pixels. All counts are per frame (the decisions' batch is averaged).

- :class:`SparseCostModel` (one per frame size): the dense encode_key FLOPs, each gated conv's
  dense FLOPs, the gates' own FLOPs; ``frame_cost(decisions, dense)`` -> :class:`FrameCost`;
  ``expected_cost(probabilities)`` -> the differentiable expected fraction used in training.
- :func:`summarise_frame_costs`: a JSON-ready per-video summary (``vseg run --json``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from vseg.models.gates import CHOICE_COST, expected_tile_cost

if TYPE_CHECKING:
    from vseg.models.spvos import SpVOS

CHOICE_NAMES = ("reuse", "coarse", "dense")


@dataclass
class FrameCost:
    """One frame's cost. GFLOPs of the key encoder (encode_key): ``dense_gflops`` if every conv
    ran densely, ``realized_gflops`` for the decisions taken (ungated layers + gates + the gated
    convs' active fractions; equal to dense_gflops on an all-dense frame, which runs no gate).
    ``layers``: per gated conv, the share of its output pixels that were reuse / coarse / dense."""

    dense: bool
    dense_gflops: float
    realized_gflops: float
    layers: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.realized_gflops / self.dense_gflops


def tile_area_weights(out_h: int, out_w: int, tile: int) -> torch.Tensor:
    """float64 [th, tw]: each tile's share of the Ho x Wo output pixels (sums to 1)."""
    rows = torch.clamp(out_h - tile * torch.arange(-(-out_h // tile)), max=tile).double()
    cols = torch.clamp(out_w - tile * torch.arange(-(-out_w // tile)), max=tile).double()
    return torch.outer(rows, cols) / (out_h * out_w)


def _count(fn, *args) -> int:
    """FLOPs of fn(*args), counted by FlopCounterMode."""
    with FlopCounterMode(display=False) as counter:
        fn(*args)
    return counter.get_total_flops()


class SparseCostModel:
    """FLOP accounting of one spvos model at one (padded) frame size, counted once on a
    meta-device copy (no real arithmetic)."""

    def __init__(self, model: SpVOS, height: int, width: int) -> None:
        with torch.device("meta"):
            meta = type(model)(model.config).eval()
            frame = torch.rand(1, 3, height, width)
        with torch.no_grad():
            with FlopCounterMode(display=False) as counter:
                out = meta.encode_key(frame, dense=True)
            total = counter.get_total_flops()
            self.names = meta.gated_conv_names()
            self.layer_flops: list[float] = []
            gate_flops = 0
            for b, (stage, index) in enumerate(meta.gated_blocks()):
                block = getattr(meta.key_encoder, stage)[index]
                x, y1 = out.state[3 * b: 3 * b + 2]  # conv1's input, conv2's input
                for conv_bn, gate, inp in ((block.conv1, meta.gates[f"{stage}_{index}_conv1"], x),
                                           (block.conv2, meta.gates[f"{stage}_{index}_conv2"], y1)):
                    conv = conv_bn[0]
                    self.layer_flops.append(float(_count(F.conv2d, inp, conv.weight, None, conv.stride, conv.padding,
                                                         conv.dilation, conv.groups)))
                    gate_flops += _count(gate.logits, inp, inp, model.config.budget)
        tile = model.config.tile
        self.area_weights = [tile_area_weights(s[2], s[3], tile) for s in self._out_shapes(out)]
        self.dense_flops = float(total)
        self.ungated_flops = self.dense_flops - sum(self.layer_flops)
        self.gate_flops = float(gate_flops)

    @staticmethod
    def _out_shapes(out) -> list[torch.Size]:
        # conv1's output is state[3b + 1], conv2's is state[3b + 2]
        return [t.shape for b in range(len(out.state) // 3) for t in out.state[3 * b + 1: 3 * b + 3]]

    @property
    def gated_dense_flops(self) -> float:
        return sum(self.layer_flops)

    def choice_shares(self, decisions) -> list[torch.Tensor]:
        """Per gated conv, float64 [3]: share of its output pixels per choice (batch-averaged)."""
        shares = []
        for d, area in zip(decisions, self.area_weights):
            d = d.detach().to("cpu", torch.int64)[:, 0]  # [N, th, tw]
            per_choice = torch.stack([((d == c).double() * area).sum() for c in range(3)])
            shares.append(per_choice / d.shape[0])
        return shares

    def frame_cost(self, decisions, dense: bool) -> FrameCost:
        """FrameCost of one frame from its decisions (one int32 [N, 1, th, tw] per gated conv)."""
        if len(decisions) != len(self.layer_flops):
            raise ValueError(f"{len(decisions)} decision maps for {len(self.layer_flops)} gated convs")
        cost = torch.tensor(CHOICE_COST, dtype=torch.float64)
        shares = self.choice_shares(decisions)
        gated = sum(f * float(s @ cost) for f, s in zip(self.layer_flops, shares))
        realized = self.dense_flops if dense else self.ungated_flops + self.gate_flops + gated
        layers = {name: {c: float(v) for c, v in zip(CHOICE_NAMES, s)} for name, s in zip(self.names, shares)}
        return FrameCost(dense, self.dense_flops / 1e9, realized / 1e9, layers)

    def expected_cost(self, probabilities) -> torch.Tensor:
        """Differentiable expected fraction of the gated convs' dense FLOPs, [N].

        probabilities: per gated conv, softmax choice probabilities [N, 3, th, tw]. Each layer's
        area-weighted expected tile cost, weighted by the layer's dense FLOPs.
        """
        total = sum(self.layer_flops)
        parts = []
        for p, area, flops in zip(probabilities, self.area_weights, self.layer_flops):
            per_tile = expected_tile_cost(p)  # [N, th, tw]
            parts.append((flops / total) * (per_tile * area.to(per_tile)).sum((1, 2)))
        return torch.stack(parts).sum(0)

    def realized_fraction(self, decisions) -> float:
        """Fraction of the gated convs' dense FLOPs the decisions spend (0..1)."""
        cost = torch.tensor(CHOICE_COST, dtype=torch.float64)
        spent = sum(f * float(s @ cost) for f, s in zip(self.layer_flops, self.choice_shares(decisions)))
        return spent / sum(self.layer_flops)


@lru_cache(maxsize=8)
@torch.inference_mode(False)  # cached: normal tensors, usable in training too
def _cached_cost_model(model_type: type, config, height: int, width: int) -> SparseCostModel:
    with torch.device("meta"):
        architecture = model_type(config)
    return SparseCostModel(architecture, height, width)


def cost_model_for(model: SpVOS, height: int, width: int) -> SparseCostModel:
    """A SparseCostModel for (the model's architecture, frame size), cached: training asks for
    one every step at the same crop size."""
    return _cached_cost_model(type(model), model.config, height, width)


def summarise_frame_costs(costs: list[FrameCost]) -> dict:
    """JSON-ready summary of a video's FrameCosts: frame counts, mean dense and realized GFLOPs
    per frame, their ratio, and per gated conv the mean reuse/coarse/dense shares over the
    gated (non-dense) frames."""
    if not costs:
        return {"frames": 0}
    n = len(costs)
    dense_mean = sum(c.dense_gflops for c in costs) / n
    realized_mean = sum(c.realized_gflops for c in costs) / n
    gated = [c for c in costs if not c.dense]
    layers = {}
    for name in (gated[0].layers if gated else {}):
        layers[name] = {k: round(sum(c.layers[name][k] for c in gated) / len(gated), 4) for k in CHOICE_NAMES}
    return {
        "frames": n,
        "dense_frames": n - len(gated),
        "dense_gflops_per_frame": round(dense_mean, 4),
        "realized_gflops_per_frame": round(realized_mean, 4),
        "realized_over_dense": round(realized_mean / dense_mean, 4),
        "gated_layer_shares": layers,
    }


__all__ = [
    "CHOICE_NAMES",
    "FrameCost",
    "SparseCostModel",
    "cost_model_for",
    "summarise_frame_costs",
    "tile_area_weights",
]
