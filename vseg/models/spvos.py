"""`spvos`: `stm` with triple-gated sparse convolutions in the key encoder and the decoder.

Every 3x3 convolution of the key encoder's gated stages becomes a GatedSparseConv2d with its
own :class:`~vseg.models.gates.TripleGate`. By default these are ``layer1`` (stride 4),
``layer2`` (stride 8) and ``layer3`` (stride 16) of :class:`~vseg.models.backbones.ResNetTrunk`:
FlopCounterMode at 480x864 puts 7.6, 6.7 and 6.7 of encode_key's 23.7 GFLOPs in their 3x3
convs (the rest: the 7x7 stem 2.0, 1x1 shortcuts 0.2, key projection 0.5). The decoder's
per-object residual blocks, most of a frame's work, are gated too
(:mod:`vseg.models.spvos_decoder`, ``gated_decoder``).

The convolutions and BatchNorms stay the modules `stm` has (same state-dict keys, so
:func:`spvos_from_stm` is a plain state-dict copy). The key encoder's BatchNorm is frozen
(running statistics, also in training mode), so folding it into the convolutions is exact up
to rounding: dense frames run exactly stm's modules; gated frames run channels-last with every
BatchNorm folded (the tile gathers read channels-last maps in place).

State is explicit: per gated BasicBlock, three tensors from the previous frame (the block's
reference input, its conv1 output and its conv2 output: conv1's (x_prev, y_prev) and conv2's
(x_prev, y_prev)), in block order. The reference input is the input each conv1 tile's output
was last computed from (:func:`~vseg.models.gates.reference_input`): a tile REUSEd for several
frames is judged by the change since it was computed, not only since the last frame. ``encode_key(frame, gate_state, budget, dense)`` returns
``(KeyFeatures, new_state, decisions)`` with fixed shapes, so an engine can carry the state;
``segment_sparse(..., decoder_state, budget, dense)`` does the same for the decoder.
encode_value, read_memory and the dense ``decode`` / ``segment`` are stm's.

Frame policy at inference (:class:`vseg.runtime.policies.SparsePolicy`): the first
frame, every memory write and every ``dense_every``-th frame run all-dense (fresh state,
no accumulated error); the others run gated at the chosen budget. Mixed sparse training:
:mod:`vseg.models.spvos_training`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from vseg.errors import VsegError
from vseg.models.gates import TripleGate, check_budget, reference_input, run_gated_conv
from vseg.models.spvos_decoder import (
    DECODER_BLOCKS,
    GatedDecoding,
    SparseDecodeOutput,
    make_decoder_gates,
)
from vseg.models.spvos_training import encode_clip_keys, spvos_training_step
from vseg.models.stm import STM, KeyFeatures, STMConfig
from vseg.ops import allowed_values

STAGES = ("layer1", "layer2", "layer3")


@dataclass(frozen=True)
class SpVOSConfig(STMConfig):
    """`stm`'s sizes plus the gating options.

    tile: output tile size of every gated conv (4, 8 or 16); coarse_mode: nearest | bilinear;
    gated_stages: which ResNet stages have their 3x3 convs gated; gated_decoder: which decoder
    blocks (of DECODER_BLOCKS; () for none) have theirs gated; gate_hidden: width of the
    gates' hidden 1x1 conv; budget_low / budget_high: the budget range trained for (fraction
    of the gated convs' dense FLOPs); budget: the default inference budget; dense_every: at
    most this many frames between two all-dense frames.
    """

    tile: int = 8
    coarse_mode: str = "nearest"
    gated_stages: tuple[str, ...] = ("layer1", "layer2", "layer3")
    gated_decoder: tuple[str, ...] = ("up8", "up4")
    gate_hidden: int = 16
    budget_low: float = 0.2
    budget_high: float = 0.8
    budget: float = 0.5
    dense_every: int = 10
    # What a weights file written before a field existed had: spvos files without
    # gated_decoder gate only the key encoder (vseg.models.registry.load_model applies this).
    LEGACY_DEFAULTS: ClassVar[dict] = {"gated_decoder": ()}

    def __post_init__(self) -> None:
        if self.tile not in allowed_values("GatedSparseConv2d", "tile"):
            raise VsegError(f"spvos tile must be one of {allowed_values('GatedSparseConv2d', 'tile')}, got {self.tile}")
        if self.coarse_mode not in allowed_values("GatedSparseConv2d", "coarse_mode"):
            raise VsegError(f"spvos coarse_mode must be nearest or bilinear, got {self.coarse_mode!r}")
        unknown = [s for s in self.gated_stages if s not in STAGES]
        if unknown or not self.gated_stages:
            raise VsegError(f"spvos gated_stages must be some of {STAGES}, got {self.gated_stages}")
        if any(b not in DECODER_BLOCKS for b in self.gated_decoder):
            raise VsegError(f"spvos gated_decoder must be some of {DECODER_BLOCKS}, got {self.gated_decoder}")
        if not 0.0 <= self.budget_low <= self.budget <= self.budget_high <= 1.0:
            raise VsegError(f"spvos budgets need 0 <= budget_low <= budget <= budget_high <= 1, got "
                            f"{self.budget_low}, {self.budget}, {self.budget_high}")
        if self.dense_every < 1:
            raise VsegError(f"spvos dense_every must be >= 1, got {self.dense_every}")


class SparseKeyOutput(NamedTuple):
    """``encode_key``'s result: (features, state, decisions).

    features: KeyFeatures; state: the new gate state (see the module docstring); decisions:
    per gated conv, int32 [N, 1, th, tw]. The KeyFeatures fields are readable directly too
    (``out.key``...), so code written for stm's encode_key (e.g. FLOP counting) reads it as is.
    """

    features: KeyFeatures
    state: tuple[torch.Tensor, ...]
    decisions: tuple[torch.Tensor, ...]

    @property
    def key(self) -> torch.Tensor:
        return self.features.key

    @property
    def feat16(self) -> torch.Tensor:
        return self.features.feat16

    @property
    def skip8(self) -> torch.Tensor:
        return self.features.skip8

    @property
    def skip4(self) -> torch.Tensor:
        return self.features.skip4

    @property
    def next_feat16(self) -> None:
        return None


def fold_batchnorm(conv_bn: nn.Sequential) -> tuple[torch.Tensor, torch.Tensor]:
    """(Conv2d, BatchNorm2d, ...) -> (weight, bias) of one conv computing BN(conv(x)) with the
    running statistics. Differentiable w.r.t. the conv weight and the BN affine parameters."""
    conv, bn = conv_bn[0], conv_bn[1]
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    return conv.weight * scale.view(-1, 1, 1, 1), bias


def folded_conv_bn(conv_bn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A conv_bn_act Sequential (Conv2d, BatchNorm2d[, ReLU]) run as one conv with the
    BatchNorm folded in; an Identity shortcut returns x."""
    if isinstance(conv_bn, nn.Identity):
        return x
    weight, bias = fold_batchnorm(conv_bn)
    conv = conv_bn[0]
    y = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    return F.relu(y) if len(conv_bn) > 2 else y


