"""J and F when objects enter after the first annotated frame (YouTube-VOS style annotations).

The DAVIS-2017 protocol (:mod:`vseg.metrics.davis`) takes the ids 1..max of a sequence's first
annotation as its objects and scores the annotated frames between the first and the last.
YouTube-VOS annotates each object from the frame where it enters (and only every fifth frame),
so that protocol would miss the objects that enter later, or score them as absent. vseg
extends it in the way that reduces to it exactly when the first annotation shows every object
and its ids are 1..max:

- the objects are the ids of every annotation (void, 255, aside);
- each object is scored on the annotated frames after its own first one; the sequence's
  first and last annotated frames are never scored, as in DAVIS;
- J, F, their Mean, Recall and Decay per object are DAVIS's over the frames it is scored
  on; dataset figures are means over all objects. An object whose first annotation is the
  last or the one before has no frame to score and is left out (and listed).

In :class:`~vseg.metrics.davis.SequenceScores` the frames an object is not scored on hold NaN.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from vseg.data.palette import read_mask
from vseg.errors import InputError
from vseg.metrics.davis import SequenceScores, annotation_paths, read_prediction, score_folders, summarise_davis
from vseg.metrics.frame_jf import DEFAULT_BOUND_TH, VOID_ID, score_frame

PROTOCOL = "DAVIS-2017 semi-supervised, with objects that enter later (vseg.metrics.entering)"


def object_ids_of(gt_ids: np.ndarray) -> set[int]:
    """The object ids an annotation shows (background and void aside)."""
    return {int(v) for v in np.unique(gt_ids) if v != 0 and v != VOID_ID}


def first_annotations(ids_per_frame: Iterable[set[int]]) -> dict[int, int]:
    """{object id: position of the first annotation that shows it}, ids ascending."""
    first: dict[int, int] = {}
    for position, ids in enumerate(ids_per_frame):
        for v in ids:
            first.setdefault(v, position)
    return dict(sorted(first.items()))


def score_entering(gt_frames: Sequence[np.ndarray], pred_frames: Sequence[np.ndarray], name: str = "sequence",
                   frame_names: Sequence[str] | None = None, entries: dict[int, int] | None = None,
                   exclude_void: bool = False, bound_th: float = DEFAULT_BOUND_TH) -> SequenceScores:
    """Score one sequence's annotated frames (module docstring).

    gt_frames / pred_frames: the annotated frames only, in order, [H, W] uint8 ids each (at
    least 3); frame_names: their names (default 00000...); entries: :func:`first_annotations`
    of gt_frames when already known. Returns scores of the frames between the first and the
    last, NaN where an object is not scored yet.
    """
    n = len(gt_frames)
    if n < 3:
        raise ValueError(f"{name}: {n} annotated frames; the first and last are not scored, need >= 3")
    if len(pred_frames) != n:
        raise ValueError(f"{name}: {len(pred_frames)} predictions for {n} annotated frames")
    entries = entries if entries is not None else first_annotations(object_ids_of(g) for g in gt_frames)
    if not entries:
        raise ValueError(f"{name}: no annotation shows an object")
    ids = list(entries)
    rows = np.array(ids) - 1
    j = np.full((len(ids), n - 2), np.nan)
    f = np.full((len(ids), n - 2), np.nan)
    for position in range(1, n - 1):
        scored = [i for i, v in enumerate(ids) if entries[v] < position]
        if not scored:
            continue
        fj, ff = score_frame(gt_frames[position], pred_frames[position], max(ids), exclude_void, bound_th)
        j[scored, position - 1] = fj[rows[scored]]
        f[scored, position - 1] = ff[rows[scored]]
    names = list(frame_names) if frame_names is not None else [f"{i:05d}" for i in range(n)]
    return SequenceScores(name, names[1:-1], ids, j, f)


def evaluate_entering(pred_root, gt_root, sequences: Sequence[str] | None = None, on_sequence=None,
                      subset: str = "val", exclude_void: bool = False, bound_th: float = DEFAULT_BOUND_TH) -> dict:
    """:func:`~vseg.metrics.davis.evaluate_davis` with objects that enter later (module
    docstring): the same folders and arguments; annotations may be sparse (every fifth frame),
    and every annotated frame but the first and last needs a prediction."""
    ann_root, pred_root, scored = score_folders(
        pred_root, gt_root, sequences, subset, on_sequence,
        lambda gt_dir, pred_dir: _score_folder(gt_dir, pred_dir, exclude_void, bound_th))
    if all(np.isnan(s.j).all() for s in scored):
        raise InputError(f"{ann_root}: no object is annotated after its first annotation: nothing to score")
    result = {"annotations": str(ann_root), "predictions": str(pred_root), "bound_th": bound_th,
              "exclude_void": exclude_void}
    return result | summarise_davis(scored) | {"protocol": PROTOCOL}


def _score_folder(gt_dir: Path, pred_dir: Path, exclude_void: bool, bound_th: float) -> SequenceScores:
    gt_paths = annotation_paths(gt_dir, pred_dir)
    gt = [read_mask(path)[0] for path in gt_paths]
    entries = first_annotations(object_ids_of(g) for g in gt)
    if not entries:
        raise InputError(f"{gt_dir}: no annotation shows an object")
    for gt_path, gt_ids in zip(gt_paths[1:], gt[1:]):
        if gt_ids.shape != gt[0].shape:
            raise InputError(f"{gt_path}: size {gt_ids.shape[1]}x{gt_ids.shape[0]} differs from {gt_paths[0].name}'s")
    # the first and last annotated frames are never scored: no prediction is read for them
    pred = [gt[0], *(read_prediction(pred_dir, p, g) for p, g in zip(gt_paths[1:-1], gt[1:-1])), gt[-1]]
    return score_entering(gt, pred, gt_dir.name, [p.stem for p in gt_paths], entries, exclude_void, bound_th)
