"""DAVIS-2017 semi-supervised evaluation: region similarity J and boundary accuracy F.

The numbers match the official davis2017-evaluation tool (semi-supervised task):

- objects of a sequence are the ids 1..max of its first annotated frame;
- the first and the last annotated frames are not scored;
- J is the IoU of an object's two masks, 1 when both are empty;
- F is the boundary F-measure: one-pixel boundaries (a pixel is on the boundary when it
  differs from its right, lower or lower-right neighbour, neighbours outside the image never
  differing), a tolerance of ceil(0.008 * image diagonal) pixels, each boundary dilated by
  the disk dx^2 + dy^2 <= r^2 with no thinning; precision is the share of predicted boundary
  pixels inside the dilated true boundary, recall the converse; an empty boundary on one
  side gives precision/recall 1/0 (empty prediction) or 0/1 (empty truth), both empty 1/1;
- per object: Mean, Recall (share of frames scoring > 0.5) and Decay (mean of the first
  quarter of frames minus mean of the last, the official overlapping bins);
- dataset figures are means over all objects of all sequences, J&F = (J-Mean + F-Mean) / 2.

GT void pixels (255): the official semi-supervised run treats them as background and does
not exclude them; ``exclude_void=True`` removes them from J and F (the official
``void_pixels`` path) instead. DAVIS-2017 annotations carry no void pixels, so both agree there.

One frame's J and F: :mod:`vseg.metrics.frame_jf`; here, objects, sequences, folders and the table.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vseg.data.palette import read_mask
from vseg.errors import InputError
from vseg.metrics.frame_jf import DEFAULT_BOUND_TH, VOID_ID, score_frame
from vseg.metrics.report import format_number, format_table

MEASURES = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")


# ---------------------------------------------------------------------------- object level


def decay_bins(num_frames: int) -> list[tuple[int, int]]:
    """The official four (overlapping) frame ranges [start, stop) used for Decay.

    Edges are round(linspace(1, n, 5)) - 1 with halves rounded up; each bin runs from one
    edge to the next inclusive, so neighbouring bins share a frame.
    """
    # np.round sends halves to even; the official 1e-10 nudge sends them up. (The official
    # code then casts to uint8, which wraps past 256 frames; int64 keeps long clips right.)
    edges = (np.round(np.linspace(1, num_frames, 5) + 1e-10) - 1).astype(np.int64)
    return [(int(edges[i]), int(edges[i + 1]) + 1) for i in range(4)]


def object_statistics(per_frame: np.ndarray) -> tuple[float, float, float]:
    """(Mean, Recall, Decay) of one object's per-frame scores [T] in 0..1 (T >= 1)."""
    values = np.asarray(per_frame, np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"need a non-empty 1-D array of scores, got shape {values.shape}")
    bins = decay_bins(values.size)
    first, last = values[slice(*bins[0])], values[slice(*bins[3])]
    return float(values.mean()), float((values > 0.5).mean()), float(first.mean() - last.mean())


# ---------------------------------------------------------------------------- sequence level


@dataclass
class SequenceScores:
    """Raw scores of one sequence: j, f are [objects, scored frames] float64 in 0..1."""

    name: str
    frames: list[str]
    object_ids: list[int]
    j: np.ndarray
    f: np.ndarray


def count_objects(first_gt: np.ndarray) -> int:
    """Objects of a sequence: the largest id of its first annotation, void (255) aside."""
    ids = np.asarray(first_gt)
    return int(np.where(ids == VOID_ID, 0, ids).max(initial=0))


def score_sequence(
    gt_frames: np.ndarray,
    pred_frames: np.ndarray,
    name: str = "sequence",
    exclude_void: bool = False,
    bound_th: float = DEFAULT_BOUND_TH,
) -> SequenceScores:
    """Score in-memory masks of one sequence.

    gt_frames: [T, H, W] uint8 ids, T >= 3. pred_frames: [T, H, W] (its first and last
    frames are ignored) or [T - 2, H, W] (predictions for frames 1..T-2 only).
    """
    gt_frames, pred_frames = np.asarray(gt_frames), np.asarray(pred_frames)
    t = gt_frames.shape[0]
    if t < 3:
        raise ValueError(f"{name}: {t} annotated frames; the first and last are not scored, need >= 3")
    if pred_frames.shape[0] == t:
        pred_frames = pred_frames[1:-1]
    if pred_frames.shape != (t - 2,) + gt_frames.shape[1:]:
        raise ValueError(f"{name}: predictions {pred_frames.shape} do not fit annotations {gt_frames.shape}")
    num_objects = count_objects(gt_frames[0])
    if num_objects == 0:
        raise ValueError(f"{name}: the first annotation has no objects")
    scores = [
        score_frame(gt, pred, num_objects, exclude_void, bound_th)
        for gt, pred in zip(gt_frames[1:-1], pred_frames)
    ]
    return _stack(name, [f"{i:05d}" for i in range(1, t - 1)], num_objects, scores)


