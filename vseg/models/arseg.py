"""AR-Seg: altering-resolution video semantic segmentation on compressed video.

Keyframes (I-frames, or every L frames) run a PSPNet-18-like network at full resolution and
cache its decoder feature. Other frames run the same architecture on a low-resolution copy of
the frame; CReFF warps the cached feature to the current frame with the codec's motion
vectors accumulated back to the keyframe (``vseg::mv_warp``) and fuses it with the upsampled
low-resolution feature by local attention. One 1x1 classifier, trained with the
full-resolution network and then frozen, reads both.

The low-resolution branch has its own weights, initialised from the full-resolution branch
(:meth:`ARSeg.init_lr_from_hr`) before phase 2 of training, as in the reference code
(THU-LYJ-Lab/AR-Seg trains a separate network for the low resolution, starting from the
high-resolution snapshot, against the frozen high-resolution network). A shared network would
halve the parameters, but then the LR phase would have to keep the keyframe path unchanged.

Shapes (frames are RGB floats in [0, 1]; H, W multiples of :data:`STRIDE`; h = H/8, w = W/8):
- :meth:`ARSeg.keyframe`: frame [N, 3, H, W] -> (logits [N, K, H, W], feature [N, C, h, w]);
- :meth:`ARSeg.nonkey`: frame_lr [N, 3, H', W'] (multiples of 8), cached feature [N, C, h, w],
  mv float32 [N, 2, H/4, W/4] (accumulated back to the keyframe, in frame pixels) -> logits
  [N, K, H, W].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from vseg.errors import VsegError
from vseg.models.backbones import ImageNormalizer
from vseg.ops.mv_warp import mv_warp

STRIDE = 8  # output stride of the dilated backbone: frames are padded to multiples of it
MV_BLOCK = 4  # the motion-vector grid of vseg.data.video (4x4-pixel cells)
LR_SCALE_RANGE = (0.3, 0.9)  # low-resolution scales the design allows


@dataclass(frozen=True)
class ARSegConfig:
    """Architecture of `arseg`. ``lr_scale``: the resolution the low-resolution branch is
    trained for (the runtime's default); ``feature_channels``: the decoder feature C that is
    cached, warped and fused.

    The defaults are ResNet-18's layout at half its widths, so that both training phases run
    on a CPU; ``stem_width=64, widths=(64, 128, 256, 512)`` is the paper's PSPNet-18 trunk.
    """

    num_classes: int = 11
    stem_width: int = 32
    widths: tuple[int, int, int, int] = (32, 64, 128, 256)
    blocks: tuple[int, int, int, int] = (2, 2, 2, 2)
    pyramid_bins: tuple[int, ...] = (1, 2, 3, 6)
    feature_channels: int = 64
    attention_kernel: int = 7
    dropout: float = 0.1
    lr_scale: float = 0.5

    def __post_init__(self) -> None:
        check_lr_scale(self.lr_scale)


def check_lr_scale(scale: float) -> float:
    """VsegError unless ``scale`` is in the supported range (0.3 to 0.9); returns it."""
    low, high = LR_SCALE_RANGE
    if not low <= scale <= high:
        raise VsegError(f"low-resolution scale {scale} is outside {low}..{high}")
    return scale


def conv_bn_relu(in_ch: int, out_ch: int, kernel: int, stride: int = 1, dilation: int = 1,
                 relu: bool = True) -> nn.Sequential:
    """Conv (same padding for odd kernels, no bias) + BatchNorm (+ ReLU)."""
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, kernel, stride, dilation * (kernel // 2), dilation,
                                         bias=False), nn.BatchNorm2d(out_ch)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class DilatedBasicBlock(nn.Module):
    """ResNet basic block whose 3x3 convs may be dilated (stride 1 then)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(in_ch, out_ch, 3, stride, dilation)
        self.conv2 = conv_bn_relu(out_ch, out_ch, 3, 1, dilation, relu=False)
        self.shortcut = (nn.Identity() if stride == 1 and in_ch == out_ch
                         else conv_bn_relu(in_ch, out_ch, 1, stride, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class PSPFeatures(nn.Module):
    """Dilated ResNet-18 at stride 8 + pyramid pooling + the decoder conv.

    ``forward(x [N, 3, H, W] normalised) -> feature [N, feature_channels, H/8, W/8]``. Layers 3
    and 4 keep stride 8 with dilation 2 and 4 (as PSPNet). Pyramid pooling: per bin size, an
    adaptive average pool, 1x1 conv to C4/len(bins), bilinear upsampling; concatenated with the
    input; a 3x3 conv makes the feature.
    """

    def __init__(self, config: ARSegConfig) -> None:
        super().__init__()
        w, b = config.widths, config.blocks
        self.stem = nn.Sequential(conv_bn_relu(3, config.stem_width, 7, 2), nn.MaxPool2d(3, 2, 1))
        plan = ((config.stem_width, w[0], 1, 1), (w[0], w[1], 2, 1), (w[1], w[2], 1, 2), (w[2], w[3], 1, 4))
        self.layers = nn.ModuleList(
            nn.Sequential(*[DilatedBasicBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1, dilation)
                            for i in range(count)])
            for (cin, cout, stride, dilation), count in zip(plan, b))
        branch = max(1, w[3] // len(config.pyramid_bins))
        self.bins = tuple(config.pyramid_bins)
        self.pyramid = nn.ModuleList(conv_bn_relu(w[3], branch, 1) for _ in self.bins)
        self.decoder = conv_bn_relu(w[3] + branch * len(self.bins), config.feature_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x)
        size = x.shape[-2:]
        pooled = [F.interpolate(conv(F.adaptive_avg_pool2d(x, bins)), size=size, mode="bilinear", align_corners=False)
                  for bins, conv in zip(self.bins, self.pyramid)]
        return self.decoder(torch.cat([x, *pooled], 1))


class CReFF(nn.Module):
    """Cross-resolution feature fusion: k x k local attention from the LR feature to the warped one.

    ``forward(warped [N, C, h, w], lr_up [N, C, h, w]) -> [N, C, h, w]``. Query = depthwise 3x3 of
    the upsampled LR feature, key and value = depthwise 3x3 of the warped keyframe feature; each
    pixel's softmax runs over its k x k neighbours (neighbours outside the map are masked out),
    and the attended value is added to lr_up (residual). Logits are scaled by 1/sqrt(C), so the
    softmax does not start saturated. The value conv starts at zero (see __init__).

    The neighbours are k*k shifted slices of the zero-padded key/value maps. On a CPU that is
    more than ten times faster than unfold + a product with the stacked neighbours (measured at
    45x60x64), and slightly faster channels-first than channels-last (no permutes); it exports
    to plain Slice/Mul/ReduceSum, and FlopCounterMode counts none of it (about 1% of a nonkey
    frame's FLOPs at 64 channels).
    """

    def __init__(self, channels: int, kernel: int = 7) -> None:
        super().__init__()
        self.kernel = kernel
        self.query = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.key = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.value = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        # A zero value path makes a fresh CReFF the identity on lr_up, so fusion training starts
        # from the LR branch's own prediction instead of adding random filters of the warped map.
        nn.init.zeros_(self.value.weight)
        nn.init.zeros_(self.value.bias)

    def _outside_bias(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        """[k*k, h, w]: 0 for neighbours inside the map, -inf for those outside."""
        offsets = torch.arange(self.kernel, device=device) - self.kernel // 2
        rows = torch.arange(h, device=device).view(1, h) + offsets.view(-1, 1)  # [k, h]
        cols = torch.arange(w, device=device).view(1, w) + offsets.view(-1, 1)  # [k, w]
        inside = (((rows >= 0) & (rows < h)).view(-1, 1, h, 1) & ((cols >= 0) & (cols < w)).view(1, -1, 1, w))
        bias = torch.zeros(inside.shape, device=device).masked_fill(~inside, float("-inf"))
        return bias.view(-1, h, w)

    def forward(self, warped: torch.Tensor, lr_up: torch.Tensor) -> torch.Tensor:
        c, h, w = lr_up.shape[1:]
        k, pad = self.kernel, self.kernel // 2
        query = self.query(lr_up) * (1.0 / math.sqrt(c))  # [N, C, h, w]
        keys = F.pad(self.key(warped), (pad, pad, pad, pad))  # [N, C, h+2p, w+2p]
        values = F.pad(self.value(warped), (pad, pad, pad, pad))
        offsets = [(dy, dx) for dy in range(k) for dx in range(k)]
        logits = torch.cat([(query * keys[:, :, dy:dy + h, dx:dx + w]).sum(1, keepdim=True) for dy, dx in offsets], 1)
        weights = torch.softmax(logits + self._outside_bias(h, w, lr_up.device), 1)  # [N, k*k, h, w]
        attended = torch.zeros_like(query)
        for i, (dy, dx) in enumerate(offsets):
            attended.addcmul_(weights[:, i:i + 1], values[:, :, dy:dy + h, dx:dx + w])
        return lr_up + attended


class ARSeg(nn.Module):
    """The `arseg` model: full-resolution branch ``hr``, low-resolution branch ``lr``, ``crff``,
    and the shared 1x1 ``classifier`` (see the module docstring for the stage methods)."""

    stride = STRIDE

    def __init__(self, config: ARSegConfig) -> None:
        super().__init__()
        self.config = config
        self.normalizer = ImageNormalizer()
        self.hr = PSPFeatures(config)
        self.lr = PSPFeatures(config)
        self.crff = CReFF(config.feature_channels, config.attention_kernel)
        self.dropout = nn.Dropout2d(config.dropout)
        self.classifier = nn.Conv2d(config.feature_channels, config.num_classes, 1)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def init_lr_from_hr(self) -> None:
        """Copy the full-resolution branch's weights into the low-resolution branch (phase 2 start)."""
        self.lr.load_state_dict(self.hr.state_dict())

    def hr_feature(self, frame: torch.Tensor) -> torch.Tensor:
        """frame [N, 3, H, W] in [0, 1] -> the full-resolution feature [N, C, H/8, W/8]."""
        return self.hr(self.normalizer(frame))

    def lr_feature(self, frame_lr: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """frame_lr [N, 3, H', W'] -> the LR feature upsampled (bilinear) to ``size`` = (h, w)."""
        return F.interpolate(self.lr(self.normalizer(frame_lr)), size=size, mode="bilinear", align_corners=False)

    def classify(self, feature: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """feature [N, C, h, w] -> logits [N, K, size] (bilinear)."""
        logits = self.classifier(self.dropout(feature))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)

    def keyframe(self, frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """frame [N, 3, H, W] -> (logits [N, K, H, W], feature [N, C, H/8, W/8] to cache)."""
        feature = self.hr_feature(frame)
        return self.classify(feature, frame.shape[-2:]), feature

    def fuse(self, cached_feature: torch.Tensor, lr_up: torch.Tensor, mv: torch.Tensor) -> torch.Tensor:
        """CReFF output [N, C, h, w]: the cached feature warped by mv [N, 2, H/4, W/4] (bilinear,
        zeros outside the keyframe) and fused with the upsampled LR feature lr_up [N, C, h, w]."""
        warped = mv_warp(cached_feature, mv, mode="bilinear", padding="zeros", block=MV_BLOCK)
        return self.crff(warped, lr_up)

    def fused_feature(self, frame_lr: torch.Tensor, cached_feature: torch.Tensor, mv: torch.Tensor) -> torch.Tensor:
        """:meth:`fuse` on the LR feature of frame_lr (FST compares this with the full-resolution feature)."""
        return self.fuse(cached_feature, self.lr_feature(frame_lr, cached_feature.shape[-2:]), mv)

    def nonkey(self, frame_lr: torch.Tensor, cached_feature: torch.Tensor, mv: torch.Tensor) -> torch.Tensor:
        """frame_lr [N, 3, H', W'], cached feature [N, C, h, w], mv [N, 2, H/4, W/4] -> logits [N, K, H, W]."""
        size = (mv.shape[2] * MV_BLOCK, mv.shape[3] * MV_BLOCK)
        return self.classify(self.fused_feature(frame_lr, cached_feature, mv), size)

    def lr_only(self, frame_lr: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The LR branch alone (no keyframe): frame_lr [N, 3, H', W'] -> logits [N, K, size]."""
        feature_size = (size[0] // STRIDE, size[1] // STRIDE)
        return self.classify(self.lr_feature(frame_lr, feature_size), size)


def lr_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """Size of the low-resolution frame: H*scale and W*scale rounded to multiples of 8 (>= 8)."""
    return tuple(max(STRIDE, int(v * scale / STRIDE + 0.5) * STRIDE) for v in (height, width))


def downscale(frame: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """frame [N, 3, H, W] -> [N, 3, size] (bilinear with antialiasing, like a camera's scaler)."""
    return F.interpolate(frame, size=size, mode="bilinear", align_corners=False, antialias=True)


def _count(fn, *args) -> float:
    with FlopCounterMode(display=False) as counter:
        fn(*args)
    return counter.get_total_flops() / 1e9


def arseg_gflops(config: ARSegConfig, height: int, width: int, lr_scale: float | None = None,
                 gop: int = 12) -> dict[str, float]:
    """GFLOPs per frame (FlopCounterMode on a meta-device copy; H, W multiples of 8).

    Returns keyframe (full resolution), nonkey (LR branch + CReFF), lr_only, full_every_frame
    (= keyframe), arseg_per_frame = (keyframe + (gop - 1) * nonkey) / gop and saving (fraction
    of full_every_frame saved). Warping and interpolation count no FLOPs.
    """
    scale = config.lr_scale if lr_scale is None else check_lr_scale(lr_scale)
    lr_h, lr_w = lr_size(height, width, scale)
    with torch.device("meta"):
        model = ARSeg(config).eval()
        frame = torch.rand(1, 3, height, width)
        frame_lr = torch.rand(1, 3, lr_h, lr_w)
        cached = torch.rand(1, config.feature_channels, height // STRIDE, width // STRIDE)
        mv = torch.rand(1, 2, height // MV_BLOCK, width // MV_BLOCK)
    with torch.no_grad():
        key = _count(model.keyframe, frame)
        nonkey = _count(model.nonkey, frame_lr, cached, mv)
        lr_only = _count(model.lr_only, frame_lr, (height, width))
    per_frame = (key + (gop - 1) * nonkey) / gop
    return {"keyframe": key, "nonkey": nonkey, "lr_only": lr_only, "full_every_frame": key,
            "arseg_per_frame": per_frame, "saving": 1.0 - per_frame / key, "lr_size": [lr_h, lr_w], "gop": gop}


__all__ = [
    "LR_SCALE_RANGE",
    "MV_BLOCK",
    "STRIDE",
    "ARSeg",
    "ARSegConfig",
    "CReFF",
    "PSPFeatures",
    "arseg_gflops",
    "check_lr_scale",
    "downscale",
    "lr_size",
]
