"""Validation J&F of a VOS model on a dataset folder (DAVIS protocol, in memory).

Each sequence runs through :class:`~vseg.runtime.inference_core.InferenceCore` (the same
frame loop as deployment) from its first annotated mask, optionally at a smaller size, and is
scored against its annotations with :func:`~vseg.metrics.davis.score_sequence`; the dataset
figures come from :func:`~vseg.metrics.davis.summarise_davis` (means over all objects).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from vseg.data.datasets import UNANNOTATED, detect_layout, load_sequence, open_dataset
from vseg.errors import InputError
from vseg.metrics.davis import score_sequence, summarise_davis
from vseg.models.stm import MemoryNetwork
from vseg.runtime.inference_core import InferenceCore
from vseg.train.vos_data import resize_frames, resize_ids

# A predictor maps (sequence name, frames uint8 [T, H, W, 3], first mask uint8 [H, W]) to
# predicted ids uint8 [T, H, W]; a MemoryNetwork is turned into one by segment_sequence.
Predictor = Callable[[str, np.ndarray, np.ndarray], np.ndarray]


def segment_sequence(model: MemoryNetwork, frames: np.ndarray, first_mask: np.ndarray,
                     mem_every: int = 5, capacity: int = 8, keep_previous: bool = True,
                     skip_absent: bool = True, min_side: int | None = None) -> np.ndarray:
    """Run ``model`` over one video: frames uint8 [T, H, W, 3], first_mask uint8 [H, W] ids ->
    predicted ids uint8 [T, H, W] (frame 0 is the given mask). min_side: InferenceCore's
    (None: the model config's)."""
    core = InferenceCore(model, mem_every=mem_every, capacity=capacity, keep_previous=keep_previous,
                         skip_absent=skip_absent, min_side=min_side)
    out = np.empty(frames.shape[:3], np.uint8)
    for t in range(len(frames)):
        out[t] = core.step(frames[t], first_mask if t == 0 else None).ids
    return out


def _frames_at(frames: np.ndarray, masks: np.ndarray, size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    """Frames [T, H, W, 3] and masks [T, H, W] (uint8) resized to ``size`` (h, w) when given."""
    if size is None or tuple(size) == frames.shape[1:3]:
        return frames, masks
    small = (resize_frames(frames, tuple(size)) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    return small.numpy(), resize_ids(masks, tuple(size)).numpy()


def validate_vos(model: MemoryNetwork | Predictor, dataset_root: str | Path, split: str = "val",
                 max_sequences: int | None = None, size: tuple[int, int] | None = None,
                 mem_every: int = 5, capacity: int = 8, keep_previous: bool = True,
                 skip_absent: bool = True, min_side: int | None = None) -> dict:
    """J&F of ``model`` on the ``split`` sequences of a DAVIS/YouTube-VOS folder.

    model: a VOS model (run through InferenceCore with ``mem_every`` / ``capacity`` /
    ``keep_previous`` / ``skip_absent`` / ``min_side``) or any
    :data:`Predictor`. size: (h, w) to resize frames (bilinear) and annotations (nearest) to
    before running and scoring; None keeps the dataset's size. Every frame of a sequence must
    be annotated (the DAVIS protocol scores all of them).

    Returns {"J&F", "J", "F" (percent, means over all objects), "num_sequences",
    "num_objects", "sequences": {name: J&F of that sequence}, "summary": summarise_davis's dict}.
    """
    layout = detect_layout(dataset_root)
    if layout not in ("davis", "youtube-vos"):
        raise InputError(f"{dataset_root}: a {layout} folder has no VOS annotations (need DAVIS or YouTube-VOS)")
    dataset = open_dataset(dataset_root, split)
    sequences = list(dataset)[:max_sequences] if max_sequences is not None else list(dataset)
    if not sequences:
        raise InputError(f"{dataset_root}: split {split!r} has no sequences")
    if isinstance(model, MemoryNetwork):
        def predict(name: str, frames: np.ndarray, first: np.ndarray) -> np.ndarray:
            return segment_sequence(model, frames, first, mem_every, capacity, keep_previous, skip_absent, min_side)
    else:
        predict = model
    scores = []
    for seq in sequences:
        frames, masks = load_sequence(seq)
        if masks is None or (masks == UNANNOTATED).all(axis=(1, 2)).any():
            raise InputError(f"{seq.frames[0].parent}: validation needs every frame annotated "
                             f"({len(seq.annotated)} of {len(seq)} are)")
        frames, masks = _frames_at(frames, masks, size)
        preds = predict(seq.name, frames, masks[0])
        scores.append(score_sequence(masks, preds, name=seq.name))
    summary = summarise_davis(scores)
    figures = summary["dataset"]
    return {
        "J&F": figures["J&F-Mean"], "J": figures["J-Mean"], "F": figures["F-Mean"],
        "num_sequences": summary["num_sequences"], "num_objects": summary["num_objects"],
        "sequences": {row["sequence"]: row["J&F-Mean"] for row in summary["sequences"]},
        "summary": summary,
    }
