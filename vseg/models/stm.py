"""`stm`: the dense space-time memory network (the teacher and the baseline).

Stage methods map one-to-one onto the exported engines (static shapes, no data-dependent
Python control flow, no ``.item()``):

- ``encode_key(frame) -> KeyFeatures``                       -> engine ``encode_key``
- ``encode_value(frame, masks, feat16) -> values``           -> engine ``encode_value``
- ``segment(key, feat16, skip8, skip4, mem_*) -> logits``    -> engine ``decode``
  (= ``read_memory`` then ``decode``)

Frames are RGB float in [0, 1], [B, 3, H, W] with H, W multiples of 16 (the inference core pads
and crops); ImageNet normalisation happens inside. Objects are a tensor dimension K: the PyTorch
path takes any K by folding objects into the batch of the value encoder and the decoder.

Architecture (STCN with a ResNet-18 key encoder): key encoder ResNet-18 to stride 16 with skips
at 1/8 (128 ch) and 1/4 (64 ch), 3x3 key projection to 64; value encoder a one-block-per-stage
ResNet on frame + object mask + other objects' masks, fused with the key encoder's stride-16
feature into 256-d values; L2 top-k memory read; decoder upsampling with the skips to
per-object logits at 1/4, bilinear to full size; STM soft aggregation over objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from vseg.models.backbones import ImageNormalizer, ResBlock, ResNetTrunk, conv3x3
from vseg.models.memory_read import read_memory


class KeyFeatures(NamedTuple):
    """Output of ``encode_key`` for a batch of B frames of size H x W.

    key [B, Ck, H/16, W/16]; feat16 [B, C16, H/16, W/16] (input of the value encoder and the
    decoder); skip8 [B, C8, H/8, W/8]; skip4 [B, C4, H/4, W/4]. next_feat16 [B, C16, H/16, W/16]
    is the state a model with a previous-frame input (lite's STFF) wants back on the next frame,
    None for models without one.
    """

    key: torch.Tensor
    feat16: torch.Tensor
    skip8: torch.Tensor
    skip4: torch.Tensor
    next_feat16: torch.Tensor | None = None


def _autocast_on(tensor: torch.Tensor) -> bool:
    """Whether mixed-precision autocast is active for ``tensor``'s device (never for "meta",
    which the FLOP counter uses and autocast does not know)."""
    device = tensor.device.type
    return device in ("cpu", "cuda") and torch.is_autocast_enabled(device)


def soft_aggregate(object_logits: torch.Tensor, object_valid: torch.Tensor | None = None) -> torch.Tensor:
    """STM soft aggregation of independent per-object predictions.

    object_logits [B, K, H, W] (one sigmoid logit per object) -> logits [B, K+1, H, W] with the
    background first, such that ``softmax(logits, 1)`` is a distribution over bg + objects.
    Object probability p_k = sigmoid(logit_k), background = prod_k (1 - p_k); each of these is
    turned back into a logit log(p / (1 - p)). object_valid [B, K] (optional, bool or 0/1)
    switches off padding objects of a fixed-K engine: their probability becomes 0.
    """
    if _autocast_on(object_logits):
        # Mixed-precision training aggregates in float32: bfloat16's eps would clamp the
        # probabilities to [0.008, 0.992].
        object_logits = object_logits.float()
    probs = torch.sigmoid(object_logits)
    if object_valid is not None:
        probs = probs * object_valid.to(probs.dtype)[:, :, None, None]
    background = torch.prod(1 - probs, dim=1, keepdim=True)
    # Clamp to [eps, 1 - eps] of the dtype so the logits stay finite (also in float16 engines).
    eps = torch.finfo(probs.dtype).eps
    stacked = torch.cat([background, probs], dim=1).clamp(eps, 1 - eps)
    return torch.log(stacked) - torch.log1p(-stacked)


def per_object_inputs(frame: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Value-encoder input, one row per object.

    frame [B, 3, H, W], masks [B, K, H, W] in [0, 1] -> [B*K, 5, H, W]: the frame, the object's
    mask and the sum of the other objects' masks (so each object's value knows its rivals).
    """
    b, k, h, w = masks.shape
    others = masks.sum(1, keepdim=True) - masks
    frames = frame.unsqueeze(1).expand(b, k, 3, h, w)
    return torch.cat([frames, masks.unsqueeze(2), others.unsqueeze(2)], dim=2).reshape(b * k, 5, h, w)


