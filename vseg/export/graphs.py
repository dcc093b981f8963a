"""One small nn.Module per engine: the exact computation an exported graph holds.

Each wrapper takes its inputs positionally in ``input_names`` order and returns a tuple in
``output_names`` order, so the runtime can drive the torch wrappers (the ``torch`` backend)
and the exported ONNX files (the ``ort`` backend) through the same names. Shapes are static:
batch 1, H and W multiples of 16 (h = H/16, w = W/16), K objects, T memory slots.

- ``encode_key``: frame [1, 3, H, W] float32 in [0, 1] -> key [1, Ck, h, w], feat16
  [1, C16, h, w], skip8 [1, C8, 2h, 2w], skip4 [1, C4, 4h, 4w].
  lite (STFF on) adds inputs prev_feat16 [1, C16, h, w], prev_fg [1, 1, H, W] (zeros on the
  first frame) and output next_feat16 [1, C16, h, w].
  spvos adds inputs dense bool [1], budget float32 [1] and one ``state_in.<name>`` per gate
  state tensor, outputs ``state_out.<name>`` and int32 ``decision.<conv>`` [1, 1, th, tw].
- ``encode_value``: frame, masks [1, K, H, W] object probabilities, feat16 -> values
  [1, K, Cv, h, w].
- ``decode``: key, feat16, skip8, skip4, mem_keys [1, Ck, T, h, w], mem_values
  [1, K, Cv, T, h, w], mem_valid bool [1, K, T] (the slots each object reads), object_valid
  bool [1, K] -> logits
  [1, K+1, H, W] (background first; invalid objects get no probability).
  spvos with a gated decoder adds, as encode_key does, inputs dense, budget and
  ``state_in.decoder.*`` (per object: [K, C, h', w']), outputs ``state_out.decoder.*`` and
  int32 ``decision.decoder.*`` [K, 1, th, tw]. Its graph is SpVOS.segment_sparse itself (the
  decoder has no BatchNorm to fold), so it reproduces the model bit for bit.

The wrappers hold no Python-side state: whatever carries over between frames is an input and
an output. The spvos key encoder is one graph for keyframes and sparse frames (``dense``
forces every decision to DENSE; on the first frame feed zeros as state), with every BatchNorm
folded into its conv once, here, so the gated convs see plain (weight, bias) constants. It
reproduces ``SpVOS.encode_key`` bit for bit on sparse frames and up to the folding's float
rounding (~1e-6) on dense ones, where SpVOS runs the unfolded convs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vseg.models.gates import reference_input
from vseg.models.spvos import STAGES, SpVOS, fold_batchnorm
from vseg.models.stm import MemoryNetwork
from vseg.ops.gated_sparse_conv import DENSE, gated_sparse_conv2d

ENGINES = ("encode_key", "encode_value", "decode")
STATE_IN, STATE_OUT, DECISION = "state_in.", "state_out.", "decision."


def _is_sparse(model: MemoryNetwork) -> bool:
    return isinstance(model, SpVOS)


class _FoldedConv(nn.Module):
    """A (Conv2d, BatchNorm2d[, ReLU]) Sequential with its eval-mode BatchNorm folded in.

    Holds ``weight`` [Cout, Cin/groups, k, k] and ``bias`` [Cout] as buffers (a snapshot of
    the model's weights when the wrapper is built) plus the conv geometry.
    """

    def __init__(self, conv_bn: nn.Sequential) -> None:
        super().__init__()
        with torch.no_grad():
            weight, bias = fold_batchnorm(conv_bn)
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("bias", bias.detach().clone())
        conv = conv_bn[0]
        self.kernel, self.stride = conv.kernel_size[0], conv.stride[0]
        self.padding, self.dilation, self.groups = conv.padding[0], conv.dilation[0], conv.groups
        self.relu = len(conv_bn) > 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        return F.relu(y) if self.relu else y

    def gated(self, x: torch.Tensor, decision: torch.Tensor, y_prev: torch.Tensor, tile: int,
              coarse_mode: str) -> torch.Tensor:
        """The same conv as a GatedSparseConv2d: decision int32 [1, 1, th, tw], y_prev like y."""
        return gated_sparse_conv2d(x, decision, y_prev, self.weight, self.bias, kernel=self.kernel,
                                   stride=self.stride, padding=self.padding, dilation=self.dilation,
                                   groups=self.groups, tile=tile, coarse_mode=coarse_mode,
                                   activation="relu" if self.relu else "none")


class _SparseBlock(nn.Module):
    """One BasicBlock of the spvos key encoder with folded convs (and its two gates if gated)."""

    def __init__(self, block: nn.Module, gates: tuple[nn.Module, nn.Module] | None) -> None:
        super().__init__()
        self.conv1 = _FoldedConv(block.conv1)
        self.conv2 = _FoldedConv(block.conv2)
        self.shortcut = None if isinstance(block.shortcut, nn.Identity) else _FoldedConv(block.shortcut)
        self.gate1, self.gate2 = gates if gates is not None else (None, None)

    def residual(self, x: torch.Tensor, y2: torch.Tensor) -> torch.Tensor:
        return F.relu(y2 + (x if self.shortcut is None else self.shortcut(x)))


class EncodeKeyGraph(nn.Module):
    """The ``encode_key`` engine of a stm, lite or spvos model (see the module docstring).

    For spvos the folded (weight, bias) of every conv are computed here, once: build the
    wrapper after loading the weights.
    """

    def __init__(self, model: MemoryNetwork) -> None:
        super().__init__()
        self.model = model.eval()
        self.stff = bool(getattr(model, "uses_prev_frame", False))
        names_in, names_out = ["frame"], ["key", "feat16", "skip8", "skip4"]
        if self.stff:
            names_in += ["prev_feat16", "prev_fg"]
            names_out.append("next_feat16")
        self.sparse = _is_sparse(model)
        if self.sparse:
            self._build_sparse(model)
            names_in += ["dense", "budget", *(STATE_IN + n for n in model.gate_state_names())]
            names_out += [STATE_OUT + n for n in model.gate_state_names()]
            names_out += [DECISION + n for n in model.gated_conv_names()]
        self.input_names: tuple[str, ...] = tuple(names_in)
        self.output_names: tuple[str, ...] = tuple(names_out)

    def _build_sparse(self, model: SpVOS) -> None:
        enc = model.key_encoder
        self.stem_conv = _FoldedConv(enc.stem[0])
        self.stem_pool = enc.stem[1]
        self.tile, self.coarse_mode = model.config.tile, model.config.coarse_mode
        stages = []
        for stage in STAGES:
            blocks = []
            for index, block in enumerate(getattr(enc, stage)):
                gated = stage in model.config.gated_stages
                gates = (model.gates[f"{stage}_{index}_conv1"], model.gates[f"{stage}_{index}_conv2"]) if gated else None
                blocks.append(_SparseBlock(block, gates))
            stages.append(nn.ModuleList(blocks))
        self.stages = nn.ModuleList(stages)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.sparse:
            return self._forward_sparse(*inputs)
        if self.stff:
            frame, prev_feat16, prev_fg = inputs
            f = self.model.encode_key(frame, prev_feat16, prev_fg)
            return f.key, f.feat16, f.skip8, f.skip4, f.next_feat16
        (frame,) = inputs
        f = self.model.encode_key(frame)
        return f.key, f.feat16, f.skip8, f.skip4

    def _forward_sparse(self, frame: torch.Tensor, dense: torch.Tensor, budget: torch.Tensor,
                        *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """SpVOS.encode_key (eval mode) with the all-DENSE choice as a tensor input."""
        force_dense = dense.reshape(1, 1, 1, 1).to(torch.bool)
        # channels-last as SpVOS's gated path runs it (the tile gathers read it in place)
        x = self.model.normalize(frame).contiguous(memory_format=torch.channels_last)
        f = self.stem_pool(self.stem_conv(x))
        taps, new_state, decisions = [], [], []
        for blocks in self.stages:
            for block in blocks:
                if block.gate1 is None:
                    y2 = block.conv2(block.conv1(f))
                else:
                    x_prev, y1_prev, y2_prev = state[len(new_state):len(new_state) + 3]
                    d1 = self._decide(block.gate1, f, x_prev, budget, force_dense)
                    y1 = block.conv1.gated(f, d1, y1_prev, self.tile, self.coarse_mode)
                    d2 = self._decide(block.gate2, y1, y1_prev, budget, force_dense)
                    y2 = block.conv2.gated(y1, d2, y2_prev, self.tile, self.coarse_mode)
                    window = self.tile * block.conv1.stride
                    new_state += [reference_input(f, x_prev, d1, window), y1, y2]
                    decisions += [d1, d2]
                f = block.residual(f, y2)
            taps.append(f)
        f4, f8, f16 = taps
        return (self.model.key_proj(f16), f16, f8, f4, *new_state, *decisions)

    @staticmethod
    def _decide(gate: nn.Module, x: torch.Tensor, x_prev: torch.Tensor, budget: torch.Tensor,
                force_dense: torch.Tensor) -> torch.Tensor:
        """Argmax of the gate's logits, int32 [1, 1, th, tw]; DENSE everywhere when forced."""
        decision = gate.logits(x, x_prev, budget).argmax(1, keepdim=True).to(torch.int32)
        return torch.where(force_dense, torch.full_like(decision, DENSE), decision)


class EncodeValueGraph(nn.Module):
    """The ``encode_value`` engine: (frame, masks, feat16) -> (values,)."""

    input_names = ("frame", "masks", "feat16")
    output_names = ("values",)

    def __init__(self, model: MemoryNetwork) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, frame: torch.Tensor, masks: torch.Tensor, feat16: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.model.encode_value(frame, masks, feat16),)


