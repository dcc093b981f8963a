"""Accuracy metrics: DAVIS J/F (hand-worked cases and an independent reference) and VSS mIoU."""

from __future__ import annotations

import json
import math
import re
from fractions import Fraction

import numpy as np
import pytest

from vseg.data.palette import write_mask
from vseg.errors import InputError
from vseg.jsonio import write_json
from vseg.metrics.davis import decay_bins, evaluate_davis, format_davis_table, object_statistics, score_sequence
from vseg.metrics.frame_jf import (
    boundary_f_measure,
    boundary_precision_recall,
    boundary_tolerance,
    dilate_disk,
    mask_boundary,
    region_jaccard,
    score_frame,
)
from vseg.metrics.vss import ConfusionMatrix, evaluate_vss, format_vss_table

# ------------------------------------------------------------------ independent reference
# Written differently on purpose: explicit pixel loops for the boundary, brute-force
# nearest-boundary distances instead of a dilation, exact fractions for the decay bins.


def ref_boundary(mask: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    out = np.zeros((h, w), bool)
    for y in range(h):
        for x in range(w):
            for dy, dx in ((0, 1), (1, 0), (1, 1)):
                if y + dy < h and x + dx < w and mask[y + dy, x + dx] != mask[y, x]:
                    out[y, x] = True
    return out


def ref_f(gt: np.ndarray, pred: np.ndarray) -> float:
    radius = math.ceil(0.008 * math.hypot(*gt.shape))
    gt_pts, pred_pts = np.argwhere(ref_boundary(gt)), np.argwhere(ref_boundary(pred))
    if len(gt_pts) == 0 or len(pred_pts) == 0:
        precision = 1.0 if len(pred_pts) == 0 else 0.0
        recall = 1.0 if len(gt_pts) == 0 else 0.0
    else:
        dist2 = ((pred_pts[:, None, :] - gt_pts[None, :, :]) ** 2).sum(axis=-1)
        within = dist2 <= radius * radius
        precision = within.any(axis=1).sum() / len(pred_pts)
        recall = within.any(axis=0).sum() / len(gt_pts)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def ref_j(gt: np.ndarray, pred: np.ndarray) -> float:
    inter = sum(1 for a, b in zip(gt.ravel(), pred.ravel()) if a and b)
    union = sum(1 for a, b in zip(gt.ravel(), pred.ravel()) if a or b)
    return 1.0 if union == 0 else inter / union


def ref_stats(values: list[float]) -> tuple[float, float, float]:
    n = len(values)
    # edge i = round-half-up(1 + i (n - 1) / 4) - 1, bins inclusive at both ends
    edges = [math.floor(1 + Fraction(i * (n - 1), 4) + Fraction(1, 2)) - 1 for i in range(5)]
    first = values[edges[0] : edges[1] + 1]
    last = values[edges[3] : edges[4] + 1]
    decay = sum(first) / len(first) - sum(last) / len(last)
    return sum(values) / n, sum(v > 0.5 for v in values) / n, decay


def random_ids(rng: np.random.Generator, h: int, w: int, num_objects: int) -> np.ndarray:
    """Blobs: a few random ellipses per object id on a zero background."""
    yy, xx = np.mgrid[:h, :w]
    ids = np.zeros((h, w), np.uint8)
    for obj in range(1, num_objects + 1):
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            ry, rx = rng.uniform(1, h / 3), rng.uniform(1, w / 3)
            ids[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = obj
    return ids


def perturb(rng: np.random.Generator, ids: np.ndarray, num_objects: int) -> np.ndarray:
    """A plausible wrong prediction: shifted copy, extra blobs, sometimes an object dropped."""
    pred = np.roll(ids, (rng.integers(-3, 4), rng.integers(-3, 4)), axis=(0, 1))
    extra = random_ids(rng, *ids.shape, num_objects)
    pred = np.where(rng.random(ids.shape) < 0.02, extra, pred)
    pred[extra == 1] = rng.integers(0, num_objects + 1)
    if rng.random() < 0.3:
        pred[pred == rng.integers(1, num_objects + 1)] = 0
    return pred


# ------------------------------------------------------------------ frame-level, hand-worked


def square(h: int, w: int, top: int, left: int, size: int) -> np.ndarray:
    mask = np.zeros((h, w), bool)
    mask[top : top + size, left : left + size] = True
    return mask


def test_tolerance_is_ceil_of_diagonal_fraction():
    assert boundary_tolerance(480, 854) == 8  # 0.008 * 979.65 = 7.84
    assert boundary_tolerance(10, 10) == 1
    assert boundary_tolerance(150, 201) == 3  # 0.008 * 250.8 = 2.006
    assert boundary_tolerance(10, 10, bound_th=4) == 4


def test_boundary_edge_rules():
    # Only right, lower and lower-right neighbours count; outside the image never differs.
    mask = np.zeros((4, 5), bool)
    mask[0:2, 4] = True  # touches the right edge
    assert sorted(map(tuple, np.argwhere(mask_boundary(mask)))) == [(0, 3), (1, 3), (1, 4)]
    assert not mask_boundary(np.ones((6, 7), bool)).any()  # a full frame has no boundary
    # a 3x3 square's boundary is the perimeter of the 4x4 block one pixel up-left of its far corner
    ring = square(10, 10, 2, 2, 4) & ~square(10, 10, 3, 3, 2)
    assert (mask_boundary(square(10, 10, 3, 3, 3)) == ring).all()


def test_disk_shape():
    point = np.zeros((9, 9), bool)
    point[4, 4] = True
    plus = np.zeros((9, 9), bool)
    plus[4, 3:6] = plus[3:6, 4] = True
    assert (dilate_disk(point, 1) == plus).all()  # radius 1: no diagonals (a disk, not a square)
    disk2 = dilate_disk(point, 2)
    assert disk2.sum() == 13  # rows dy=0: 5, dy=+-1: 3 each, dy=+-2: 1 each
    assert disk2[2, 4] and not disk2[2, 3] and disk2[3, 3] and not disk2[3, 2]


@pytest.mark.parametrize("radius", [1, 2, 3, 5, 8])
def test_dilation_matches_explicit_disk(radius):
    rng = np.random.default_rng(radius)
    image = rng.random((31, 47)) < 0.03
    expected = np.zeros_like(image)
    offsets = [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)
               if dy * dy + dx * dx <= radius * radius]  # fmt: skip
    for y, x in np.argwhere(image):
        for dy, dx in offsets:
            if 0 <= y + dy < 31 and 0 <= x + dx < 47:
                expected[y + dy, x + dx] = True
    assert (dilate_disk(image, radius) == expected).all()


def test_shift_by_two_pixels_hand_worked():
    # 10x10 image: tolerance ceil(0.008 * 14.14) = 1, disk = centre + 4 neighbours.
    # GT 3x3 square at rows/cols 3..5 -> boundary G = perimeter of rows 2..5 x cols 2..5 (12 px).
    # Prediction shifted 2 px right -> boundary P = perimeter of rows 2..5 x cols 4..7 (12 px).
    # P within 1 px of G: (2,4) (2,5) (2,6) (5,4) (5,5) (5,6) (3,4) (4,4) -> 8/12;
    #   out of reach: (2,7) (5,7) (3,7) (4,7).
    # G within 1 px of P: (2,3) (2,4) (2,5) (5,3) (5,4) (5,5) (3,5) (4,5) -> 8/12;
    #   out of reach: (2,2) (5,2) (3,2) (4,2).
    gt, pred = square(10, 10, 3, 3, 3), square(10, 10, 3, 5, 3)
    assert boundary_precision_recall(gt, pred) == (8 / 12, 8 / 12)
    assert boundary_f_measure(gt, pred) == pytest.approx(2 / 3, abs=1e-12)
    assert region_jaccard(gt, pred) == pytest.approx(3 / 15)  # overlap one column of 3, union 15


def test_one_pixel_shift_within_tolerance():
    gt, pred = square(10, 10, 3, 3, 3), square(10, 10, 3, 4, 3)
    assert boundary_f_measure(gt, pred) == 1.0  # every boundary pixel is 1 px from the other
    assert region_jaccard(gt, pred) == pytest.approx(6 / 12)


def test_diagonal_shift_shows_the_disk():
    # Shift by (1, 1): P = perimeter of rows 3..6 x cols 3..6. Only the far corner (6,6) of P
    # has its nearest G pixel (5,5) diagonally, at sqrt(2) > 1; likewise (2,2) of G. A square
    # structuring element would give F = 1.
    gt, pred = square(10, 10, 3, 3, 3), square(10, 10, 4, 4, 3)
    assert boundary_precision_recall(gt, pred) == (11 / 12, 11 / 12)


def test_single_pixel_prediction_precision_differs_from_recall():
    # pred = {(4,4)}: boundary {(3,3),(3,4),(4,3),(4,4)}, each 1 px from G -> precision 4/4.
    # G pixels near it: (2,3) (2,4) (3,2) (4,2) (5,3) (5,4) (3,5) (4,5); the four corners of
    # G are not -> recall 8/12. F = 2 * 1 * 2/3 / (5/3) = 4/5.
    gt, pred = square(10, 10, 3, 3, 3), square(10, 10, 4, 4, 1)
    assert boundary_precision_recall(gt, pred) == (1.0, 8 / 12)
    assert boundary_f_measure(gt, pred) == pytest.approx(0.8, abs=1e-12)


def test_empty_cases():
    empty, gt = np.zeros((12, 9), bool), square(12, 9, 2, 2, 4)
    assert region_jaccard(empty, empty) == 1.0 and boundary_f_measure(empty, empty) == 1.0
    assert boundary_precision_recall(gt, empty) == (1.0, 0.0)  # empty prediction
    assert boundary_precision_recall(empty, gt) == (0.0, 1.0)  # empty truth
    assert region_jaccard(gt, empty) == 0.0 and boundary_f_measure(gt, empty) == 0.0


def test_void_pixels_are_left_out_when_asked():
    gt = square(10, 10, 1, 1, 3)
    void = square(10, 10, 6, 6, 3)
    pred = gt | void  # extra prediction only inside the void region
    assert region_jaccard(gt, pred, void) == 1.0 and boundary_f_measure(gt, pred, void) == 1.0
    assert region_jaccard(gt, pred) == pytest.approx(9 / 18)


@pytest.mark.parametrize("shape", [(17, 23), (32, 45), (61, 40), (90, 97), (150, 201)])
def test_frame_scores_match_independent_reference(shape):
    rng = np.random.default_rng(sum(shape))
    for _ in range(4 if shape[0] < 100 else 2):
        gt = random_ids(rng, *shape, 3)
        pred = perturb(rng, gt, 3)
        j, f = score_frame(gt, pred, 3)
        for obj in range(1, 4):
            assert j[obj - 1] == pytest.approx(ref_j(gt == obj, pred == obj), abs=1e-12)
            assert f[obj - 1] == pytest.approx(ref_f(gt == obj, pred == obj), abs=1e-12)


# ------------------------------------------------------------------ object statistics


def test_decay_uses_official_overlapping_bins():
    # n = 8: linspace(1, 8, 5) = 1, 2.75, 4.5, 6.25, 8 -> edges 0, 2, 4, 5, 7 -> first bin frames
    # 0..2, last bin 5..7. Decay = mean(.9,.8,.7) - mean(.4,.3,.2) = .8 - .3 = .5 (four
    # disjoint bins of 2 frames would give .85 - .25 = .6 instead).
    values = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]
    assert decay_bins(8) == [(0, 3), (2, 5), (4, 6), (5, 8)]
    mean, recall, decay = object_statistics(np.array(values))
    assert mean == pytest.approx(0.55) and decay == pytest.approx(0.5)
    assert recall == pytest.approx(4 / 8)  # 0.5 itself is not a hit


