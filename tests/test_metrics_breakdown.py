"""attribute_errors against a hand-worked frame and against its own bookkeeping."""

from __future__ import annotations

import numpy as np
import pytest

from vseg.metrics.breakdown import ERROR_KINDS, attribute_errors


def hand_worked_frame():
    """10x10: target 1 is rows 2-4 x cols 2-4 (9 px), target 2 rows 7-8 x cols 7-8, a distractor
    rows 0-1 x cols 7-9. The prediction moves target 1 down by a row and scatters it."""
    gt = np.zeros((10, 10), np.uint8)
    gt[2:5, 2:5] = 1
    gt[7:9, 7:9] = 2
    distractor = np.zeros((10, 10), bool)
    distractor[0:2, 7:10] = True
    pred = np.zeros_like(gt)
    pred[3:6, 2:5] = 1   # rows 3-4 right (6 px), row 5 false but next to the target (3 px)
    pred[2, 2:5] = 2     # the top row given to target 2 (3 px)
    pred[4, 4] = 0       # one pixel missed as background
    pred[0, 9] = 1       # on the distractor
    pred[7, 7] = 1       # on target 2
    pred[9, 0] = 1       # 5 rows below the target: far away with radius 4
    return gt, pred, distractor


def test_hand_worked_frame():
    gt, pred, distractor = hand_worked_frame()
    assert attribute_errors(gt, pred, 1, distractor) == {
        "true_positive": 5, "target_pixels": 9,
        "missed_as_background": 1, "missed_as_other_target": 3,
        "false_on_distractor": 1, "false_on_other_target": 1, "false_near_target": 3, "false_far_away": 1,
    }


def test_near_radius_is_a_disk_of_that_radius():
    gt, pred, distractor = hand_worked_frame()
    pred[8, 2] = 1  # 4 rows below the target's last row: near with radius 4, far with 3
    assert attribute_errors(gt, pred, 1, distractor, near_radius=4)["false_near_target"] == 4
    counts = attribute_errors(gt, pred, 1, distractor, near_radius=3)
    assert (counts["false_near_target"], counts["false_far_away"]) == (3, 2)


def test_unknown_distractors_count_as_background():
    gt, pred, _ = hand_worked_frame()
    counts = attribute_errors(gt, pred, 1)
    assert counts["false_on_distractor"] == 0
    assert counts["false_far_away"] == 2  # the distractor pixel (0, 9) is 5 columns from the target


def test_absent_target_makes_every_marked_pixel_false_and_far():
    gt = np.zeros((6, 6), np.uint8)
    pred = np.zeros_like(gt)
    pred[1:3, 1:3] = 3
    counts = attribute_errors(gt, pred, 3)
    assert counts["target_pixels"] == 0 and counts["false_far_away"] == 4


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kinds_partition_the_wrong_pixels(seed):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, 4, (24, 31)).astype(np.uint8)
    pred = rng.integers(0, 4, (24, 31)).astype(np.uint8)
    distractor = rng.random((24, 31)) < 0.2
    for target in (1, 2, 3):
        c = attribute_errors(gt, pred, target, distractor, near_radius=2)
        assert set(ERROR_KINDS) <= set(c)
        assert c["missed_as_background"] + c["missed_as_other_target"] == c["target_pixels"] - c["true_positive"]
        false = sum(c[k] for k in ERROR_KINDS if k.startswith("false"))
        assert false == int((pred == target).sum()) - c["true_positive"]


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="same"):
        attribute_errors(np.zeros((4, 4)), np.zeros((4, 5)), 1)