def _stack(name: str, frames: list[str], num_objects: int, scores: list) -> SequenceScores:
    j = np.stack([s[0] for s in scores], axis=1)
    f = np.stack([s[1] for s in scores], axis=1)
    return SequenceScores(name, frames, list(range(1, num_objects + 1)), j, f)


def summarise_davis(sequences: Sequence[SequenceScores]) -> dict:
    """Per-object, per-sequence and dataset figures (percent) from raw sequence scores."""
    objects, raw_objects, rows, per_frame, unscored = [], [], [], {}, []
    for seq in sequences:
        seq_raw = []
        for i, obj in enumerate(seq.object_ids):
            scored = ~np.isnan(seq.j[i])  # NaN: frames before an entering object's first (vseg.metrics.entering)
            if not scored.any():
                unscored.append(f"{seq.name}_{obj}")
                continue
            jm, jr, jd = object_statistics(seq.j[i][scored])
            fm, fr, fd = object_statistics(seq.f[i][scored])
            raw = {"J-Mean": jm, "J-Recall": jr, "J-Decay": jd, "F-Mean": fm, "F-Recall": fr, "F-Decay": fd}
            seq_raw.append(raw)
            objects.append({"name": f"{seq.name}_{obj}", "sequence": seq.name, "object": obj} | _percent(raw))
        raw_objects += seq_raw
        if not seq_raw:
            continue
        j_mean = float(np.mean([o["J-Mean"] for o in seq_raw]))
        f_mean = float(np.mean([o["F-Mean"] for o in seq_raw]))
        rows.append({"sequence": seq.name, "objects": len(seq_raw), "frames": len(seq.frames)})
        rows[-1] |= _percent({"J&F-Mean": (j_mean + f_mean) / 2, "J-Mean": j_mean, "F-Mean": f_mean})
        per_frame[seq.name] = {"frames": seq.frames, "objects": seq.object_ids, "J": seq.j, "F": seq.f}
    if not raw_objects:
        raise ValueError("no objects to summarise")
    # Dataset figures are means over ALL objects, not over sequences (the official csv).
    dataset = {m: float(np.mean([o[m] for o in raw_objects])) for m in MEASURES[1:]}
    dataset = {"J&F-Mean": (dataset["J-Mean"] + dataset["F-Mean"]) / 2} | dataset
    return {
        "protocol": "DAVIS-2017 semi-supervised",
        "num_sequences": len(rows),
        "num_objects": len(objects),
        "dataset": _percent(dataset),
        "sequences": rows,
        "objects": objects,
        "per_frame": per_frame,
    } | ({"unscored_objects": unscored} if unscored else {})


def _percent(raw: dict) -> dict:
    return {k: 100.0 * v for k, v in raw.items()}


# ---------------------------------------------------------------------------- folders


def evaluate_davis(
    pred_root: str | os.PathLike,
    gt_root: str | os.PathLike,
    sequences: Sequence[str] | None = None,
    on_sequence: Callable[[str, int, int], None] | None = None,
    subset: str = "val",
    exclude_void: bool = False,
    bound_th: float = DEFAULT_BOUND_TH,
) -> dict:
    """Evaluate a folder of predicted masks against DAVIS annotations.

    gt_root: a folder of sequence folders (``<seq>/00000.png``...), or a DAVIS root holding
    ``Annotations/480p`` (then, with no ``sequences``, the list in
    ``ImageSets/2017/<subset>.txt`` is used when present). pred_root: the same layout.
    Every annotated frame but the first and last needs a prediction of the same size.
    on_sequence(name, done, total) is called after each sequence (for a progress bar).
    Returns :func:`summarise_davis`'s dict (scores in percent, raw per-frame J/F in 0..1)
    plus the folders and options used.
    """
    ann_root, pred_root, scored = score_folders(
        pred_root, gt_root, sequences, subset, on_sequence,
        lambda gt_dir, pred_dir: _score_sequence_folder(gt_dir, pred_dir, exclude_void, bound_th))
    result = {"annotations": str(ann_root), "predictions": str(pred_root)}
    result |= {"bound_th": bound_th, "exclude_void": exclude_void}
    return result | summarise_davis(scored)


def score_folders(pred_root: str | os.PathLike, gt_root: str | os.PathLike, sequences: Sequence[str] | None,
                  subset: str | None, on_sequence: Callable[[str, int, int], None] | None,
                  score_one: Callable[[Path, Path], SequenceScores]) -> tuple[Path, Path, list[SequenceScores]]:
    """Score each sequence folder with score_one(annotation dir, prediction dir); the folders
    and names as :func:`evaluate_davis` finds them. Returns (annotation root, prediction root, scores)."""
    ann_root, listed = _resolve_annotations(Path(gt_root), subset)
    pred_root = Path(pred_root)
    if not pred_root.is_dir():
        raise InputError(f"{pred_root}: no such prediction folder")
    names = list(sequences) if sequences is not None else listed
    if names is None:
        names = sorted(d.name for d in ann_root.iterdir() if d.is_dir() and any(d.glob("*.png")))
    if not names:
        raise InputError(f"{ann_root}: no sequence folders with PNG annotations")
    scored = []
    for done, name in enumerate(names, start=1):
        scored.append(score_one(ann_root / name, pred_root / name))
        if on_sequence is not None:
            on_sequence(name, done, len(names))
    return ann_root, pred_root, scored