def test_recall_is_strictly_above_half():
    assert object_statistics(np.array([0.5, 0.51, 0.9, 0.2]))[1] == 0.5
    assert object_statistics(np.array([1.0]))[2] == 0.0  # one frame: no decay


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 13, 50, 101])
def test_statistics_match_reference(n):
    values = list(np.random.default_rng(n).random(n))
    assert object_statistics(np.array(values)) == pytest.approx(ref_stats(values), abs=1e-12)


# ------------------------------------------------------------------ sequences and folders


def write_sequence(root, name, frames):
    for t, ids in enumerate(frames):
        write_mask(root / name / f"{t:05d}.png", ids)


def two_sequences(rng):
    """Sequence 'a': 2 objects, 6 frames of 24x32; 'b': 1 object, 5 frames of 20x26."""
    a = [random_ids(rng, 24, 32, 2) for _ in range(6)]
    a[0][0, 0], a[0][-1, -1] = 1, 2  # both objects present in the first frame
    b = [random_ids(rng, 20, 26, 1) for _ in range(5)]
    b[0][3, 3] = 1
    return {"a": a, "b": b}


def test_identical_masks_score_100(tmp_path):
    seqs = two_sequences(np.random.default_rng(1))
    for name, frames in seqs.items():
        write_sequence(tmp_path / "gt", name, frames)
        write_sequence(tmp_path / "pred", name, frames)
    seen = []
    result = evaluate_davis(tmp_path / "pred", tmp_path / "gt", on_sequence=lambda *a: seen.append(a))
    assert seen == [("a", 1, 2), ("b", 2, 2)]
    assert all(v == pytest.approx(100 if "Decay" not in k else 0) for k, v in result["dataset"].items())
    assert result["num_objects"] == 3 and result["sequences"][0]["frames"] == 4
    assert format_davis_table(result).splitlines()[-1] == "J&F 100.00  J 100.00  F 100.00"