class DecodeGraph(nn.Module):
    """The ``decode`` engine: memory read + decode + soft aggregation -> (logits,).

    spvos with gated decoder blocks adds inputs dense, budget and ``state_in.<name>`` per
    decoder state tensor, outputs ``state_out.<name>`` and ``decision.<conv>`` (int32
    [1*K, 1, th, tw]); ``dense`` forces every decision to DENSE (feed zeros as state then).
    """

    def __init__(self, model: MemoryNetwork) -> None:
        super().__init__()
        self.model = model.eval()
        self.sparse = _is_sparse(model) and bool(model.decoder_gated_blocks())
        names_in = ["key", "feat16", "skip8", "skip4", "mem_keys", "mem_values", "mem_valid", "object_valid"]
        names_out = ["logits"]
        if self.sparse:
            names_in += ["dense", "budget", *(STATE_IN + n for n in model.decoder_state_names())]
            names_out += [STATE_OUT + n for n in model.decoder_state_names()]
            names_out += [DECISION + n for n in model.decoder_conv_names()]
        self.input_names: tuple[str, ...] = tuple(names_in)
        self.output_names: tuple[str, ...] = tuple(names_out)

    def forward(self, key, feat16, skip8, skip4, mem_keys, mem_values, mem_valid, object_valid,
                *sparse_inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not self.sparse:
            return (self.model.segment(key, feat16, skip8, skip4, mem_keys, mem_values, mem_valid, object_valid),)
        dense, budget, *state = sparse_inputs
        out = self.model.segment_sparse(key, feat16, skip8, skip4, mem_keys, mem_values, mem_valid, object_valid,
                                        state, budget, force_dense=dense.reshape(1, 1, 1, 1).to(torch.bool))
        return (out.logits, *out.state, *out.decisions)


def engine_graphs(model: MemoryNetwork) -> dict[str, nn.Module]:
    """{"encode_key", "encode_value", "decode"} wrappers of one model (put in eval mode)."""
    return {"encode_key": EncodeKeyGraph(model), "encode_value": EncodeValueGraph(model), "decode": DecodeGraph(model)}


def check_export_size(height: int, width: int, stride: int = 16) -> None:
    """A ValueError unless H and W are positive multiples of the model's stride."""
    if height <= 0 or width <= 0 or height % stride or width % stride:
        raise ValueError(f"engine size {height}x{width} must be positive multiples of {stride}")


def gate_state_shapes(model: SpVOS, height: int, width: int) -> dict[str, tuple[int, ...]]:
    """{state name: shape} of the spvos key-encoder gate state at batch 1 and H x W (no arithmetic: meta)."""
    with torch.device("meta"):
        meta = type(model)(model.config).eval()
        out = meta.encode_key(torch.zeros(1, 3, height, width), dense=True)
    return {name: tuple(t.shape) for name, t in zip(model.gate_state_names(), out.state)}


def decoder_state_shapes(model: SpVOS, height: int, width: int, objects: int) -> dict[str, tuple[int, ...]]:
    """{state name: shape} of the spvos decoder state at batch 1, H x W and K objects (meta)."""
    with torch.device("meta"):
        meta = type(model)(model.config).eval()
        f = meta.encode_key(torch.zeros(1, 3, height, width), dense=True).features
        readout = torch.zeros(1, objects, meta.value_dim, *f.feat16.shape[2:])
        out = meta.decode_sparse(readout, f.feat16, f.skip8, f.skip4, dense=True)
    return {name: tuple(t.shape) for name, t in zip(model.decoder_state_names(), out.state)}


def example_inputs(model: MemoryNetwork, height: int, width: int, objects: int,
                   capacity: int = 8, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """Correctly shaped inputs of every engine: {engine: {input name: tensor}} in input order.

    Random frames/masks/features (seeded), every memory slot and object valid, spvos state
    (key encoder and decoder) all zeros with dense=True and the config's budget: what a first
    frame (a first decode) feeds. On the model's
    device; float32 except the bool/int flags noted in the module docstring.
    """
    check_export_size(height, width, model.stride)
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    h, w = height // model.stride, width // model.stride
    c4, c8, c16 = model.key_encoder.out_channels
    ck, cv = model.key_dim, model.value_dim

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen).to(device)

    frame = rand(1, 3, height, width)
    key_inputs = {"frame": frame}
    if getattr(model, "uses_prev_frame", False):
        key_inputs.update(prev_feat16=torch.zeros(1, c16, h, w, device=device),
                          prev_fg=torch.zeros(1, 1, height, width, device=device))
    if _is_sparse(model):
        key_inputs.update(dense=torch.ones(1, dtype=torch.bool, device=device),
                          budget=torch.full((1,), model.config.budget, dtype=torch.float32, device=device))
        for name, shape in gate_state_shapes(model, height, width).items():
            key_inputs[STATE_IN + name] = torch.zeros(shape, device=device)
    features = {"key": rand(1, ck, h, w), "feat16": rand(1, c16, h, w),
                "skip8": rand(1, c8, 2 * h, 2 * w), "skip4": rand(1, c4, 4 * h, 4 * w)}
    decode_inputs = {**features,
                     "mem_keys": rand(1, ck, capacity, h, w),
                     "mem_values": rand(1, objects, cv, capacity, h, w),
                     "mem_valid": torch.ones(1, objects, capacity, dtype=torch.bool, device=device),
                     "object_valid": torch.ones(1, objects, dtype=torch.bool, device=device)}
    if _is_sparse(model) and model.decoder_gated_blocks():
        decode_inputs.update(dense=torch.ones(1, dtype=torch.bool, device=device),
                             budget=torch.full((1,), model.config.budget, dtype=torch.float32, device=device))
        for name, shape in decoder_state_shapes(model, height, width, objects).items():
            decode_inputs[STATE_IN + name] = torch.zeros(shape, device=device)
    return {
        "encode_key": key_inputs,
        "encode_value": {"frame": frame, "masks": rand(1, objects, height, width), "feat16": features["feat16"]},
        "decode": decode_inputs,
    }


__all__ = [
    "DECISION",
    "ENGINES",
    "STATE_IN",
    "STATE_OUT",
    "DecodeGraph",
    "EncodeKeyGraph",
    "EncodeValueGraph",
    "check_export_size",
    "decoder_state_shapes",
    "engine_graphs",
    "example_inputs",
    "gate_state_shapes",
]
