"""J and F of one frame, the measures of the DAVIS-2017 protocol (:mod:`vseg.metrics.davis`,
whose docstring states them): region Jaccard, one-pixel boundaries, the boundary tolerance and
its disk dilation, boundary precision / recall / F-measure, and all objects of a frame at once.
"""

from __future__ import annotations

import math

import numpy as np

VOID_ID = 255
DEFAULT_BOUND_TH = 0.008


def boundary_tolerance(height: int, width: int, bound_th: float = DEFAULT_BOUND_TH) -> int:
    """Boundary tolerance in pixels: ceil(bound_th * diagonal), or bound_th itself when >= 1."""
    if bound_th >= 1:
        if bound_th != int(bound_th):
            raise ValueError(f"a tolerance in pixels must be a whole number, got {bound_th}")
        return int(bound_th)
    # sqrt of the exact integer sum, as numpy's norm of the shape computes it
    return int(math.ceil(bound_th * math.sqrt(height * height + width * width)))


def mask_boundary(mask: np.ndarray) -> np.ndarray:
    """One-pixel boundary of a binary mask [H, W] -> bool [H, W].

    A pixel is on the boundary when it differs from its right, lower or lower-right
    neighbour; a neighbour outside the image never differs. The boundary therefore sits on
    the top/left side of each edge, half a pixel towards the origin.
    """
    mask = np.asarray(mask, bool)
    edge = np.zeros(mask.shape, bool)
    edge[:, :-1] |= mask[:, :-1] != mask[:, 1:]
    edge[:-1, :] |= mask[:-1, :] != mask[1:, :]
    edge[:-1, :-1] |= mask[:-1, :-1] != mask[1:, 1:]
    return edge


def dilate_disk(binary: np.ndarray, radius: int) -> np.ndarray:
    """Dilate a binary image [H, W] by the disk dx^2 + dy^2 <= radius^2 -> bool [H, W].

    Pixels outside the image count as unset. The disk is a stack of horizontal runs (row dy
    spans |dx| <= isqrt(r^2 - dy^2)); each run is a window sum over a row prefix sum, so
    the cost is about (2r + 1) vector passes over the image whatever the content.
    """
    binary = np.asarray(binary, bool)
    if radius <= 0:
        return binary.copy()
    h, w = binary.shape
    r = int(radius)
    padded = np.zeros((h + 2 * r, w + 2 * r), np.int32)
    padded[r : r + h, r : r + w] = binary
    prefix = np.zeros((h + 2 * r, w + 2 * r + 1), np.int32)  # prefix[:, k] = sum of columns < k
    np.cumsum(padded, axis=1, out=prefix[:, 1:])
    out = np.zeros((h, w), bool)
    row_runs: dict[int, np.ndarray] = {}  # half-width -> horizontally dilated padded rows
    for dy in range(-r, r + 1):
        half = math.isqrt(r * r - dy * dy)
        if half not in row_runs:
            window = prefix[:, r + half + 1 : r + half + 1 + w] - prefix[:, r - half : r - half + w]
            row_runs[half] = window > 0
        out |= row_runs[half][r + dy : r + dy + h]
    return out


def boundary_precision_recall(
    gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None, bound_th: float = DEFAULT_BOUND_TH
) -> tuple[float, float]:
    """Boundary precision and recall of binary masks gt, pred [H, W] (void [H, W] bool or None)."""
    gt = np.asarray(gt, bool)
    pred = np.asarray(pred, bool)
    if gt.shape != pred.shape:
        raise ValueError(f"mask shapes differ: {gt.shape} vs {pred.shape}")
    if void is not None:
        keep = ~np.asarray(void, bool)
        gt, pred = gt & keep, pred & keep
    gt_edge, pred_edge = mask_boundary(gt), mask_boundary(pred)
    n_gt, n_pred = int(np.count_nonzero(gt_edge)), int(np.count_nonzero(pred_edge))
    if n_gt == 0 or n_pred == 0:  # the official conventions for empty boundaries
        return (1.0 if n_pred == 0 else 0.0), (1.0 if n_gt == 0 else 0.0)
    # Matches only happen near boundary pixels: work inside their common bounding box.
    either = gt_edge | pred_edge
    rows = np.flatnonzero(either.any(axis=1))
    cols = np.flatnonzero(either.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    gt_edge, pred_edge = gt_edge[box], pred_edge[box]
    radius = boundary_tolerance(gt.shape[0], gt.shape[1], bound_th)
    pred_hits = np.count_nonzero(pred_edge & dilate_disk(gt_edge, radius))
    gt_hits = np.count_nonzero(gt_edge & dilate_disk(pred_edge, radius))
    return pred_hits / n_pred, gt_hits / n_gt


def boundary_f_measure(
    gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None, bound_th: float = DEFAULT_BOUND_TH
) -> float:
    """Boundary F = 2PR / (P + R) of binary masks [H, W]; 0 when P + R == 0."""
    precision, recall = boundary_precision_recall(gt, pred, void, bound_th)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def region_jaccard(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None) -> float:
    """IoU of binary masks gt, pred [H, W], void pixels left out; 1 when the union is empty."""
    gt = np.asarray(gt, bool)
    pred = np.asarray(pred, bool)
    keep = np.ones(gt.shape, bool) if void is None else ~np.asarray(void, bool)
    union = np.count_nonzero((gt | pred) & keep)
    return 1.0 if union == 0 else np.count_nonzero(gt & pred & keep) / union


def score_frame(
    gt_ids: np.ndarray,
    pred_ids: np.ndarray,
    num_objects: int,
    exclude_void: bool = False,
    bound_th: float = DEFAULT_BOUND_TH,
) -> tuple[np.ndarray, np.ndarray]:
    """J and F of objects 1..num_objects in one frame -> (j [N] float64, f [N] float64).

    gt_ids, pred_ids: [H, W] integer id masks. Ids above num_objects (and GT void, 255) are
    background for every object; with ``exclude_void`` GT void pixels are left out instead.
    """
    gt_ids, pred_ids = np.asarray(gt_ids), np.asarray(pred_ids)
    if gt_ids.shape != pred_ids.shape:
        raise ValueError(f"mask shapes differ: {gt_ids.shape} vs {pred_ids.shape}")
    k = num_objects + 1
    gt_obj = np.where(gt_ids < k, gt_ids, 0).astype(np.intp)
    pred_obj = np.where(pred_ids < k, pred_ids, 0).astype(np.intp)
    void = (gt_ids == VOID_ID) if exclude_void else None
    flat = gt_obj * k + pred_obj
    counted = flat if void is None else flat[~void]
    overlap = np.bincount(counted.ravel(), minlength=k * k).reshape(k, k)  # [gt id, pred id]
    inter = np.diag(overlap)[1:]
    gt_area, pred_area = overlap.sum(axis=1)[1:], overlap.sum(axis=0)[1:]
    union = gt_area + pred_area - inter
    j = np.where(union == 0, 1.0, inter / np.maximum(union, 1))
    f = np.ones(num_objects)
    for i in range(num_objects):
        if gt_area[i] or pred_area[i]:  # both empty: both boundaries empty, F = 1
            f[i] = boundary_f_measure(gt_obj == i + 1, pred_obj == i + 1, void, bound_th)
    return j, f