def test_empty_prediction_scores_zero(tmp_path):
    gt = [square(24, 32, 5, 5, 8).astype(np.uint8) for _ in range(4)]
    write_sequence(tmp_path / "gt", "s", gt)
    write_sequence(tmp_path / "pred", "s", [np.zeros((24, 32), np.uint8)] * 4)
    data = evaluate_davis(tmp_path / "pred", tmp_path / "gt")["dataset"]
    assert data["J-Mean"] == 0 and data["F-Mean"] == 0 and data["J&F-Mean"] == 0


def test_first_and_last_frames_are_not_scored(tmp_path):
    gt = [square(24, 32, 4 + t, 6, 8).astype(np.uint8) for t in range(5)]
    write_sequence(tmp_path / "gt", "s", gt)
    write_sequence(tmp_path / "pred", "s", gt)
    write_mask(tmp_path / "pred" / "s" / "00004.png", np.zeros((24, 32), np.uint8))  # wrong last
    (tmp_path / "pred" / "s" / "00000.png").unlink()  # first one is not even needed
    result = evaluate_davis(tmp_path / "pred", tmp_path / "gt")
    assert result["dataset"]["J&F-Mean"] == 100.0
    assert result["per_frame"]["s"]["frames"] == ["00001", "00002", "00003"]


