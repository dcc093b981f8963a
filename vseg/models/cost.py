"""Dense vs realized GFLOPs of `spvos` frames, from the decisions actually taken.

The project's rule (DESIGN.md, Measuring): dense work is counted by
``torch.utils.flop_counter.FlopCounterMode``; a gated convolution costs its dense FLOPs times
the active fraction of its output, a tile counting 0 (REUSE), 0.25 (COARSE) or 1 (DENSE).
Tiles cut by the map's edge weigh by the pixels they hold, so the shares below are shares of
each layer's output pixels. All counts are per frame (the decisions' batch is averaged).

- :class:`SparseCostModel` (one per frame size and object count): the dense FLOPs of
  encode_key and of the decoder, and per engine the gated convs (:class:`GatedLayers`: each
  conv's dense FLOPs, the gates' own FLOPs); ``frame_cost(key_decisions, key_dense,
  decoder_decisions, decoder_dense)`` -> :class:`FrameCost`; ``expected_cost(...)`` -> the
  differentiable expected fraction used in training, each gated conv weighted by its FLOPs.
- :func:`summarise_frame_costs`: a JSON-ready per-video summary (``vseg run --json``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from vseg.models.gates import CHOICE_COST, expected_tile_cost
from vseg.models.spvos_decoder import decoder_block

if TYPE_CHECKING:
    from vseg.models.spvos import SpVOS

CHOICE_NAMES = ("reuse", "coarse", "dense")


@dataclass
class FrameCost:
    """One frame's cost in the engines spvos gates: encode_key and, when the frame decoded,
    the decoder (``decode``: the FLOPs after the memory read, which is not gated).
    ``dense_gflops`` if every conv ran densely, ``realized_gflops`` for the decisions taken
    (ungated layers + gates + the gated convs' active fractions). ``dense``: nothing ran gated
    (realized = dense: all-dense frames run no gate). ``layers``: per conv whose gate ran this
    frame, the share of its output pixels that were reuse / coarse / dense."""

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


@dataclass(frozen=True)
class GatedLayers:
    """The gated convs of one engine: ``names``, each conv's dense FLOPs per frame
    (``flops``, all objects of the frame for decoder convs), each output's tile
    ``area_weights`` [th, tw], and the gates' own FLOPs per frame."""

    names: tuple[str, ...]
    flops: tuple[float, ...]
    area_weights: tuple[torch.Tensor, ...]
    gate_flops: float

    @property
    def dense_flops(self) -> float:
        return float(sum(self.flops))

    def shares(self, decisions) -> list[torch.Tensor]:
        """Per conv, float64 [3]: share of its output pixels per choice (averaged over the
        decisions' batch: frames and objects)."""
        if len(decisions) != len(self.names):
            raise ValueError(f"{len(decisions)} decision maps for {len(self.names)} gated convs")
        shares = []
        for d, area in zip(decisions, self.area_weights):
            d = d.detach().to("cpu", torch.int64)[:, 0]  # [N, th, tw]
            per_choice = torch.stack([((d == c).double() * area).sum() for c in range(3)])
            shares.append(per_choice / d.shape[0])
        return shares

    def spent_flops(self, decisions) -> float:
        """Dense FLOPs times each conv's active fraction under ``decisions``."""
        cost = torch.tensor(CHOICE_COST, dtype=torch.float64)
        return sum(f * float(s @ cost) for f, s in zip(self.flops, self.shares(decisions)))

    def expected_flops(self, probabilities, batch: int) -> torch.Tensor:
        """Differentiable expected FLOPs [batch] from choice probabilities [batch * K, 3, th, tw]
        per conv (K objects folded into the batch, or K = 1)."""
        if len(probabilities) != len(self.names):
            raise ValueError(f"{len(probabilities)} probability maps for {len(self.names)} gated convs")
        parts = []
        for p, area, flops in zip(probabilities, self.area_weights, self.flops):
            per_row = (expected_tile_cost(p) * area.to(p)).sum((1, 2))  # [batch * K]
            parts.append(flops * per_row.view(batch, -1).mean(1))
        return torch.stack(parts).sum(0)


def _layers(names, blocks: dict, gates_by_name: nn.ModuleDict, state, budget: float, tile: int) -> GatedLayers:
    """GatedLayers of gated blocks: ``blocks`` {gate prefix: (conv1, conv2)} in the order of
    ``state``, whose three tensors per block are (conv1 input, conv1 output, conv2 output) of a
    (meta) dense run; the gates are ``gates_by_name["<prefix>_conv1"]`` and ``..._conv2``."""
    convs, gates, inputs, outputs = [], [], [], []
    for b, (prefix, pair) in enumerate(blocks.items()):
        x, y1, y2 = state[3 * b: 3 * b + 3]
        convs += list(pair)
        gates += [gates_by_name[f"{prefix}_conv1"], gates_by_name[f"{prefix}_conv2"]]
        inputs += [x, y1]
        outputs += [y1, y2]
    flops = [float(_count(F.conv2d, x, c.weight, None, c.stride, c.padding, c.dilation, c.groups))
             for c, x in zip(convs, inputs)]
    gate_flops = float(sum(_count(g.logits, x, x, budget) for g, x in zip(gates, inputs)))
    areas = [tile_area_weights(y.shape[2], y.shape[3], tile) for y in outputs]
    return GatedLayers(tuple(names), tuple(flops), tuple(areas), gate_flops)


class SparseCostModel:
    """FLOP accounting of one spvos model at one (padded) frame size and object count, counted
    once on a meta-device copy (no real arithmetic).

    ``key`` / ``decoder``: the gated convs of encode_key and of the decoder (at ``objects``
    objects); ``key_dense_flops``: all of encode_key; ``decode_dense_flops``: the decoder
    after the memory read (``model.decode``), all objects.
    """

    def __init__(self, model: SpVOS, height: int, width: int, objects: int = 1) -> None:
        with torch.device("meta"):
            meta = type(model)(model.config).eval()
            frame = torch.rand(1, 3, height, width)
        budget, tile = model.config.budget, model.config.tile
        self.objects = objects
        with torch.no_grad():
            with FlopCounterMode(display=False) as counter:
                out = meta.encode_key(frame, dense=True)
            self.key_dense_flops = float(counter.get_total_flops())
            key_blocks = {f"{stage}_{i}": getattr(meta.key_encoder, stage)[i] for stage, i in meta.gated_blocks()}
            self.key = _layers(meta.gated_conv_names(),  # conv-BN blocks: the conv is [0]
                               {p: (b.conv1[0], b.conv2[0]) for p, b in key_blocks.items()}, meta.gates,
                               out.state, budget, tile)

            f = out.features
            with torch.device("meta"):
                readout = torch.rand(1, objects, meta.value_dim, *f.feat16.shape[2:])
            self.decode_dense_flops = float(_count(meta.decode, readout, f.feat16, f.skip8, f.skip4))
            state = meta.decode_sparse(readout, f.feat16, f.skip8, f.skip4, dense=True).state
            decoder_blocks = {name: decoder_block(meta.decoder, name) for name in meta.decoder_gated_blocks()}
            self.decoder = _layers(meta.decoder_conv_names(), {p: (b.conv1, b.conv2) for p, b in decoder_blocks.items()},
                                   meta.decoder_gates, state, budget, tile)

    def gated_share(self) -> float:
        """Share of encode_key + decode's dense FLOPs that sits in gated convs."""
        return (self.key.dense_flops + self.decoder.dense_flops) / (self.key_dense_flops + self.decode_dense_flops)

    def frame_cost(self, key_decisions, key_dense: bool, decoder_decisions=None,
                   decoder_dense: bool = True) -> FrameCost:
        """FrameCost of one frame. key_decisions: one int32 [N, 1, th, tw] per gated key conv;
        decoder_decisions: one [N*K, 1, th, tw] per gated decoder conv, None when the frame
        did not decode (the first frame); *_dense: that engine ran all-dense (no gate)."""
        dense = self.key_dense_flops
        realized = dense if key_dense else self._realized(self.key, self.key_dense_flops, key_decisions)
        layers = {} if key_dense else self._named_shares(self.key, key_decisions)
        if decoder_decisions is not None:
            dense += self.decode_dense_flops
            if decoder_dense:
                realized += self.decode_dense_flops
            else:
                realized += self._realized(self.decoder, self.decode_dense_flops, decoder_decisions)
                layers.update(self._named_shares(self.decoder, decoder_decisions))
        all_dense = key_dense and (decoder_decisions is None or decoder_dense)
        return FrameCost(all_dense, dense / 1e9, realized / 1e9, layers)

    @staticmethod
    def _realized(layers: GatedLayers, engine_dense: float, decisions) -> float:
        return engine_dense - layers.dense_flops + layers.gate_flops + layers.spent_flops(decisions)

    @staticmethod
    def _named_shares(layers: GatedLayers, decisions) -> dict[str, dict[str, float]]:
        return {name: {c: float(v) for c, v in zip(CHOICE_NAMES, s)}
                for name, s in zip(layers.names, layers.shares(decisions))}

    def expected_cost(self, key_probabilities, decoder_probabilities=()) -> torch.Tensor:
        """Differentiable expected fraction [B] of the dense FLOPs of the gated convs whose gates
        ran: the key encoder's (probabilities [B, 3, th, tw] per conv) and, if given, the
        decoder's ([B*K, 3, th, tw] per conv). Each conv weighs by its dense FLOPs."""
        batch = key_probabilities[0].shape[0]
        expected = self.key.expected_flops(key_probabilities, batch)
        total = self.key.dense_flops
        if len(decoder_probabilities):
            expected = expected + self.decoder.expected_flops(decoder_probabilities, batch)
            total += self.decoder.dense_flops
        return expected / total

    def realized_fraction(self, key_decisions, decoder_decisions=()) -> float:
        """Fraction of the gated convs' dense FLOPs the decisions spend (0..1), over the key
        encoder's gated convs and, if given, the decoder's."""
        spent, total = self.key.spent_flops(key_decisions), self.key.dense_flops
        if len(decoder_decisions):
            spent += self.decoder.spent_flops(decoder_decisions)
            total += self.decoder.dense_flops
        return spent / total


@lru_cache(maxsize=8)
@torch.inference_mode(False)  # cached: normal tensors, usable in training too
def _cached_cost_model(model_type: type, config, height: int, width: int, objects: int) -> SparseCostModel:
    with torch.device("meta"):
        architecture = model_type(config)
    return SparseCostModel(architecture, height, width, objects)


def cost_model_for(model: SpVOS, height: int, width: int, objects: int = 1) -> SparseCostModel:
    """A SparseCostModel for (the model's architecture, frame size, objects), cached: training
    asks for one every step at the same crop size."""
    return _cached_cost_model(type(model), model.config, height, width, objects)


def summarise_frame_costs(costs: list[FrameCost]) -> dict:
    """JSON-ready summary of a video's FrameCosts: frame counts, mean dense and realized GFLOPs
    per frame (encode_key + decode), their ratio, and per gated conv the mean reuse/coarse/dense
    shares over the frames where its gate ran."""
    if not costs:
        return {"frames": 0}
    n = len(costs)
    dense_mean = sum(c.dense_gflops for c in costs) / n
    realized_mean = sum(c.realized_gflops for c in costs) / n
    gated = [c for c in costs if not c.dense]
    layers = {}
    for name in dict.fromkeys(name for c in costs for name in c.layers):
        ran = [c.layers[name] for c in costs if name in c.layers]
        layers[name] = {k: round(sum(s[k] for s in ran) / len(ran), 4) for k in CHOICE_NAMES}
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
    "GatedLayers",
    "SparseCostModel",
    "cost_model_for",
    "summarise_frame_costs",
    "tile_area_weights",
]
