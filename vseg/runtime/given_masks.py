"""Masks given after the first frame (objects that enter later, YouTube-VOS style).

The inference core (:mod:`vseg.runtime.inference_core`) reads a later frame's id mask into a
:class:`GivenMask` and merges it into that frame's prediction with :func:`merge_given`;
:func:`entering_ids` works out, before the first frame, which ids a video's later masks start.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class GivenMask:
    """A mask given on a later frame: video [1, S, H, W] and work [1, S, Hp, Wp] (float 0/1
    object masks in the engines' S object slots, at the video's size and padded at the working
    size), shown [1, S] bool (the slots it sets), new [1, S] bool (those it starts)."""

    video: torch.Tensor
    work: torch.Tensor
    shown: torch.Tensor
    new: torch.Tensor


def merge_given(probs: torch.Tensor, objects: torch.Tensor, shown: torch.Tensor) -> torch.Tensor:
    """probs [1, K+1, H, W] (background first), objects [1, K, H, W] given 0/1 masks, shown
    [1, K] bool -> probabilities where each shown object is exactly its given mask and the
    others keep theirs off the given pixels; background takes the rest."""
    on = shown[:, :, None, None]
    covered = (objects * on).sum(1, keepdim=True).clamp(max=1)
    merged = torch.where(on, objects, probs[:, 1:] * (1 - covered))
    return torch.cat([(1 - merged.sum(1, keepdim=True)).clamp(min=0), merged], dim=1)


def entering_ids(first_mask: np.ndarray, later_masks) -> list[int]:
    """The ids the ``later_masks`` ([H, W] id arrays) show and ``first_mask`` does not, ascending:
    what :meth:`InferenceCore.step` takes as ``later_ids`` on the first frame."""
    shown = {int(v) for mask in later_masks for v in np.unique(mask)}
    return sorted(shown - {int(v) for v in np.unique(first_mask)} - {0})

