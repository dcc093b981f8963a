"""The gated decoder of `spvos`: per-object tile decisions in stm's MaskDecoder.

FlopCounterMode at 480x864 puts ~80 % of an stm frame in the decoder's per-object residual
blocks (``decoder.up4.block`` ~61 GFLOPs per object, ``decoder.up8.block`` ~15), against
~24 GFLOPs for the whole key encoder, so spvos gates them too. Each gated block is a
pre-activation :class:`~vseg.models.backbones.ResBlock` ``shortcut(x) + conv2(relu(conv1(relu(x))))``
whose two 3x3 convs become GatedSparseConv2d:

- the pre-activation relu(x) and the residual add stay outside the op (dense: they are cheap);
- conv1 runs with ``activation="relu"``, so its output is conv2's input, exactly as in stm;
- objects are folded into the batch ([B*K, C, h, w]), so every object has its own gate
  decisions and its own previous input and outputs.

State is explicit, as in the key encoder: per gated block three tensors from the previous
decoded frame, conv1's reference input (relu(x) where its tiles were computed, the older
reference where they were REUSEd), conv1's output and conv2's output, all
[B*K, C, h, w], in the order of :meth:`GatedDecoding.decoder_state_names`. The weights stay
the modules stm has (``decoder.*``), the gates live in ``decoder_gates``.

Which blocks are gated: ``SpVOSConfig.gated_decoder``, a subset of :data:`DECODER_BLOCKS` in
run order (``()`` keeps the key-encoder-only spvos). ``compress`` (stride 16) is ~6 GFLOPs per
object at 480x864; it is not gated by default.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from vseg.models.backbones import ResBlock
from vseg.models.gates import TripleGate, check_budget, reference_input, run_gated_conv
from vseg.models.stm import (
    MaskDecoder,
    UpsampleBlock,
    broadcast_objects,
    soft_aggregate,
)
from vseg.ops.gated_sparse_conv import DENSE

DECODER_BLOCKS = ("compress", "up8", "up4")
STATE_PARTS = ("input", "conv1", "conv2")


def decoder_block(decoder: MaskDecoder, name: str) -> ResBlock:
    """The ResBlock of decoder stage ``name`` (one of DECODER_BLOCKS)."""
    return decoder.compress if name == "compress" else getattr(decoder, name).block


def decoder_block_path(name: str) -> str:
    """Module path of that ResBlock in the model: "decoder.compress", "decoder.up8.block"."""
    return "decoder.compress" if name == "compress" else f"decoder.{name}.block"


def make_decoder_gates(decoder: MaskDecoder, blocks: tuple[str, ...], tile: int, budgets: tuple[float, float],
                       hidden: int) -> nn.ModuleDict:
    """One TripleGate per gated conv: keys "<block>_conv1", "<block>_conv2"."""
    gates = {}
    for name in blocks:
        block = decoder_block(decoder, name)
        for part in ("conv1", "conv2"):
            conv = getattr(block, part)
            if not isinstance(conv, nn.Conv2d):
                raise TypeError(f"spvos gates plain 3x3 decoder convs, {decoder_block_path(name)}.{part} is separable")
            gates[f"{name}_{part}"] = TripleGate(conv.in_channels, tile, conv.stride[0], budgets, hidden)
    return nn.ModuleDict(gates)


def _upsample_merge(up: UpsampleBlock, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """UpsampleBlock.forward before its ResBlock: x [B*K, C, h, w] -> [B*K, C, 2h, 2w]."""
    b = skip.shape[0]
    upsampled = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
    n, c, h, w = upsampled.shape
    return (upsampled.reshape(b, n // b, c, h, w) + up.skip_conv(skip).unsqueeze(1)).reshape(n, c, h, w)


class SparseDecodeOutput(NamedTuple):
    """The gated decode's result: logits [B, K+1, H, W] (soft-aggregated, background first);
    state: the new decoder state (see the module docstring); decisions: per gated conv, int32
    [B*K, 1, th, tw]."""

    logits: torch.Tensor
    state: tuple[torch.Tensor, ...]
    decisions: tuple[torch.Tensor, ...]


class GatedDecoding:
    """SpVOS's decoder-side methods (mixed into :class:`vseg.models.spvos.SpVOS`, which sets
    ``decoder``, ``decoder_gates`` and ``config``)."""

    decoder: MaskDecoder
    decoder_gates: nn.ModuleDict

    def decoder_gated_blocks(self) -> tuple[str, ...]:
        """Gated decoder blocks, in the order they run."""
        return tuple(b for b in DECODER_BLOCKS if b in self.config.gated_decoder)

    def decoder_conv_names(self) -> list[str]:
        """Names of the decoder's gated convs, in the order of the decisions: "decoder.up8.block.conv1", ..."""
        return [f"{decoder_block_path(b)}.{c}" for b in self.decoder_gated_blocks() for c in ("conv1", "conv2")]

    def decoder_state_names(self) -> list[str]:
        """Names of the decoder state tensors, in order: "decoder.up8.block.input|conv1|conv2", ..."""
        return [f"{decoder_block_path(b)}.{p}" for b in self.decoder_gated_blocks() for p in STATE_PARTS]

    def segment_sparse(self, query_key: torch.Tensor, feat16: torch.Tensor, skip8: torch.Tensor,
                       skip4: torch.Tensor, mem_keys: torch.Tensor, mem_values: torch.Tensor,
                       mem_valid: torch.Tensor, object_valid: torch.Tensor | None = None,
                       decoder_state=None, budget=None, dense: bool = False,
                       force_dense: torch.Tensor | None = None) -> SparseDecodeOutput:
        """Memory read (stm's) then :meth:`decode_sparse`; shapes as ``STM.segment``."""
        readout = self.read_memory(query_key, mem_keys, mem_values, mem_valid)
        return self.decode_sparse(readout, feat16, skip8, skip4, object_valid, decoder_state, budget, dense,
                                  force_dense)

    def decode_sparse(self, readout: torch.Tensor, feat16: torch.Tensor, skip8: torch.Tensor, skip4: torch.Tensor,
                      object_valid: torch.Tensor | None = None, decoder_state=None, budget=None,
                      dense: bool = False, force_dense: torch.Tensor | None = None) -> SparseDecodeOutput:
        """Decode with the gated decoder blocks: readout [B, K, Cv, h, w] + frame features ->
        SparseDecodeOutput.

        decoder_state: the previous decoded frame's state (None: there is none, run dense);
        budget: float or [B] tensor (default config.budget); dense: stm's decode exactly, with
        all-DENSE decisions and fresh state; force_dense: a bool tensor (exported graphs) that
        makes every decision DENSE where True (the convs still run as gated ops).
        """
        out, _ = self.decode_with_gates(readout, feat16, skip8, skip4, object_valid, decoder_state, budget, dense,
                                        force_dense)
        return out

    def decode_with_gates(self, readout, feat16, skip8, skip4, object_valid=None, decoder_state=None, budget=None,
                          dense: bool = False, force_dense: torch.Tensor | None = None, tau: float = 1.0,
                          generator: torch.Generator | None = None,
                          ) -> tuple[SparseDecodeOutput, tuple[torch.Tensor, ...]]:
        """:meth:`decode_sparse` plus each decoder gate's choice probabilities [B*K, 3, th, tw]
        (empty on dense frames). Training mode: Gumbel straight-through gates, masked-dense convs."""
        dense = dense or decoder_state is None
        blocks = self.decoder_gated_blocks()
        if budget is None:
            budget = self.config.budget
        if not dense and not isinstance(budget, torch.Tensor):
            check_budget(budget, self.config.budget_low, self.config.budget_high)
        b, k, cv, h, w = readout.shape
        if isinstance(budget, torch.Tensor) and budget.numel() > 1:  # per frame -> per object row
            budget = budget.reshape(-1).repeat_interleave(k)
        previous = None if dense else list(decoder_state)
        if previous is not None and len(previous) != len(STATE_PARTS) * len(blocks):
            raise ValueError(f"decoder_state has {len(previous)} tensors, spvos expects {len(STATE_PARTS) * len(blocks)}")
        dec = self.decoder
        x = torch.cat([readout.reshape(b * k, cv, h, w), broadcast_objects(feat16, k)], dim=1)
        state, decisions, probabilities = [], [], []
        for name, skip in (("compress", None), ("up8", skip8), ("up4", skip4)):
            if skip is not None:
                x = _upsample_merge(getattr(dec, name), x, skip)
            block = decoder_block(dec, name)
            if name not in blocks:
                x = block(x)
                continue
            if dense:
                x, parts = self._dense_block(block, x)
                decisions += [self._all_dense_decisions(y) for y in parts[1:]]
            else:
                prev = previous[len(state):len(state) + len(STATE_PARTS)]
                x, parts, d, p = self._gated_block(name, block, x, prev, budget, tau, generator, force_dense)
                decisions += d
                probabilities += p
            state += parts
        logits = F.interpolate(dec.predict(F.relu(x)), scale_factor=4.0, mode="bilinear", align_corners=False)
        logits = soft_aggregate(logits.reshape(b, k, logits.shape[-2], logits.shape[-1]), object_valid)
        return SparseDecodeOutput(logits, tuple(state), tuple(decisions)), tuple(probabilities)

    @staticmethod
    def _dense_block(block: ResBlock, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """stm's ResBlock, op for op, also returning (relu(x), conv1 output, conv2 output)."""
        x_in = F.relu(x)
        y1 = F.relu(block.conv1(x_in))
        y2 = block.conv2(y1)
        return block.shortcut(x) + y2, [x_in, y1, y2]

    def _gated_block(self, name: str, block: ResBlock, x: torch.Tensor, prev, budget, tau, generator,
                     force_dense) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """The ResBlock with both 3x3 convs gated -> (output, state parts, decisions, probabilities)."""
        x_prev, y1_prev, y2_prev = prev
        # channels-last: the tile gathers read such maps in place (the op returns them so too)
        x_in = F.relu(x).contiguous(memory_format=torch.channels_last)
        options = {"tile": self.config.tile, "coarse_mode": self.config.coarse_mode, "budget": budget, "tau": tau,
                   "generator": generator, "force_dense": force_dense}
        y1, d1, p1 = run_gated_conv(block.conv1, block.conv1.weight, block.conv1.bias, self.decoder_gates[f"{name}_conv1"],
                                    x_in, x_prev, y1_prev, activation="relu", **options)
        y2, d2, p2 = run_gated_conv(block.conv2, block.conv2.weight, block.conv2.bias, self.decoder_gates[f"{name}_conv2"],
                                    y1, y1_prev, y2_prev, activation="none", **options)
        x_ref = reference_input(x_in, x_prev, d1, self.config.tile * block.conv1.stride[0])
        return block.shortcut(x) + y2, [x_ref, y1, y2], [d1, d2], [p1, p2]

    def _all_dense_decisions(self, y: torch.Tensor) -> torch.Tensor:
        """All-DENSE decisions int32 [N, 1, th, tw] for a conv output y [N, C, Ho, Wo]."""
        tile = self.config.tile
        grid = (-(-y.shape[2] // tile), -(-y.shape[3] // tile))
        return torch.full((y.shape[0], 1, *grid), DENSE, dtype=torch.int32, device=y.device)


__all__ = [
    "DECODER_BLOCKS",
    "GatedDecoding",
    "SparseDecodeOutput",
    "decoder_block",
    "decoder_block_path",
    "make_decoder_gates",
]
