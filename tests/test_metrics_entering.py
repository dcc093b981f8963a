"""J&F with objects that enter later: the DAVIS protocol when every object is in the first
annotation, a hand-worked sparse case, `vseg eval --late-objects`, and validation of a model on
a YouTube-VOS folder (every fifth frame annotated, an object entering on frame 10)."""

import json
import shutil

import numpy as np
import pytest
from cli_helpers import one_error_line, vseg
from PIL import Image

from vseg.data.datasets import load_sequence, open_dataset
from vseg.data.palette import write_mask
from vseg.data.synth_vos import generate_vos
from vseg.errors import InputError
from vseg.metrics.davis import evaluate_davis, score_sequence, summarise_davis
from vseg.metrics.entering import evaluate_entering, first_annotations, score_entering
from vseg.models.weights import load_named_model
from vseg.train import validate_vos

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_every_object_in_the_first_annotation_is_the_davis_protocol():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 4, (7, 20, 30)).astype(np.uint8)
    gt[0, :3, :3] = [[1, 2, 3]]  # every id in the first frame
    pred = np.where(rng.random(gt.shape) < 0.8, gt, rng.integers(0, 4, gt.shape)).astype(np.uint8)
    davis = summarise_davis([score_sequence(gt, pred, "s")])
    ours = summarise_davis([score_entering(list(gt), list(pred), "s")])
    assert ours["dataset"] == pytest.approx(davis["dataset"])
    assert [o["J-Mean"] for o in ours["objects"]] == pytest.approx([o["J-Mean"] for o in davis["objects"]])


def test_an_object_entering_later_is_scored_after_its_first_annotation():
    # 5 annotated frames, 2 x 4 pixels; id 1 everywhere on the left half, id 2 enters on frame 2
    gt = [np.zeros((2, 4), np.uint8) for _ in range(5)]
    for g in gt:
        g[:, :2] = 1
    for g in gt[2:]:
        g[:, 2:] = 2
    pred = [g.copy() for g in gt]
    pred[1][:, :2] = 0  # frame 1: id 1 missed (J 0)
    pred[3][0, 2:] = 0  # frame 3: id 2 half found (J 0.5)
    scores = score_entering(gt, pred, "s", [f"{i:05d}" for i in (0, 5, 10, 15, 20)])
    assert scores.frames == ["00005", "00010", "00015"] and scores.object_ids == [1, 2]
    np.testing.assert_array_equal(scores.j[0], [0.0, 1.0, 1.0])
    np.testing.assert_array_equal(scores.j[1], [np.nan, np.nan, 0.5])  # frame 2 is its first: not scored
    summary = summarise_davis([scores])
    assert [round(o["J-Mean"], 4) for o in summary["objects"]] == [66.6667, 50.0]
    assert first_annotations([{1}, {1}, {1, 2}]) == {1: 0, 2: 2}
    # an object first annotated on the last frame has nothing to score
    late = summarise_davis([score_entering(gt[:2] + [gt[4]], pred[:2] + [pred[4]], "t")])
    assert late["unscored_objects"] == ["t_2"] and late["num_objects"] == 1


def youtube_from_synth(tmp_path, enter=10, every=5):
    """A YouTube-VOS 'train' folder from one synthetic clip (seed 6, two objects): every fifth
    frame annotated, the highest id left out of the annotations before frame ``enter``."""
    generate_vos(tmp_path / "synth", clips=1, seed=6, frames=30, height=160, width=288, val_fraction=1.0,
                 videos=False)
    seq = next(iter(open_dataset(tmp_path / "synth", "val")))
    frames, gt = load_sequence(seq)
    late = int(gt[0].max())
    root = tmp_path / "ytvos" / "train"
    for t in range(len(frames)):
        path = root / "JPEGImages" / "clip" / f"{t:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(seq.frames[t], path)
        if t % every == 0:
            write_mask(root / "Annotations" / "clip" / f"{t:05d}.png",
                       np.where((gt[t] == late) & (t < enter), 0, gt[t]).astype(np.uint8))
    return tmp_path / "ytvos", late