class SpVOS(GatedDecoding, STM):
    """stm with gated sparse convolutions in the key encoder and the decoder (see the module docstring)."""

    def __init__(self, config: SpVOSConfig | None = None) -> None:
        cfg = config or SpVOSConfig()
        super().__init__(cfg)
        budgets = (cfg.budget_low, cfg.budget_high)
        gates = {}
        for stage, index in self.gated_blocks():
            block = getattr(self.key_encoder, stage)[index]
            stride = block.conv1[0].stride[0]
            gates[f"{stage}_{index}_conv1"] = TripleGate(block.conv1[0].in_channels, cfg.tile, stride, budgets,
                                                         cfg.gate_hidden)
            gates[f"{stage}_{index}_conv2"] = TripleGate(block.conv2[0].in_channels, cfg.tile, 1, budgets,
                                                         cfg.gate_hidden)
        self.gates = nn.ModuleDict(gates)
        self.decoder_gates = make_decoder_gates(self.decoder, self.decoder_gated_blocks(), cfg.tile, budgets,
                                                cfg.gate_hidden)

    # -- layout -------------------------------------------------------------------------------

    def gated_blocks(self) -> list[tuple[str, int]]:
        """(stage, block index) of every gated BasicBlock, in the order they run."""
        return [(s, i) for s in STAGES if s in self.config.gated_stages for i in range(len(getattr(self.key_encoder, s)))]

    def gated_conv_names(self) -> list[str]:
        """Names of the gated convs, in the order of ``decisions``: "layer1.0.conv1", ..."""
        return [f"{s}.{i}.conv{c}" for s, i in self.gated_blocks() for c in (1, 2)]

    def gate_state_names(self) -> list[str]:
        """Names of the state tensors, in order: "<stage>.<block>.input|conv1|conv2"."""
        return [f"{s}.{i}.{part}" for s, i in self.gated_blocks() for part in ("input", "conv1", "conv2")]

    def gate_parameters(self) -> list[nn.Parameter]:
        """The parameters of every gate (key encoder and decoder), the part stm does not have."""
        return [*self.gates.parameters(), *self.decoder_gates.parameters()]

    def train(self, mode: bool = True) -> SpVOS:
        super().train(mode)
        for module in self.key_encoder.modules():  # frozen BatchNorm (see the module docstring)
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        return self

    # -- the key encoder ----------------------------------------------------------------------

    def encode_key(self, frame: torch.Tensor, gate_state: tuple[torch.Tensor, ...] | list | None = None,
                   budget: float | torch.Tensor | None = None, dense: bool = False) -> SparseKeyOutput:
        """frame [B, 3, H, W] RGB in [0, 1] -> (KeyFeatures, new_state, decisions).

        gate_state: the previous frame's state (None: no previous frame, the frame runs dense);
        budget: float or [B] tensor in [budget_low, budget_high] (default: config.budget);
        dense: run every gated conv densely (keyframes) and return fresh state.
        """
        out, _ = self.encode_key_with_gates(frame, gate_state, budget, dense)
        return out

    def encode_key_with_gates(self, frame: torch.Tensor, gate_state=None, budget=None, dense: bool = False,
                              tau: float = 1.0, generator: torch.Generator | None = None,
                              ) -> tuple[SparseKeyOutput, tuple[torch.Tensor, ...]]:
        """:meth:`encode_key` plus each gate's choice probabilities [B, 3, th, tw] (empty on dense
        frames), for the expected cost in training. In training mode the gates sample
        Gumbel-softmax straight-through at temperature ``tau`` and the convs run masked-dense;
        in eval mode the gates take the argmax and the convs run the tile-sparse custom op."""
        dense = dense or gate_state is None
        if budget is None:
            budget = self.config.budget
        if not dense and not isinstance(budget, torch.Tensor):
            check_budget(budget, self.config.budget_low, self.config.budget_high)
        previous = None
        if not dense:
            previous = list(gate_state)
            if len(previous) != 3 * len(self.gated_blocks()):
                raise ValueError(f"gate_state has {len(previous)} tensors, spvos expects {3 * len(self.gated_blocks())}")
        enc = self.key_encoder
        if dense:  # exactly stm's computation
            f = enc.stem(self.normalize(frame))
        else:
            # Gated frames run channels-last (the tile gathers read such maps in place, and on
            # CPUs the stem's max-pool is much faster so) with every BatchNorm folded.
            x = self.normalize(frame).contiguous(memory_format=torch.channels_last)
            f = enc.stem[1](folded_conv_bn(enc.stem[0], x))
        taps, state, decisions, probabilities = [], [], [], []
        for stage_name in STAGES:
            gated = stage_name in self.config.gated_stages
            for index, block in enumerate(getattr(enc, stage_name)):
                if dense:
                    y1 = block.conv1(f)
                    y2 = block.conv2(y1)
                    x_ref = f  # every tile computed from this input
                    if gated:
                        decisions += [self._all_dense_decisions(y1), self._all_dense_decisions(y2)]
                elif not gated:
                    y1 = folded_conv_bn(block.conv1, f)
                    y2 = folded_conv_bn(block.conv2, y1)
                else:
                    x_prev, y1_prev, y2_prev = previous[len(state):len(state) + 3]
                    prefix = f"{stage_name}_{index}"
                    y1, d1, p1 = self._gated_conv(block.conv1, self.gates[f"{prefix}_conv1"], f, x_prev, y1_prev,
                                                  "relu", budget, tau, generator)
                    y2, d2, p2 = self._gated_conv(block.conv2, self.gates[f"{prefix}_conv2"], y1, y1_prev, y2_prev,
                                                  "none", budget, tau, generator)
                    decisions += [d1, d2]
                    probabilities += [p1, p2]
                    x_ref = reference_input(f, x_prev, d1, self.config.tile * block.conv1[0].stride[0])
                if gated:
                    state += [x_ref, y1, y2]
                f = F.relu(y2 + (block.shortcut(f) if dense else folded_conv_bn(block.shortcut, f)))
            taps.append(f)
        f4, f8, f16 = taps
        features = KeyFeatures(self.key_proj(f16), f16, f8, f4)
        return SparseKeyOutput(features, tuple(state), tuple(decisions)), tuple(probabilities)

    def _gated_conv(self, conv_bn: nn.Sequential, gate: TripleGate, x: torch.Tensor, x_prev: torch.Tensor,
                    y_prev: torch.Tensor, activation: str, budget, tau: float, generator):
        """One GatedSparseConv2d (BatchNorm folded in) -> (y, decision, probabilities)."""
        weight, bias = fold_batchnorm(conv_bn)
        return run_gated_conv(conv_bn[0], weight, bias, gate, x, x_prev, y_prev, activation=activation,
                              tile=self.config.tile, coarse_mode=self.config.coarse_mode, budget=budget, tau=tau,
                              generator=generator)


def spvos_from_stm(stm_model: STM, **options) -> SpVOS:
    """A SpVOS holding all of ``stm_model``'s weights (fresh gates), on its device.

    options: SpVOSConfig gating fields (tile, budget_low, ...) and ``min_side``; the sizes
    come from the stm.
    """
    if type(stm_model) is not STM:
        raise VsegError(f"spvos starts from stm weights, got a {type(stm_model).__name__} model")
    config = SpVOSConfig(**{**dataclasses.asdict(stm_model.config), **options})
    device = next(stm_model.parameters()).device
    model = SpVOS(config).to(device)
    missing, unexpected = model.load_state_dict(stm_model.state_dict(), strict=False)
    not_gates = [k for k in missing if not k.startswith(("gates.", "decoder_gates."))]
    if unexpected or not_gates:
        raise RuntimeError(f"stm -> spvos weight copy left {not_gates} missing and {unexpected} unexpected")
    return model.train(stm_model.training)


__all__ = [
    "STAGES",
    "SpVOS",
    "SpVOSConfig",
    "SparseDecodeOutput",
    "SparseKeyOutput",
    "encode_clip_keys",
    "fold_batchnorm",
    "folded_conv_bn",
    "spvos_from_stm",
    "spvos_training_step",
]
