"""Where a VOS prediction goes wrong, pixel by pixel.

J says how much of a target's mask is wrong, not what the wrong pixels are. For one target in
one frame, :func:`attribute_errors` sorts them:

- missed target pixels: labelled background, or labelled another target;
- false pixels (predicted as the target, not the target): on an unannotated look-alike
  (a distractor, when the caller knows where they are), on another target, or on background,
  the last split into *near* (within ``near_radius`` pixels of the target's true mask: a
  boundary or a lag) and *far* (somewhere else in the picture: the target was lost).

The synthetic generator knows every distractor's pixels (``vos_scene.render_masks``), so the
benchmark ``benchmarks/vos_error_breakdown.py`` can tell a model that follows a look-alike
from one that marks empty background.
"""

from __future__ import annotations

import numpy as np

from vseg.metrics.frame_jf import dilate_disk

ERROR_KINDS = ("missed_as_background", "missed_as_other_target", "false_on_distractor",
               "false_on_other_target", "false_near_target", "false_far_away")


def attribute_errors(gt: np.ndarray, pred: np.ndarray, target: int, distractor: np.ndarray | None = None,
                     near_radius: int = 4) -> dict[str, int]:
    """Sort one target's wrong pixels in one frame.

    gt, pred: [H, W] integer ids (0 = background); target: the id scored; distractor: bool
    [H, W], the pixels of unannotated objects (None: unknown, counted as background).
    near_radius: pixels from the target's true mask within which a false background pixel
    counts as near. Returns {"true_positive", "target_pixels", *ERROR_KINDS} as int pixel
    counts; the two missed kinds add up to target_pixels - true_positive, the four false kinds
    to the false pixels.
    """
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.shape != pred.shape or gt.ndim != 2:
        raise ValueError(f"gt and pred must be the same [H, W], got {gt.shape} and {pred.shape}")
    truth, marked = gt == target, pred == target
    if distractor is None:
        distractor = np.zeros(gt.shape, bool)
    missed = truth & ~marked
    false = marked & ~truth
    on_other = false & (gt != 0)
    on_distractor = false & ~on_other & distractor
    on_background = false & ~on_other & ~distractor
    near = dilate_disk(truth, near_radius) if truth.any() else np.zeros(gt.shape, bool)
    return {
        "true_positive": int((truth & marked).sum()),
        "target_pixels": int(truth.sum()),
        "missed_as_background": int((missed & (pred == 0)).sum()),
        "missed_as_other_target": int((missed & (pred != 0)).sum()),
        "false_on_distractor": int(on_distractor.sum()),
        "false_on_other_target": int(on_other.sum()),
        "false_near_target": int((on_background & near).sum()),
        "false_far_away": int((on_background & ~near).sum()),
    }