def test_means_are_over_all_objects_across_sequences(tmp_path):
    # a: object 1 exact, object 2 never predicted (J = F = 0); b: object 1 exact.
    # Over objects: (1 + 0 + 1) / 3 = 66.67; a mean over sequences would be (0.5 + 1) / 2 = 75.
    a = np.zeros((24, 32), np.uint8)
    a[2:8, 2:9], a[12:20, 15:25] = 1, 2
    b = square(20, 26, 4, 4, 7).astype(np.uint8)
    write_sequence(tmp_path / "gt", "a", [a] * 4)
    write_sequence(tmp_path / "gt", "b", [b] * 3)
    write_sequence(tmp_path / "pred", "a", [np.where(a == 2, 0, a)] * 4)
    write_sequence(tmp_path / "pred", "b", [b] * 3)
    result = evaluate_davis(tmp_path / "pred", tmp_path / "gt")
    assert result["dataset"]["J-Mean"] == pytest.approx(200 / 3)
    assert result["dataset"]["F-Mean"] == pytest.approx(200 / 3)
    assert result["dataset"]["J&F-Mean"] == pytest.approx(200 / 3)
    assert [r["J-Mean"] for r in result["sequences"]] == [50.0, 100.0]
    assert [o["name"] for o in result["objects"]] == ["a_1", "a_2", "b_1"]
    assert format_davis_table(result).splitlines()[-1] == "J&F 66.67  J 66.67  F 66.67"


