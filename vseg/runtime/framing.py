"""Where a video's frames sit in the engines' input: scaled up to the working size, padded to the stride.

Weights trained on frames scaled up (``vseg train --scale-range 1.7 2.3``) expect targets that
many pixels wide, so the inference core runs a video whose shorter side is below the model's
``min_side`` at a working size with that shorter side (bilinear for frames, nearest neighbour
for object masks, which must not blend), and scales the probabilities back (bilinear) before
taking the ids. Every engine takes sides that are multiples of :data:`STRIDE`, so the working
size is then padded, split evenly between the sides so that the content stays centred; the
padding is background. A :class:`Framing` holds one video's three sizes and does both ways.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

STRIDE = 16  # every engine takes frames whose sides are multiples of this


def working_size(height: int, width: int, min_side: int) -> tuple[int, int]:
    """(H, W) a frame of ``height`` x ``width`` runs at: scaled up, keeping its aspect, so that
    its shorter side is ``min_side`` when it is shorter; as it is otherwise (and for 0)."""
    short = min(height, width)
    if min_side <= short:
        return height, width
    scale = min_side / short
    # The shorter side lands on min_side exactly; the longer one keeps the aspect ratio.
    return (min_side, round(width * scale)) if height == short else (round(height * scale), min_side)


@dataclass(frozen=True)
class Framing:
    """One video's sizes: size (H, W) of its frames, work (h, w) the engines see before padding,
    pad (left, right, top, bottom) as ``F.pad`` takes it."""

    size: tuple[int, int]
    work: tuple[int, int]
    pad: tuple[int, int, int, int]

    @classmethod
    def of(cls, height: int, width: int, min_side: int) -> Framing:
        """The framing of ``height`` x ``width`` frames for a model whose ``min_side`` is given (0: none)."""
        work = working_size(height, width, min_side)
        pad_h, pad_w = -work[0] % STRIDE, -work[1] % STRIDE
        return cls((height, width), work, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))

    @property
    def scaled(self) -> bool:
        """Whether the engines see the frames at another size than the video's."""
        return self.work != self.size

    @property
    def size_text(self) -> str:
        """The video's size as error messages write it, e.g. '61x90'."""
        return f"{self.size[0]}x{self.size[1]}"

    @property
    def padded(self) -> tuple[int, int]:
        """(Hp, Wp): the engines' input size."""
        left, right, top, bottom = self.pad
        return self.work[0] + top + bottom, self.work[1] + left + right

    def frame_in(self, image: torch.Tensor) -> torch.Tensor:
        """A frame [1, 3, H, W] float in [0, 1] -> [1, 3, Hp, Wp], at the working size and padded."""
        if self.scaled:
            image = F.interpolate(image, size=self.work, mode="bilinear", align_corners=False).clamp_(0, 1)
        return F.pad(image, self.pad)

    def masks_in(self, masks: torch.Tensor) -> torch.Tensor:
        """0/1 object masks [1, S, H, W] -> [1, S, Hp, Wp] (nearest neighbour; padding is background)."""
        if self.scaled:
            masks = F.interpolate(masks, size=self.work, mode="nearest-exact")
        return F.pad(masks, self.pad)

    def content(self, padded: torch.Tensor) -> torch.Tensor:
        """[..., Hp, Wp] -> the view of the frame's own pixels [..., h, w] (working size, no padding)."""
        left, _, top, _ = self.pad
        return padded[..., top:top + self.work[0], left:left + self.work[1]]

    def to_video(self, probs: torch.Tensor) -> torch.Tensor:
        """Padded probabilities [1, C, Hp, Wp] -> float [1, C, H, W] at the video's size."""
        cropped = self.content(probs).float()
        if self.scaled:
            cropped = F.interpolate(cropped, size=self.size, mode="bilinear", align_corners=False)
        return cropped
