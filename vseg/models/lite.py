"""`lite`: the small student distilled online from `stm`.

Same stages, memory read and decoder shape as :mod:`vseg.models.stm`, with a MobileNetV2-like
encoder (width 0.5), key 32, value 64 and depthwise-separable fusion/decoder blocks. The online
knowledge-distillation parts are separate modules, each switched by :class:`LiteConfig`:

- ``stff`` (:class:`STFF`, deployed): fuses the previous frame's stride-16 feature (appearance
  prior) and foreground probability (position prior) into the current frame's feature. This
  makes the previous frame an explicit input of ``encode_key`` and its raw feature an explicit
  output (``KeyFeatures.next_feat16``): the model holds no hidden state.
- ``smooth`` (:class:`SmoothBlock` per distilled feature, training only): lifts student features
  to the teacher's channel counts for the feature loss.
- ``discriminator`` (:class:`FeatureDiscriminator`, training only): tells teacher features from
  adapted student features, for an adversarial loss.
- :class:`AdaptiveDistillationLR` (training only, not a module): damps the learning rate of the
  distillation step when the student's loss rises against the teacher's ("inverse learning").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vseg.models.backbones import ImageNormalizer, MobileNetTrunk
from vseg.models.stm import (
    KeyFeatures,
    MaskDecoder,
    MemoryNetwork,
    STMConfig,
    ValueFusion,
)

_TEACHER = STMConfig()


@dataclass(frozen=True)
class LiteConfig:
    """Sizes and switches of the `lite` model (defaults: ~0.35M deployed parameters)."""

    key_dim: int = 32
    value_dim: int = 64
    top_k: int = 20
    width: float = 0.5
    value_width: float = 0.35
    decoder_widths: tuple[int, int, int] = (64, 32, 16)
    use_stff: bool = True
    use_smooth: bool = True
    use_discriminator: bool = True
    use_adaptive_lr: bool = True
    # Teacher channel counts the Smooth Blocks map to: stm's stride-16 feature and 1/8 skip.
    teacher_feat16: int = _TEACHER.key_widths[2]
    teacher_skip8: int = _TEACHER.key_widths[1]
    min_side: int = 0  # the shorter frame side the weights work at (0: any), as STMConfig's


class STFF(nn.Module):
    """Spatio-temporal feature fusion of the previous frame into the current one.

    feat [B, C, h, w], prev_feat [B, C, h, w] (previous frame's raw stride-16 feature),
    prev_fg [B, 1, s*h, s*w] (previous frame's foreground probability at image size, any
    integer stride s) -> fused [B, C, h, w] = feat + project(appearance * position), where
    ``appearance`` compares the two frames' features and ``position`` is a gate in (0, 1)
    computed from where the objects were.
    """

    def __init__(self, channels: int, position_hidden: int = 8) -> None:
        super().__init__()
        self.appearance = nn.Sequential(
            nn.Conv2d(2 * channels, channels, 1), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels),
        )
        self.position = nn.Sequential(
            nn.Conv2d(1, position_hidden, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(position_hidden, channels, 3, padding=1),
        )
        self.project = nn.Conv2d(channels, channels, 1)

    def forward(self, feat: torch.Tensor, prev_feat: torch.Tensor, prev_fg: torch.Tensor) -> torch.Tensor:
        stride = prev_fg.shape[-1] // feat.shape[-1]
        fg = F.avg_pool2d(prev_fg, stride)  # fraction of each stride-16 cell that was foreground
        appearance = self.appearance(torch.cat([feat, prev_feat], dim=1))
        position = torch.sigmoid(self.position(fg))
        return feat + self.project(appearance * position)


class SmoothBlock(nn.Module):
    """Student feature [B, Cs, h, w] -> teacher-sized feature [B, Ct, h, w] for the feature loss:
    a 1x1 lift then a 3x3 smoothing conv, so the student's own features need not match the
    teacher's channel count or exact spatial statistics."""

    def __init__(self, student_ch: int, teacher_ch: int) -> None:
        super().__init__()
        self.lift = nn.Sequential(nn.Conv2d(student_ch, teacher_ch, 1, bias=False),
                                  nn.BatchNorm2d(teacher_ch), nn.ReLU(inplace=True))
        self.smooth = nn.Conv2d(teacher_ch, teacher_ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.smooth(self.lift(x))


class FeatureDiscriminator(nn.Module):
    """Patch discriminator on teacher-sized stride-16 features.

    feat [B, C, h, w] -> real/fake logits [B, 1, ceil(h/2), ceil(w/2)] (one per 2x2 patch).
    """

    def __init__(self, channels: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(hidden, 1, 1),
        )

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.net(feat)


class AdaptiveDistillationLR:
    """Damping factor for the distillation learning rate ("inverse learning").

    Each :meth:`update` takes the current student and teacher task losses and tracks their
    ratio r = student / teacher with an exponential moving average. When r rises above its
    average (the student is falling behind the teacher), the factor is average / r, clamped to
    [min_factor, 1]; otherwise 1. :meth:`apply` scales an optimizer's learning rates by it.
    """

    def __init__(self, momentum: float = 0.9, min_factor: float = 0.1, eps: float = 1e-8) -> None:
        if not 0.0 <= momentum < 1.0 or not 0.0 < min_factor <= 1.0:
            raise ValueError(f"need 0 <= momentum < 1 and 0 < min_factor <= 1, got {momentum}, {min_factor}")
        self.momentum, self.min_factor, self.eps = momentum, min_factor, eps
        self.average_ratio: float | None = None
        self.factor = 1.0

    def update(self, student_loss: float | torch.Tensor, teacher_loss: float | torch.Tensor) -> float:
        ratio = float(student_loss) / (float(teacher_loss) + self.eps)
        if self.average_ratio is None:
            self.average_ratio = ratio
        self.factor = min(1.0, max(self.min_factor, self.average_ratio / max(ratio, self.eps)))
        self.average_ratio = self.momentum * self.average_ratio + (1 - self.momentum) * ratio
        return self.factor

    def apply(self, optimizer: torch.optim.Optimizer) -> None:
        """Set each param group's lr to its base lr (remembered on first call) times the factor."""
        for group in optimizer.param_groups:
            group.setdefault("base_lr", group["lr"])
            group["lr"] = group["base_lr"] * self.factor


class LiteVOS(MemoryNetwork):
    """The distilled student (see the module docstring).

    ``encode_key(frame, prev_feat16=None, prev_fg=None)``: with STFF on, prev_feat16
    [B, C16, H/16, W/16] is the previous frame's ``next_feat16`` and prev_fg [B, 1, H, W] its
    foreground probability (1 - background); None (first frame) means zeros. Without STFF they
    are ignored and ``next_feat16`` is None.
    """

    training_only = ("smooth", "discriminator")

    def __init__(self, config: LiteConfig | None = None) -> None:
        super().__init__()
        cfg = config or LiteConfig()
        self.config = cfg
        self.key_dim, self.value_dim, self.top_k = cfg.key_dim, cfg.value_dim, cfg.top_k
        self.uses_prev_frame = cfg.use_stff
        self.normalize = ImageNormalizer()
        self.key_encoder = MobileNetTrunk(3, cfg.width)
        c4, c8, c16 = self.key_encoder.out_channels
        self.key_proj = nn.Conv2d(c16, cfg.key_dim, 3, padding=1)
        nn.init.orthogonal_(self.key_proj.weight)
        nn.init.zeros_(self.key_proj.bias)
        self.stff = STFF(c16) if cfg.use_stff else None
        self.value_encoder = MobileNetTrunk(5, cfg.value_width)
        self.value_fusion = ValueFusion(c16, self.value_encoder.out_channels[2], cfg.value_dim, separable=True)
        self.decoder = MaskDecoder(cfg.value_dim, c16, c8, c4, cfg.decoder_widths, separable=True)
        self.smooth = (nn.ModuleDict({"feat16": SmoothBlock(c16, cfg.teacher_feat16),
                                      "skip8": SmoothBlock(c8, cfg.teacher_skip8)})
                       if cfg.use_smooth else None)
        self.discriminator = FeatureDiscriminator(cfg.teacher_feat16) if cfg.use_discriminator else None

    def encode_key(self, frame: torch.Tensor, prev_feat16: torch.Tensor | None = None,
                   prev_fg: torch.Tensor | None = None) -> KeyFeatures:
        """frame [B, 3, H, W] in [0, 1] -> KeyFeatures (key [B, 32, H/16, W/16], feat16 fused by
        STFF, skips, next_feat16 = this frame's raw stride-16 feature for the next call)."""
        f4, f8, f16 = self.key_encoder(self.normalize(frame))
        if self.stff is None:
            return KeyFeatures(self.key_proj(f16), f16, f8, f4)
        if prev_feat16 is None:
            prev_feat16 = torch.zeros_like(f16)
        if prev_fg is None:
            prev_fg = frame.new_zeros(frame.shape[0], 1, frame.shape[2], frame.shape[3])
        fused = self.stff(f16, prev_feat16, prev_fg)
        return KeyFeatures(self.key_proj(fused), fused, f8, f4, next_feat16=f16)

    def adapt_features(self, feats: KeyFeatures) -> dict[str, torch.Tensor]:
        """Student features lifted to teacher sizes by the Smooth Blocks: {"feat16": [B, 256,
        h, w], "skip8": [B, 128, 2h, 2w]} (empty when the Smooth Blocks are off)."""
        if self.smooth is None:
            return {}
        return {"feat16": self.smooth["feat16"](feats.feat16), "skip8": self.smooth["skip8"](feats.skip8)}

    def student_parameters(self) -> list[nn.Parameter]:
        """Everything the student's optimizer steps: all parameters but the discriminator's."""
        skip = {id(p) for p in self.discriminator.parameters()} if self.discriminator is not None else set()
        return [p for p in self.parameters() if id(p) not in skip]

    def make_lr_damper(self, **kwargs) -> AdaptiveDistillationLR | None:
        """An :class:`AdaptiveDistillationLR` if the config enables it, else None."""
        return AdaptiveDistillationLR(**kwargs) if self.config.use_adaptive_lr else None


def feature_distillation_loss(adapted: dict[str, torch.Tensor], teacher: KeyFeatures) -> torch.Tensor:
    """Mean over the adapted features of MSE(student adapted, teacher feature); the teacher is
    detached (online KD trains the teacher on its own loss only). 0 when nothing is adapted."""
    if not adapted:
        return torch.zeros(())
    losses = [F.mse_loss(feat, getattr(teacher, name).detach()) for name, feat in adapted.items()]
    return torch.stack(losses).mean()


def logit_distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                            temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher || student) per pixel over bg + objects, logits [B, K+1, H, W], averaged over
    pixels and scaled by T^2 (so the gradient size does not depend on the temperature)."""
    teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    student = F.log_softmax(student_logits / temperature, dim=1)
    kl = (teacher.exp() * (teacher - student)).sum(1)
    return kl.mean() * temperature**2


def discriminator_loss(discriminator: nn.Module, teacher_feat: torch.Tensor,
                       student_feat: torch.Tensor) -> torch.Tensor:
    """BCE for the discriminator: teacher features real (1), adapted student features fake (0).
    Both inputs are detached, so this loss trains the discriminator only."""
    real = discriminator(teacher_feat.detach())
    fake = discriminator(student_feat.detach())
    return (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))


def adversarial_loss(discriminator: nn.Module, student_feat: torch.Tensor) -> torch.Tensor:
    """BCE pushing the discriminator to call the adapted student feature real; step only the
    student's parameters (:meth:`LiteVOS.student_parameters`) on it."""
    fake = discriminator(student_feat)
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