@pytest.mark.slow
def test_validation_and_eval_on_a_youtube_vos_folder(tmp_path):
    root, late = youtube_from_synth(tmp_path)
    result = validate_vos(load_named_model("lite"), root, split="train")
    objects = {o["object"]: o for o in result["summary"]["objects"]}
    assert sorted(objects) == [1, 2] and late == 2
    assert objects[late]["J-Mean"] > 90, objects  # the late object, given on frame 10, is tracked
    per_frame = result["summary"]["per_frame"]["clip"]
    assert per_frame["frames"] == ["00005", "00010", "00015", "00020"]  # annotated, first and last aside
    assert np.isnan(per_frame["J"][1][:2]).all() and not np.isnan(per_frame["J"][1][2:]).any()

    # the same predictions written out and scored by vseg eval --late-objects
    model = load_named_model("lite")
    from vseg.train.validate import segment_sequence

    seq = next(iter(open_dataset(root, "train")))
    frames, gt = load_sequence(seq)
    preds = segment_sequence(model, frames, gt[0], later={10: np.where(gt[10] == late, late, 0).astype(np.uint8)})
    for t, p in enumerate(preds):
        write_mask(tmp_path / "pred" / "clip" / f"{t:05d}.png", p)
    ann = root / "train" / "Annotations"
    assert evaluate_entering(tmp_path / "pred", ann)["dataset"]["J&F-Mean"] == pytest.approx(result["J&F"])
    r = vseg("eval", "--pred", str(tmp_path / "pred"), "--gt", str(ann), "--late-objects", "--json",
             str(tmp_path / "e.json"))
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "e.json").read_text())["dataset"]["J&F-Mean"] == pytest.approx(result["J&F"])
    # the DAVIS protocol would miss the late object: it says so instead
    line = one_error_line(vseg("eval", "--pred", str(tmp_path / "pred"), "--gt", str(ann)))
    assert "00010.png: object id(s) [2] are not in the first annotation" in line and "--late-objects" in line
    with pytest.raises(Exception, match="not in the first annotation"):
        evaluate_davis(tmp_path / "pred", ann)

    # vseg train validates on such a folder's split (here its training split, one step from the shipped lite)
    from vseg.models.weights import shipped_weights

    r = vseg("train", "--model", "lite", "--data", str(root), "--init-weights", str(shipped_weights("lite")),
             "--steps", "1", "--batch-size", "1", "--val-data", str(root), "--val-split", "train",
             "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "w.safetensors"), "--json", str(tmp_path / "t.json"))
    assert r.returncode == 0, r.stderr
    validation = json.loads((tmp_path / "t.json").read_text())["validation"]
    assert validation[-1]["J&F"] > 50


def test_an_unannotated_first_frame_starts_at_the_first_object(tmp_path):
    """A sequence whose first annotation shows no object yet is run from the one that does."""
    root = tmp_path / "y" / "train"
    rng = np.random.default_rng(0)
    for t in range(6):
        path = root / "JPEGImages" / "v" / f"{t:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)).save(path)
        ids = np.zeros((32, 48), np.uint8)
        if t >= 2:
            ids[8:20, 10:30] = 1
        write_mask(root / "Annotations" / "v" / f"{t:05d}.png", ids)

    seen = []

    def predictor(name, frames, first):  # a predictor cannot take later masks
        seen.append(name)
        return np.zeros(frames.shape[:3], np.uint8)

    with pytest.raises(Exception, match="need a VOS model to validate"):
        validate_vos(predictor, tmp_path / "y", split="train")
    import torch

    from vseg.models.registry import build_model

    torch.manual_seed(0)
    result = validate_vos(build_model("lite"), tmp_path / "y", split="train")
    assert result["summary"]["per_frame"]["v"]["frames"] == ["00001", "00002", "00003", "00004"]
    assert result["num_objects"] == 1
    for t in (3, 4, 5):  # YouTube-VOS 'valid' keeps each object's first mask only
        (root / "Annotations" / "v" / f"{t:05d}.png").unlink()
    with pytest.raises(InputError, match="no object is annotated after its first annotation"):
        validate_vos(build_model("lite"), tmp_path / "y", split="train")