def test_folder_evaluation_matches_independent_reference(tmp_path):
    rng = np.random.default_rng(7)
    seqs = two_sequences(rng)
    seqs["b"] = [np.where(f == 1, 3, f) for f in seqs["b"]]  # ids 1..3 from an id-3 first frame
    expected_objects = []
    for name, frames in seqs.items():
        num_objects = int(frames[0].max())
        preds = [perturb(rng, f, num_objects) for f in frames]
        write_sequence(tmp_path / "gt", name, frames)
        write_sequence(tmp_path / "pred", name, preds)
        for obj in range(1, num_objects + 1):
            pairs = [(g == obj, p == obj) for g, p in zip(frames[1:-1], preds[1:-1])]
            expected_objects.append(
                (ref_stats([ref_j(g, p) for g, p in pairs]), ref_stats([ref_f(g, p) for g, p in pairs]))
            )
    result = evaluate_davis(tmp_path / "pred", tmp_path / "gt")
    assert result["num_objects"] == len(expected_objects) == 5  # b's absent ids 1, 2 are objects
    for obj, (j_ref, f_ref) in zip(result["objects"], expected_objects):
        got = [obj[m] / 100 for m in ("J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")]
        assert got == pytest.approx([*j_ref, *f_ref], abs=1e-6)
    j_mean = np.mean([j[0] for j, _ in expected_objects])
    f_mean = np.mean([f[0] for _, f in expected_objects])
    assert result["dataset"]["J&F-Mean"] / 100 == pytest.approx((j_mean + f_mean) / 2, abs=1e-6)


def test_in_memory_sequence_matches_folder(tmp_path):
    rng = np.random.default_rng(3)
    frames = np.stack(two_sequences(rng)["a"])
    preds = np.stack([perturb(rng, f, 2) for f in frames])
    write_sequence(tmp_path / "gt", "a", frames)
    write_sequence(tmp_path / "pred", "a", preds)
    folder = evaluate_davis(tmp_path / "pred", tmp_path / "gt")["per_frame"]["a"]
    memory = score_sequence(frames, preds, name="a")
    assert np.array_equal(memory.j, folder["J"]) and np.array_equal(memory.f, folder["F"])
    assert np.array_equal(score_sequence(frames, preds[1:-1]).j, memory.j)


def test_void_is_background_by_default(tmp_path):
    gt = square(24, 32, 2, 2, 6).astype(np.uint8)
    gt[15:20, 20:28] = 255
    pred = np.where(gt == 255, 1, gt).astype(np.uint8)
    write_sequence(tmp_path / "gt", "s", [gt] * 3)
    write_sequence(tmp_path / "pred", "s", [pred] * 3)
    official = evaluate_davis(tmp_path / "pred", tmp_path / "gt")["dataset"]
    assert official["J-Mean"] == pytest.approx(100 * 36 / 76)  # 40 void pixels count as wrong
    excluded = evaluate_davis(tmp_path / "pred", tmp_path / "gt", exclude_void=True)["dataset"]
    assert excluded["J&F-Mean"] == 100.0


def test_davis_root_uses_image_set(tmp_path):
    frames = [square(24, 32, 3, 3, 5).astype(np.uint8)] * 3
    for name in ("bear", "cat"):
        write_sequence(tmp_path / "DAVIS" / "Annotations" / "480p", name, frames)
    (tmp_path / "DAVIS" / "ImageSets" / "2017").mkdir(parents=True)
    (tmp_path / "DAVIS" / "ImageSets" / "2017" / "val.txt").write_text("cat\n")
    write_sequence(tmp_path / "pred", "cat", frames)
    result = evaluate_davis(tmp_path / "pred", tmp_path / "DAVIS")
    assert [r["sequence"] for r in result["sequences"]] == ["cat"]
    result = evaluate_davis(tmp_path / "pred", tmp_path / "DAVIS" / "Annotations", sequences=["cat"])
    assert result["dataset"]["J&F-Mean"] == 100.0


def test_json_report_round_trip(tmp_path):
    frames = [square(24, 32, 3, 3, 5).astype(np.uint8)] * 4
    write_sequence(tmp_path / "gt", "s", frames)
    write_sequence(tmp_path / "pred", "s", frames)
    result = evaluate_davis(tmp_path / "pred", tmp_path / "gt")
    loaded = json.loads(write_json(tmp_path / "out" / "eval.json", result).read_text())
    assert loaded["dataset"]["J&F-Mean"] == 100.0
    assert loaded["per_frame"]["s"]["J"] == [[1.0, 1.0]]


