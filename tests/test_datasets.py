"""Dataset readers on tiny hand-made DAVIS, YouTube-VOS and flat CamVid folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vseg.data.datasets import (
    UNANNOTATED,
    CamVidDataset,
    DavisDataset,
    YouTubeVOSDataset,
    detect_layout,
    load_sequence,
    open_dataset,
)
from vseg.data.palette import write_mask
from vseg.errors import InputError

H, W = 8, 12


def _frame(path: Path, value: int, size: tuple[int, int] = (H, W)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size + (3,), value, np.uint8)).save(path)


def _ids(*boxes: tuple[int, int, int]) -> np.ndarray:
    """A mask [H, W] with object id k on columns c0..c1 for each (k, c0, c1)."""
    ids = np.zeros((H, W), np.uint8)
    for k, c0, c1 in boxes:
        ids[:, c0:c1] = k
    return ids


@pytest.fixture
def youtube(tmp_path) -> Path:
    split = tmp_path / "train"
    for name in ("00000", "00005", "00010"):
        _frame(split / "JPEGImages" / "vidB" / f"{name}.jpg", 100)
    _frame(split / "JPEGImages" / "vidA" / "00000.jpg", 50)
    write_mask(split / "Annotations" / "vidB" / "00000.png", _ids((1, 0, 3)))
    write_mask(split / "Annotations" / "vidB" / "00005.png", _ids((1, 0, 3), (2, 6, 9)))  # object 2 appears
    write_mask(split / "Annotations" / "vidA" / "00000.png", _ids((1, 2, 4)))
    meta = {"videos": {
        "vidB": {"objects": {"1": {"category": "duck", "frames": ["00000", "00005", "00010"]},
                             "2": {"category": "person", "frames": ["00005", "00010"]}}},
        "vidA": {"objects": {"1": {"category": "cat", "frames": ["00000"]}}}}}
    (split / "meta.json").write_text(json.dumps(meta))
    return tmp_path


def test_youtube_vos_objects_may_appear_late(youtube):
    data = YouTubeVOSDataset(youtube, "train")
    assert data.names == ["vidA", "vidB"] and detect_layout(youtube) == "youtube-vos"
    seq = data["vidB"]
    assert [p.name for p in seq.frames] == ["00000.jpg", "00005.jpg", "00010.jpg"]
    assert seq.annotated == [0, 1]
    assert {k: (o.category, o.first_frame) for k, o in seq.objects.items()} == {1: ("duck", 0), 2: ("person", 1)}
    frames, masks = load_sequence(seq)
    assert frames.shape == (3, H, W, 3) and masks.shape == (3, H, W)
    assert np.array_equal(masks[1], _ids((1, 0, 3), (2, 6, 9)))
    assert (masks[2] == UNANNOTATED).all()  # no file for the last frame


def test_youtube_vos_without_meta_lists_folders(youtube):
    (youtube / "train" / "meta.json").unlink()
    data = YouTubeVOSDataset(youtube, "train")
    assert data.names == ["vidA", "vidB"] and data["vidB"].objects == {}


@pytest.mark.parametrize("text", ["{not json", json.dumps({"vids": {}}),
                                  json.dumps({"videos": {"vidB": {"objects": {"one": {}}}}})])
def test_youtube_vos_malformed_meta_names_the_file(youtube, text):
    meta = youtube / "train" / "meta.json"
    meta.write_text(text)
    with pytest.raises(InputError, match="meta.json"):
        YouTubeVOSDataset(youtube, "train")


def test_youtube_vos_missing_split_or_video(youtube):
    with pytest.raises(InputError, match="valid"):
        YouTubeVOSDataset(youtube, "valid")
    meta = youtube / "train" / "meta.json"
    spec = json.loads(meta.read_text())
    spec["videos"]["vidC"] = {"objects": {}}
    meta.write_text(json.dumps(spec))
    with pytest.raises(InputError, match="vidC"):
        YouTubeVOSDataset(youtube, "train")


@pytest.fixture
def camvid_flat(tmp_path) -> Path:
    names = {"0001TP_006720.png": 3, "0001TP_006690.png": 1, "0001TP_006700.png": 2,
             "Seq05VD_f00930.png": 5, "Seq05VD_f00060.png": 4}
    for name, value in names.items():
        _frame(tmp_path / "train" / name, value * 10)
        label = tmp_path / "trainannot" / name
        label.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((H, W), value, np.uint8), mode="L").save(label)  # SegNet: grey ids
    return tmp_path


def test_camvid_flat_groups_by_prefix_and_sorts_by_number(camvid_flat):
    data = CamVidDataset(camvid_flat, "train")
    assert detect_layout(camvid_flat) == "camvid" and data.layout == "flat"
    assert data.names == ["0001TP", "Seq05VD"]
    assert [p.name for p in data["0001TP"].frames] == ["0001TP_006690.png", "0001TP_006700.png", "0001TP_006720.png"]
    assert [p.name for p in data["Seq05VD"].frames] == ["Seq05VD_f00060.png", "Seq05VD_f00930.png"]
    assert len(data.classes) == 11 and data.ignore_index == 11
    frames, labels = load_sequence(data["0001TP"])
    assert frames[:, 0, 0, 0].tolist() == [10, 20, 30] and labels[:, 0, 0].tolist() == [1, 2, 3]


def test_camvid_classes_json_and_errors(camvid_flat):
    (camvid_flat / "classes.json").write_text(json.dumps({"names": ["a", "b"], "colors": [[0, 0, 0], [9, 9, 9]],
                                                          "ignore_index": 255}))
    data = CamVidDataset(camvid_flat, "train")
    assert data.classes == ["a", "b"] and data.ignore_index == 255
    (camvid_flat / "classes.json").write_text(json.dumps({"names": ["a"]}))
    with pytest.raises(InputError, match="classes.json"):
        CamVidDataset(camvid_flat, "train")
    with pytest.raises(InputError, match="test"):
        CamVidDataset(camvid_flat, "test")


def _davis(root: Path, frames: int = 3, annotated: int = 1) -> Path:
    for t in range(frames):
        _frame(root / "JPEGImages" / "480p" / "bear" / f"{t:05d}.jpg", 60)
    for t in range(annotated):
        write_mask(root / "Annotations" / "480p" / "bear" / f"{t:05d}.png", _ids((1, 1, 5), (2, 7, 10)))
    sets = root / "ImageSets" / "2017"
    sets.mkdir(parents=True, exist_ok=True)
    (sets / "val.txt").write_text("bear\n")
    return root


def test_davis_with_first_frame_annotation_only(tmp_path):
    data = DavisDataset(_davis(tmp_path), "val")
    assert detect_layout(tmp_path) == "davis" and open_dataset(tmp_path).names == ["bear"]
    seq = data["bear"]
    assert seq.annotated == [0] and seq.masks[1:] == [None, None]
    _frames, masks = load_sequence(seq)
    assert np.array_equal(masks[0], _ids((1, 1, 5), (2, 7, 10))) and (masks[1:] == UNANNOTATED).all()


def test_davis_errors_name_the_path(tmp_path):
    _davis(tmp_path)
    with pytest.raises(InputError, match=r"train\.txt.*splits here: val"):
        DavisDataset(tmp_path, "train")
    (tmp_path / "ImageSets" / "2017" / "val.txt").write_text("bear\nghost\n")
    with pytest.raises(InputError, match="ghost"):
        DavisDataset(tmp_path, "val")
    (tmp_path / "ImageSets" / "2017" / "val.txt").write_text("bear\n")
    write_mask(tmp_path / "Annotations" / "480p" / "bear" / "00001.png", np.zeros((H + 2, W), np.uint8))
    with pytest.raises(InputError, match="00001.png.*size|00001.png: mask is"):
        load_sequence(DavisDataset(tmp_path, "val")["bear"])
    (tmp_path / "JPEGImages" / "480p" / "bear" / "00002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(InputError, match="00002.jpg"):
        load_sequence(DavisDataset(tmp_path, "val")["bear"], with_masks=False)


def test_detect_layout_rejects_other_folders(tmp_path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(InputError, match="not a DAVIS"):
        detect_layout(tmp_path)
    with pytest.raises(InputError, match="no such folder"):
        detect_layout(tmp_path / "missing")


def test_camvid_empty_split_has_no_sequences(camvid_flat):
    (camvid_flat / "val").mkdir()
    assert len(CamVidDataset(camvid_flat, "val")) == 0
