"""Plain-PyTorch building blocks and encoders for the VOS models.

Two trunks, both stopping at stride 16 and returning the features at strides 4, 8 and 16:

- :class:`ResNetTrunk`: ResNet-18-like (7x7 stem, max-pool, BasicBlock stages). ``stm`` uses it
  for the key encoder and, with 5 input channels and one block per stage, for the value encoder.
  Its ``layer1`` / ``layer2`` are kept as plain attributes so the sparse variant can swap their
  3x3 convolutions.
- :class:`MobileNetTrunk`: MobileNetV2-like (inverted residuals, width multiplier) for ``lite``.

Also the decoder-side :class:`ResBlock` (pre-activation, no normalisation, optionally
depthwise-separable) and :class:`ImageNormalizer`, which puts the ImageNet mean/std inside the
model so engines take RGB floats in [0, 1]. torchvision and timm are deliberately not used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageNormalizer(nn.Module):
    """RGB [B, 3, H, W] float in [0, 1] -> ImageNet-standardised [B, 3, H, W]."""

    def __init__(self) -> None:
        super().__init__()
        # Not persistent: constants, so weight files never carry (or disagree on) them.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return (rgb - self.mean) / self.std


def conv_bn_act(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1,
                act: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    """Conv (same padding, no bias) + BatchNorm (+ activation)."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN, identity (or 1x1 projection) shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv_bn_act(in_ch, out_ch, 3, stride)
        self.conv2 = conv_bn_act(out_ch, out_ch, 3, act=None)
        self.shortcut = (
            nn.Identity() if stride == 1 and in_ch == out_ch else conv_bn_act(in_ch, out_ch, 1, stride, act=None)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


def _stage(in_ch: int, out_ch: int, blocks: int, stride: int) -> nn.Sequential:
    return nn.Sequential(*[BasicBlock(in_ch if i == 0 else out_ch, out_ch, stride if i == 0 else 1)
                           for i in range(blocks)])


class ResNetTrunk(nn.Module):
    """ResNet-18-like encoder to stride 16.

    ``forward(x [B, in_channels, H, W]) -> (f4 [B, w0, H/4, W/4], f8 [B, w1, H/8, W/8],
    f16 [B, w2, H/16, W/16])`` for H, W multiples of 16. With the defaults this is ResNet-18's
    conv1 .. layer3.
    """

    def __init__(self, in_channels: int = 3, widths: tuple[int, int, int] = (64, 128, 256),
                 blocks: tuple[int, int, int] = (2, 2, 2), stem_width: int = 64) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn_act(in_channels, stem_width, 7, 2), nn.MaxPool2d(3, 2, 1))
        self.layer1 = _stage(stem_width, widths[0], blocks[0], 1)
        self.layer2 = _stage(widths[0], widths[1], blocks[1], 2)
        self.layer3 = _stage(widths[1], widths[2], blocks[2], 2)
        self.out_channels = tuple(widths)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f4 = self.layer1(self.stem(x))
        f8 = self.layer2(f4)
        f16 = self.layer3(f8)
        return f4, f8, f16


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a scaled channel count to a multiple of ``divisor`` (hardware-friendly), never
    below ``divisor`` and never more than 10% below ``value``."""
    rounded = max(divisor, round(value / divisor) * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear projection (+ identity)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = in_ch * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn_act(in_ch, hidden, 1, act=nn.ReLU6))
        layers += [conv_bn_act(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
                   conv_bn_act(hidden, out_ch, 1, act=None)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


# MobileNetV2's stages up to stride 16: (expansion, channels at width 1, blocks, first stride).
_MOBILENET_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1))
# Indices of the stages whose outputs are the stride-4, stride-8 and stride-16 features.
_MOBILENET_TAPS = (1, 2, 4)


class MobileNetTrunk(nn.Module):
    """MobileNetV2-like encoder to stride 16 with a width multiplier.

    ``forward(x [B, in_channels, H, W]) -> (f4, f8, f16)`` at strides 4, 8, 16; channel counts
    in ``out_channels`` (16, 16, 48 at width 0.5).
    """

    def __init__(self, in_channels: int = 3, width: float = 0.5) -> None:
        super().__init__()
        stem_ch = make_divisible(32 * width)
        self.stem = conv_bn_act(in_channels, stem_ch, 3, 2, act=nn.ReLU6)
        stages, in_ch, outs = [], stem_ch, []
        for expand, channels, blocks, stride in _MOBILENET_STAGES:
            out_ch = make_divisible(channels * width)
            stages.append(nn.Sequential(*[InvertedResidual(in_ch if i == 0 else out_ch, out_ch,
                                                           stride if i == 0 else 1, expand)
                                          for i in range(blocks)]))
            in_ch = out_ch
            outs.append(out_ch)
        self.stages = nn.ModuleList(stages)
        self.out_channels = tuple(outs[i] for i in _MOBILENET_TAPS)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        taps = []
        x = self.stem(x)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in _MOBILENET_TAPS:
                taps.append(x)
        return taps[0], taps[1], taps[2]


def conv3x3(in_ch: int, out_ch: int, separable: bool = False) -> nn.Module:
    """3x3 conv with bias; ``separable`` makes it depthwise 3x3 + pointwise 1x1 (~9x cheaper)."""
    if not separable:
        return nn.Conv2d(in_ch, out_ch, 3, padding=1)
    return nn.Sequential(nn.Conv2d(in_ch, in_ch, 3, padding=1, groups=in_ch), nn.Conv2d(in_ch, out_ch, 1))


class ResBlock(nn.Module):
    """Pre-activation residual block without normalisation (decoder / fusion style).

    ``[N, in_ch, h, w] -> [N, out_ch, h, w]``. No BatchNorm: the decoder runs on a batch of
    objects whose count changes per video, so batch statistics would be meaningless.
    """

    def __init__(self, in_ch: int, out_ch: int, separable: bool = False) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_ch, out_ch, separable)
        self.conv2 = conv3x3(out_ch, out_ch, separable)
        self.shortcut = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.conv1(F.relu(x))
        r = self.conv2(F.relu(r))
        return self.shortcut(x) + r