@pytest.mark.parametrize("damage", ["no_folder", "missing_frame", "wrong_size", "unknown_sequence", "short"])
def test_user_errors_name_the_file(tmp_path, damage):
    frames = [square(24, 32, 3, 3, 5).astype(np.uint8)] * 4
    write_sequence(tmp_path / "gt", "s", frames)
    write_sequence(tmp_path / "pred", "s", frames)
    sequences, culprit = None, None
    if damage == "no_folder":
        culprit = tmp_path / "pred" / "t"
        write_sequence(tmp_path / "gt", "t", frames)
    elif damage == "missing_frame":
        culprit = tmp_path / "pred" / "s" / "00002.png"
        culprit.unlink()
    elif damage == "wrong_size":
        culprit = tmp_path / "pred" / "s" / "00001.png"
        write_mask(culprit, np.zeros((24, 30), np.uint8))
    elif damage == "unknown_sequence":
        sequences, culprit = ["nope"], tmp_path / "gt" / "nope"
    else:
        culprit = tmp_path / "gt" / "u"
        write_sequence(culprit.parent, "u", frames[:2])
        write_sequence(tmp_path / "pred", "u", frames[:2])
    with pytest.raises(InputError) as err:
        evaluate_davis(tmp_path / "pred", tmp_path / "gt", sequences=sequences)
    assert str(culprit) in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------ VSS confusion matrix


def test_confusion_matrix_hand_worked():
    # pairs (gt, pred): (0,0) (0,0) (0,1) (1,1) (1,2) (2,2) (2,0); the last pixel is ignored.
    # class 0: TP 2, FN 1, FP 1 -> 2/4; class 1: TP 1, FN 1, FP 1 -> 1/3; class 2: 1/3.
    gt = np.array([[0, 0, 0, 1], [1, 2, 2, 255]])
    pred = np.array([[0, 0, 1, 1], [2, 2, 0, 1]])
    cm = ConfusionMatrix(3)
    cm.update(pred, gt)
    assert cm.matrix.tolist() == [[2, 1, 0], [0, 1, 1], [1, 0, 1]]
    assert cm.iou() == pytest.approx([0.5, 1 / 3, 1 / 3])
    assert cm.miou() == pytest.approx(7 / 18)
    assert cm.pixel_accuracy() == pytest.approx(4 / 7)
    four = ConfusionMatrix(4)
    four.update(pred, gt)
    assert np.isnan(four.iou()[3]) and four.miou() == pytest.approx(7 / 18)  # absent class left out


def test_confusion_matrix_ignore_and_range():
    cm = ConfusionMatrix(2, ignore_index=255)
    cm.update(np.array([1, 0, 7]), np.array([1, 1, 255]))  # pred 7 sits on an ignored pixel
    assert cm.matrix.tolist() == [[0, 0], [1, 1]]
    assert cm.iou().tolist() == [0.0, 0.5]  # class 0 predicted but never true: IoU 0, not NaN
    with pytest.raises(ValueError):
        cm.update(np.array([2]), np.array([0]))


def test_evaluate_vss_folders(tmp_path):
    gt = np.array([[0, 0, 0, 1], [1, 2, 2, 255]], np.uint8)
    pred = np.array([[0, 0, 1, 1], [2, 2, 0, 1]], np.uint8)
    for root, ids in (("gt", gt), ("pred", pred)):
        write_mask(tmp_path / root / "city" / "f1.png", ids)
        write_mask(tmp_path / root / "city" / "deep" / "f2.png", ids)
    result = evaluate_vss(tmp_path / "pred", tmp_path / "gt", class_names=["road", "car", "sky"])
    assert result["num_images"] == 2 and result["confusion"].tolist() == [[4, 2, 0], [0, 2, 2], [2, 0, 2]]
    assert result["mIoU"] == pytest.approx(700 / 18)
    assert [c["name"] for c in result["classes"]] == ["road", "car", "sky"]
    assert format_vss_table(result).splitlines()[-1] == "mIoU 38.89"
    assert evaluate_vss(tmp_path / "pred", tmp_path / "gt")["num_classes"] == 3  # inferred


@pytest.mark.parametrize("damage", ["missing", "size", "label"])
def test_evaluate_vss_errors(tmp_path, damage):
    ids = np.array([[0, 1], [2, 1]], np.uint8)
    write_mask(tmp_path / "gt" / "a.png", ids)
    culprit = tmp_path / "pred" / "a.png"
    write_mask(tmp_path / "pred" / "other.png", ids)  # the folder exists, a.png may not
    if damage != "missing":
        write_mask(culprit, np.zeros((3, 2), np.uint8) if damage == "size" else ids + 3)
    with pytest.raises(InputError, match=re.escape(str(culprit))):
        evaluate_vss(tmp_path / "pred", tmp_path / "gt", num_classes=3)