def _resolve_annotations(gt_root: Path, subset: str | None) -> tuple[Path, list[str] | None]:
    """(folder of sequence folders, sequence list from ImageSets or None)."""
    if not gt_root.is_dir():
        raise InputError(f"{gt_root}: no such annotation folder")
    if (gt_root / "Annotations" / "480p").is_dir():
        ann_root, davis_root = gt_root / "Annotations" / "480p", gt_root
    elif gt_root.name == "Annotations" and (gt_root / "480p").is_dir():
        ann_root, davis_root = gt_root / "480p", gt_root.parent
    else:
        return gt_root, None
    listing = davis_root / "ImageSets" / "2017" / f"{subset}.txt"
    if not subset or not listing.is_file():
        return ann_root, None
    names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    return ann_root, names


def _score_sequence_folder(gt_dir: Path, pred_dir: Path, exclude_void: bool, bound_th: float) -> SequenceScores:
    """Read and score one sequence frame by frame (only two masks in memory at a time)."""
    gt_paths = annotation_paths(gt_dir, pred_dir)
    first = read_mask(gt_paths[0])[0]
    num_objects = count_objects(first)
    if num_objects == 0:
        raise InputError(f"{gt_paths[0]}: the first annotation has no objects")
    shown_first = set(np.unique(first).tolist())
    scores = []
    for gt_path in gt_paths[1:-1]:
        gt_ids = read_mask(gt_path)[0]
        if gt_ids.shape != first.shape:
            raise InputError(f"{gt_path}: size {_size(gt_ids)} differs from {gt_paths[0].name}'s {_size(first)}")
        entering = sorted(set(np.unique(gt_ids).tolist()) - shown_first - {VOID_ID})
        if entering:  # DAVIS would score them as absent, or not at all: say so instead
            raise InputError(f"{gt_path}: object id(s) {entering} are not in the first annotation; "
                             f"score objects that enter later with --late-objects")
        pred_ids = read_prediction(pred_dir, gt_path, gt_ids)
        scores.append(score_frame(gt_ids, pred_ids, num_objects, exclude_void, bound_th))
    return _stack(gt_dir.name, [p.stem for p in gt_paths[1:-1]], num_objects, scores)


def annotation_paths(gt_dir: Path, pred_dir: Path) -> list[Path]:
    """The annotation PNGs of one sequence (3 or more), its prediction folder checked to exist."""
    if not gt_dir.is_dir():
        raise InputError(f"{gt_dir}: no such sequence in the annotations")
    gt_paths = sorted(gt_dir.glob("*.png"))
    if len(gt_paths) < 3:
        raise InputError(
            f"{gt_dir}: {len(gt_paths)} annotated frames; the first and last are not scored, need >= 3"
        )
    if not pred_dir.is_dir():
        raise InputError(f"{pred_dir}: no prediction folder for sequence {gt_dir.name}")
    return gt_paths


def read_prediction(pred_dir: Path, gt_path: Path, gt_ids: np.ndarray) -> np.ndarray:
    """The predicted ids for the annotated frame ``gt_path`` (same name, same size as gt_ids)."""
    pred_path = pred_dir / gt_path.name
    if not pred_path.is_file():
        raise InputError(f"{pred_path}: missing prediction for annotated frame {gt_path.stem}")
    pred_ids = read_mask(pred_path)[0]
    if pred_ids.shape != gt_ids.shape:
        raise InputError(f"{pred_path}: size {_size(pred_ids)} differs from the annotation's {_size(gt_ids)}")
    return pred_ids


def _size(ids: np.ndarray) -> str:
    return f"{ids.shape[1]}x{ids.shape[0]}"


def format_davis_table(result: dict) -> str:
    """Per-sequence table, the dataset figures, and a last line ``J&F x  J y  F z``.

    Scores are percentages with 2 decimals.
    """
    rows = [
        [r["sequence"], str(r["objects"]), str(r["frames"])]
        + [format_number(r[m]) for m in ("J&F-Mean", "J-Mean", "F-Mean")]
        for r in result["sequences"]
    ]
    per_sequence = format_table(["Sequence", "Objects", "Frames", "J&F", "J-Mean", "F-Mean"], rows)
    data = result["dataset"]
    overall_row = [str(result["num_objects"])] + [format_number(data[m]) for m in MEASURES]
    overall = format_table(["Objects", *MEASURES], [overall_row])
    last = f"J&F {data['J&F-Mean']:.2f}  J {data['J-Mean']:.2f}  F {data['F-Mean']:.2f}"
    return "\n".join([per_sequence, "", overall, "", last])
