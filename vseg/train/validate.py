"""Validation J&F of a VOS model on a dataset folder (DAVIS protocol, in memory).

Each sequence runs through :class:`~vseg.runtime.inference_core.InferenceCore` (the same
frame loop as deployment) from its first annotated mask, optionally at a smaller size, and is
scored against its annotations with :func:`~vseg.metrics.davis.score_sequence`; the dataset
figures come from :func:`~vseg.metrics.davis.summarise_davis` (means over all objects).
Sequences annotated sparsely or with objects that enter later (YouTube-VOS) run from their
first annotated object, each later object given on its first annotation (as ``vseg run
--mask DIR`` does), and are scored on their annotated frames by
:func:`~vseg.metrics.entering.score_entering`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from vseg.data.datasets import detect_layout, load_sequence, open_dataset
from vseg.errors import InputError
from vseg.metrics.davis import score_sequence, summarise_davis
from vseg.metrics.entering import first_annotations, object_ids_of, score_entering
from vseg.models.stm import MemoryNetwork
from vseg.runtime.given_masks import entering_ids
from vseg.runtime.mirrored import make_core
from vseg.train.vos_data import resize_frames, resize_ids

# A predictor maps (sequence name, frames uint8 [T, H, W, 3], first mask uint8 [H, W]) to
# predicted ids uint8 [T, H, W]; a MemoryNetwork is turned into one by segment_sequence.
Predictor = Callable[[str, np.ndarray, np.ndarray], np.ndarray]


def segment_sequence(model: MemoryNetwork, frames: np.ndarray, first_mask: np.ndarray,
                     mem_every: int = 5, capacity: int = 8, keep_previous: bool = True,
                     skip_absent: bool = True, min_side: int | None = None,
                     later: dict[int, np.ndarray] | None = None, flip: bool = False) -> np.ndarray:
    """Run ``model`` over one video: frames uint8 [T, H, W, 3], first_mask uint8 [H, W] ids ->
    predicted ids uint8 [T, H, W] (frame 0 is the given mask). min_side: InferenceCore's
    (None: the model config's). later: {frame index: mask [H, W]} of objects entering there.
    flip: test-time flip augmentation (:class:`~vseg.runtime.mirrored.MirroredCore`)."""
    core = make_core(model, flip, mem_every=mem_every, capacity=capacity, keep_previous=keep_previous,
                     skip_absent=skip_absent, min_side=min_side)
    later = later or {}
    later_ids = entering_ids(first_mask, later.values())
    out = np.empty(frames.shape[:3], np.uint8)
    for t in range(len(frames)):
        out[t] = core.step(frames[t], first_mask if t == 0 else later.get(t), later_ids=later_ids if t == 0 else ()).ids
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
                 skip_absent: bool = True, min_side: int | None = None, flip: bool = False) -> dict:
    """J&F of ``model`` on the ``split`` sequences of a DAVIS/YouTube-VOS folder.

    model: a VOS model (run through InferenceCore with ``mem_every`` / ``capacity`` /
    ``keep_previous`` / ``skip_absent`` / ``min_side`` / ``flip``) or any
    :data:`Predictor`. size: (h, w) to resize frames (bilinear) and annotations (nearest) to
    before running and scoring; None keeps the dataset's size. Every frame of a sequence must
    be annotated (the DAVIS protocol scores all of them), unless the sequence runs the YouTube-VOS
    way (module docstring), which needs a VOS model rather than a predictor.

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
            return segment_sequence(model, frames, first, mem_every, capacity, keep_previous, skip_absent, min_side,
                                    flip=flip)
    else:
        predict = model
    scores = []
    for seq in sequences:
        frames, masks = load_sequence(seq)
        if masks is None:
            raise InputError(f"{seq.frames[0].parent}: the sequence has no annotations")
        frames, masks = _frames_at(frames, masks, size)
        annotated = seq.annotated
        entries = first_annotations(object_ids_of(masks[t]) for t in annotated)
        if len(annotated) == len(seq) and all(position == 0 for position in entries.values()):
            scores.append(score_sequence(masks, predict(seq.name, frames, masks[0]), name=seq.name))
            continue
        if not isinstance(model, MemoryNetwork):
            raise InputError(f"{seq.frames[0].parent}: sparse annotations or objects that enter later need a VOS "
                             f"model to validate, not a predictor")
        if len(annotated) < 3 or not entries:
            raise InputError(f"{seq.frames[0].parent}: {len(annotated)} annotated frames showing "
                             f"{len(entries)} objects; need 3 or more frames and an object")
        given: dict[int, np.ndarray] = {}  # frame -> the objects entering there
        for v, position in entries.items():
            t = annotated[position]
            given.setdefault(t, np.zeros(masks.shape[1:], np.uint8))[masks[t] == v] = v
        start = min(given)
        preds = segment_sequence(model, frames[start:], given.pop(start), mem_every, capacity, keep_previous,
                                 skip_absent, min_side, later={t - start: m for t, m in given.items()}, flip=flip)
        blank = np.zeros(masks.shape[1:], np.uint8)  # frames before the first object are never scored
        scores.append(score_entering([masks[t] for t in annotated],
                                     [preds[t - start] if t >= start else blank for t in annotated],
                                     seq.name, [seq.frames[t].stem for t in annotated], entries))
    if all(np.isnan(s.j).all() for s in scores):  # e.g. YouTube-VOS 'valid': each object's first mask only
        raise InputError(f"{dataset_root}: no object is annotated after its first annotation, so nothing can be "
                         f"scored; validate on annotated frames (a part of YouTube-VOS 'train')")
    summary = summarise_davis(scores)
    figures = summary["dataset"]
    return {
        "J&F": figures["J&F-Mean"], "J": figures["J-Mean"], "F": figures["F-Mean"],
        "num_sequences": summary["num_sequences"], "num_objects": summary["num_objects"],
        "sequences": {row["sequence"]: row["J&F-Mean"] for row in summary["sequences"]},
        "summary": summary,
    }
