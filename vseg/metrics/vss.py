"""Video semantic segmentation accuracy: a confusion matrix, per-class IoU and mIoU.

Rows of the matrix are true classes, columns predicted classes. Pixels whose true label is
``ignore_index`` (255 by default, the Cityscapes/CamVid "void") are not counted, whatever
was predicted there. A class absent from both truth and prediction has no IoU (NaN) and is
left out of the mean.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vseg.data.palette import read_mask
from vseg.errors import InputError
from vseg.metrics.report import format_number, format_table


class ConfusionMatrix:
    """Accumulates a [num_classes, num_classes] int64 confusion matrix (row: truth, column: prediction)."""

    def __init__(self, num_classes: int, ignore_index: int | None = 255):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.matrix = np.zeros((self.num_classes, self.num_classes), np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add one prediction/truth pair of integer label arrays of the same shape (any rank)."""
        pred, gt = np.asarray(pred), np.asarray(gt)
        if pred.shape != gt.shape:
            raise ValueError(f"prediction shape {pred.shape} differs from truth shape {gt.shape}")
        if self.ignore_index is not None:
            keep = gt != self.ignore_index
            pred, gt = pred[keep], gt[keep]
        gt = gt.astype(np.int64).ravel()
        pred = pred.astype(np.int64).ravel()
        n = self.num_classes
        for name, labels in (("truth", gt), ("prediction", pred)):
            if labels.size and (labels.min() < 0 or labels.max() >= n):
                bad = labels[(labels < 0) | (labels >= n)][0]
                raise ValueError(f"{name} label {bad} is outside 0..{n - 1}")
        self.matrix += np.bincount(gt * n + pred, minlength=n * n).reshape(n, n)

    def iou(self) -> np.ndarray:
        """Per-class IoU [num_classes] float64 in 0..1: TP / (TP + FP + FN); NaN if the class never occurs."""
        tp = np.diag(self.matrix).astype(np.float64)
        denom = self.matrix.sum(axis=0) + self.matrix.sum(axis=1) - tp
        out = np.full(self.num_classes, np.nan)
        np.divide(tp, denom, out=out, where=denom > 0)
        return out

    def miou(self) -> float:
        """Mean IoU over the classes that occur (NaN when none does)."""
        iou = self.iou()
        return float(np.mean(iou[~np.isnan(iou)])) if (~np.isnan(iou)).any() else float("nan")

    def pixel_accuracy(self) -> float:
        """Share of counted pixels labelled correctly (NaN when nothing was counted)."""
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else float("nan")

    def class_accuracy(self) -> np.ndarray:
        """Per-class recall [num_classes]: TP / true pixels of the class; NaN if it has none."""
        true = self.matrix.sum(axis=1)
        out = np.full(self.num_classes, np.nan)
        np.divide(np.diag(self.matrix).astype(np.float64), true, out=out, where=true > 0)
        return out


def evaluate_vss(
    pred_root: str | os.PathLike,
    gt_root: str | os.PathLike,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    ignore_index: int = 255,
) -> dict:
    """Compare every PNG label map under gt_root with the PNG at the same relative path under pred_root.

    Folders are searched recursively; predictions with no ground truth are not counted.
    num_classes defaults to len(class_names), else to the largest label seen + 1. A missing
    prediction, a size mismatch or a label outside the classes is an :class:`InputError`.
    Returns per-class IoU, mIoU, pixel accuracy (all in percent) and the raw matrix.
    """
    gt_root, pred_root = Path(gt_root), Path(pred_root)
    for root, what in ((gt_root, "ground-truth"), (pred_root, "prediction")):
        if not root.is_dir():
            raise InputError(f"{root}: no such {what} folder")
    gt_paths = sorted(gt_root.rglob("*.png"))
    if not gt_paths:
        raise InputError(f"{gt_root}: no PNG label maps found")
    if num_classes is None and class_names is not None:
        num_classes = len(class_names)
    if class_names is not None and len(class_names) != num_classes:
        raise InputError(f"{len(class_names)} class names given for {num_classes} classes")
    # Ids are uint8, so a 256-class matrix holds any input; it is cut down at the end.
    limit = num_classes if num_classes is not None else 256
    confusion = ConfusionMatrix(256, ignore_index=ignore_index)
    for gt_path in gt_paths:
        rel = gt_path.relative_to(gt_root)
        pred_path = pred_root / rel
        if not pred_path.is_file():
            raise InputError(f"{pred_path}: missing prediction for {rel.as_posix()}")
        gt, pred = read_mask(gt_path)[0], read_mask(pred_path)[0]
        if pred.shape != gt.shape:
            raise InputError(
                f"{pred_path}: size {pred.shape[1]}x{pred.shape[0]} differs from the ground truth's "
                f"{gt.shape[1]}x{gt.shape[0]}"
            )
        valid = gt != ignore_index
        if (pred[valid] == ignore_index).any():
            raise InputError(f"{pred_path}: predicts the ignore label {ignore_index} on labelled pixels")
        for path, labels in ((gt_path, gt[valid]), (pred_path, pred[valid])):
            if labels.size and int(labels.max()) >= limit:
                raise InputError(f"{path}: label {int(labels.max())} is outside the classes 0..{limit - 1}")
        confusion.update(pred, gt)
    if num_classes is None:
        seen = np.flatnonzero(confusion.matrix.sum(axis=0) + confusion.matrix.sum(axis=1))
        num_classes = int(seen[-1]) + 1 if seen.size else 1
    trimmed = ConfusionMatrix(num_classes, ignore_index=ignore_index)
    trimmed.matrix = confusion.matrix[:num_classes, :num_classes].copy()
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    iou = trimmed.iou()
    return {
        "ground_truth": str(gt_root),
        "predictions": str(pred_root),
        "num_images": len(gt_paths),
        "num_classes": num_classes,
        "ignore_index": ignore_index,
        "classes": [{"id": i, "name": names[i], "IoU": 100.0 * iou[i]} for i in range(num_classes)],
        "mIoU": 100.0 * trimmed.miou(),
        "pixel_accuracy": 100.0 * trimmed.pixel_accuracy(),
        "confusion": trimmed.matrix,
    }


def format_vss_table(result: dict) -> str:
    """Per-class IoU table (percent, 2 decimals; ``-`` for absent classes), then ``mIoU <x>`` last."""
    rows = [[str(c["id"]), c["name"], format_number(c["IoU"])] for c in result["classes"]]
    table = format_table(["Id", "Class", "IoU"], rows)
    accuracy = f"pixel accuracy {format_number(result['pixel_accuracy'])}"
    return "\n".join([table, "", accuracy, f"mIoU {format_number(result['mIoU'])}"])