def broadcast_objects(per_frame: torch.Tensor, num_objects: int) -> torch.Tensor:
    """[B, C, h, w] -> [B*K, C, h, w]: the same frame feature for each of K objects."""
    b, c, h, w = per_frame.shape
    return per_frame.unsqueeze(1).expand(b, num_objects, c, h, w).reshape(b * num_objects, c, h, w)


class ValueFusion(nn.Module):
    """Fuse the per-object value-trunk feature with the frame's key-encoder feature.

    feat16 [B, C16, h, w] and object_feat [B*K, Ct, h, w] -> values [B*K, Cv, h, w].
    """

    def __init__(self, feat_ch: int, trunk_ch: int, value_dim: int, separable: bool = False) -> None:
        super().__init__()
        self.block1 = ResBlock(feat_ch + trunk_ch, value_dim, separable)
        self.block2 = ResBlock(value_dim, value_dim, separable)

    def forward(self, feat16: torch.Tensor, object_feat: torch.Tensor) -> torch.Tensor:
        num_objects = object_feat.shape[0] // feat16.shape[0]
        x = torch.cat([broadcast_objects(feat16, num_objects), object_feat], dim=1)
        return self.block2(self.block1(x))


class UpsampleBlock(nn.Module):
    """x2 bilinear upsampling of per-object features plus a per-frame skip feature.

    x [B*K, in_ch, h, w], skip [B, skip_ch, 2h, 2w] -> [B*K, out_ch, 2h, 2w]. The skip conv runs
    once per frame and is broadcast over objects, not once per object.
    """

    def __init__(self, skip_ch: int, in_ch: int, out_ch: int, separable: bool = False) -> None:
        super().__init__()
        self.skip_conv = conv3x3(skip_ch, in_ch, separable)
        self.block = ResBlock(in_ch, out_ch, separable)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        b = skip.shape[0]
        up = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        n, c, h, w = up.shape
        merged = up.view(b, n // b, c, h, w) + self.skip_conv(skip).unsqueeze(1)
        return self.block(merged.view(n, c, h, w))


class MaskDecoder(nn.Module):
    """Readout + frame feature -> per-object logits at full resolution.

    readout [B, K, Cv, h, w], feat16 [B, C16, h, w], skip8 [B, C8, 2h, 2w], skip4 [B, C4, 4h, 4w]
    -> object_logits [B, K, 16h, 16w]. widths = channels at strides 16, 8, 4.
    """

    def __init__(self, value_dim: int, feat_ch: int, skip8_ch: int, skip4_ch: int,
                 widths: tuple[int, int, int], separable: bool = False) -> None:
        super().__init__()
        self.compress = ResBlock(value_dim + feat_ch, widths[0], separable)
        self.up8 = UpsampleBlock(skip8_ch, widths[0], widths[1], separable)
        self.up4 = UpsampleBlock(skip4_ch, widths[1], widths[2], separable)
        self.predict = nn.Conv2d(widths[2], 1, 3, padding=1)

    def forward(self, readout: torch.Tensor, feat16: torch.Tensor, skip8: torch.Tensor,
                skip4: torch.Tensor) -> torch.Tensor:
        b, k, cv, h, w = readout.shape
        x = torch.cat([readout.reshape(b * k, cv, h, w), broadcast_objects(feat16, k)], dim=1)
        x = self.up4(self.up8(self.compress(x), skip8), skip4)
        logits = F.interpolate(self.predict(F.relu(x)), scale_factor=4.0, mode="bilinear", align_corners=False)
        return logits.view(b, k, logits.shape[-2], logits.shape[-1])


class MemoryNetwork(nn.Module):
    """What `stm` and `lite` share: memory read, decoder, soft aggregation.

    Subclasses set ``normalize``, ``value_encoder`` (a trunk returning (f4, f8, f16) on 5-channel
    per-object input), ``value_fusion``, ``decoder``, ``top_k``, ``key_dim``, ``value_dim`` and
    define ``encode_key``.
    """

    stride = 16
    uses_prev_frame = False  # True when encode_key takes (prev_feat16, prev_fg)
    # Submodules used only in training (excluded from deployed parameter counts and engines).
    training_only: tuple[str, ...] = ()
    normalize: ImageNormalizer
    value_encoder: nn.Module
    value_fusion: ValueFusion
    decoder: MaskDecoder
    top_k: int
    key_dim: int
    value_dim: int

    def encode_value(self, frame: torch.Tensor, masks: torch.Tensor, feat16: torch.Tensor) -> torch.Tensor:
        """The ``encode_value`` engine: frame [B, 3, H, W] in [0, 1], masks [B, K, H, W] object
        probabilities, feat16 [B, C16, H/16, W/16] from encode_key -> values [B, K, Cv, H/16, W/16]."""
        b, k, h, w = masks.shape
        _, _, object_feat = self.value_encoder(per_object_inputs(self.normalize(frame), masks))
        values = self.value_fusion(feat16, object_feat)
        return values.view(b, k, values.shape[1], h // self.stride, w // self.stride)

    def read_memory(self, query_key: torch.Tensor, mem_keys: torch.Tensor, mem_values: torch.Tensor,
                    mem_valid: torch.Tensor) -> torch.Tensor:
        """query_key [B, Ck, h, w], mem_keys [B, Ck, T, h, w], mem_values [B, K, Cv, T, h, w],
        mem_valid [B, T] bool -> readout [B, K, Cv, h, w] (L2 affinity, top-k softmax)."""
        if _autocast_on(query_key):
            # Mixed-precision training: bfloat16's 8-bit mantissa cannot separate close affinities,
            # so the top-k would pick at random among them; the read is cheap in float32.
            with torch.autocast(query_key.device.type, enabled=False):
                return read_memory(query_key.float(), mem_keys.float(), mem_values.float(), mem_valid, self.top_k)
        return read_memory(query_key, mem_keys, mem_values, mem_valid, self.top_k)

    def decode(self, readout: torch.Tensor, feat16: torch.Tensor, skip8: torch.Tensor, skip4: torch.Tensor,
               object_valid: torch.Tensor | None = None) -> torch.Tensor:
        """readout [B, K, Cv, h, w] + frame features -> aggregated logits [B, K+1, 16h, 16w]
        (background first; softmax over dim 1 gives probabilities)."""
        return soft_aggregate(self.decoder(readout, feat16, skip8, skip4), object_valid)

    def segment(self, query_key: torch.Tensor, feat16: torch.Tensor, skip8: torch.Tensor, skip4: torch.Tensor,
                mem_keys: torch.Tensor, mem_values: torch.Tensor, mem_valid: torch.Tensor,
                object_valid: torch.Tensor | None = None) -> torch.Tensor:
        """The ``decode`` engine: memory read then decode -> logits [B, K+1, H, W]."""
        readout = self.read_memory(query_key, mem_keys, mem_values, mem_valid)
        return self.decode(readout, feat16, skip8, skip4, object_valid)


@dataclass(frozen=True)
class STMConfig:
    """Sizes of the `stm` model (defaults: ~12M parameters)."""

    key_dim: int = 64
    value_dim: int = 256
    top_k: int = 20
    key_widths: tuple[int, int, int] = (64, 128, 256)
    key_blocks: tuple[int, int, int] = (2, 2, 2)
    value_widths: tuple[int, int, int] = (64, 128, 256)
    value_blocks: tuple[int, int, int] = (1, 1, 1)
    decoder_widths: tuple[int, int, int] = (256, 256, 256)
    # Not the network's shape: the shorter frame side the weights work at (0: any). Frames below
    # it are scaled up by the inference core (vseg.runtime.framing).
    min_side: int = 0


class STM(MemoryNetwork):
    """Dense space-time memory network (see the module docstring)."""

    def __init__(self, config: STMConfig | None = None) -> None:
        super().__init__()
        cfg = config or STMConfig()
        self.config = cfg
        self.key_dim, self.value_dim, self.top_k = cfg.key_dim, cfg.value_dim, cfg.top_k
        self.normalize = ImageNormalizer()
        self.key_encoder = ResNetTrunk(3, cfg.key_widths, cfg.key_blocks)
        c4, c8, c16 = self.key_encoder.out_channels
        self.key_proj = nn.Conv2d(c16, cfg.key_dim, 3, padding=1)
        # Orthogonal init keeps the initial keys spread out, so the first affinities are informative.
        nn.init.orthogonal_(self.key_proj.weight)
        nn.init.zeros_(self.key_proj.bias)
        self.value_encoder = ResNetTrunk(5, cfg.value_widths, cfg.value_blocks)
        self.value_fusion = ValueFusion(c16, self.value_encoder.out_channels[2], cfg.value_dim)
        self.decoder = MaskDecoder(cfg.value_dim, c16, c8, c4, cfg.decoder_widths)

    def encode_key(self, frame: torch.Tensor) -> KeyFeatures:
        """frame [B, 3, H, W] RGB in [0, 1] -> KeyFeatures (key [B, 64, H/16, W/16], ...)."""
        f4, f8, f16 = self.key_encoder(self.normalize(frame))
        return KeyFeatures(self.key_proj(f16), f16, f8, f4)
