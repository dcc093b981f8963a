"""Synthetic VOS and VSS datasets: layout, determinism, content and the H.264 copies."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from av.video.frame import PictureType
from PIL import Image

from vseg.data import street_sprites, synth_vos, synth_vss, vos_scene
from vseg.data import synth_common as sc
from vseg.data.datasets import CamVidDataset, DavisDataset, detect_layout, load_sequence
from vseg.data.palette import DAVIS_PALETTE, read_mask
from vseg.errors import VsegError

VOS = {"seed": 0, "frames": 16, "height": 96, "width": 160, "val_fraction": 0.34}
VSS = {"seed": 3, "frames": 14, "height": 120, "width": 160, "val_fraction": 0.34}


@pytest.fixture(scope="module")
def vos(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("vos")
    return root, synth_vos.generate_vos(root, clips=4, **VOS)


@pytest.fixture(scope="module")
def vss(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("vss")
    return root, synth_vss.generate_vss(root, clips=3, **VSS)


def _files(root: Path, pattern: str) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.glob(pattern))}


def _decode(path: Path) -> tuple[list[str], list[np.ndarray]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.has_b_frames == 0
        frames = list(container.decode(stream))
    types = [PictureType(int(f.pict_type)).name for f in frames]
    return types, [f.to_ndarray(format="rgb24") for f in frames]


def _check_ip_only(video: Path, frames: list[np.ndarray]) -> None:
    types, decoded = _decode(video)
    assert len(decoded) == len(frames)
    assert set(types) <= {"I", "P"}
    assert [i for i, t in enumerate(types) if t == "I"] == list(range(0, len(frames), 12))
    # The video holds the same pictures as the image files (up to compression).
    assert np.abs(decoded[0].astype(int) - frames[0].astype(int)).mean() < 6


# ---------------------------------------------------------------- VOS

def test_vos_layout_is_davis_and_readable(vos):
    root, summary = vos
    names = [f"synth-0-{i:04d}" for i in range(4)]
    assert sorted(summary["train"] + summary["val"]) == names and summary["val"]
    assert detect_layout(root) == "davis"
    for split in ("train", "val"):
        listed = (root / "ImageSets" / "2017" / f"{split}.txt").read_text().split()
        assert listed == summary[split]
        data = DavisDataset(root, split)
        assert data.names == listed
        for seq in data:
            assert [p.name for p in seq.frames] == [f"{t:05d}.jpg" for t in range(VOS["frames"])]
            assert seq.annotated == list(range(VOS["frames"]))  # every frame annotated
            frames, masks = load_sequence(seq)
            assert frames.shape == (VOS["frames"], VOS["height"], VOS["width"], 3)
            assert masks.shape == frames.shape[:3] and masks.max() < 255
    saved = json.loads((root / "synth_vos.json").read_text())
    assert saved["train"] == summary["train"] and len(saved["clips"]) == 4


def test_vos_masks_use_the_davis_palette_and_first_frame_ids(vos):
    root, summary = vos
    for clip in summary["clips"]:
        folder = root / "Annotations" / "480p" / clip["name"]
        first, palette = read_mask(folder / "00000.png")
        assert Image.open(folder / "00000.png").mode == "P"
        assert np.array_equal(palette, DAVIS_PALETTE)
        k = clip["targets"]
        assert sorted(np.unique(first)) == list(range(k + 1))  # ids 1..K all in frame 0
        assert all((first == i).sum() >= 30 for i in range(1, k + 1))  # and clearly visible
        for t in range(1, VOS["frames"]):
            ids, _ = read_mask(folder / f"{t:05d}.png")
            assert set(np.unique(ids)) <= set(range(k + 1))


def test_vos_same_seed_same_bytes_and_prefix(vos, tmp_path):
    root, _ = vos
    again = tmp_path / "again"
    synth_vos.generate_vos(again, clips=3, **VOS)  # three clips: a prefix of the four
    for pattern in ("Annotations/480p/*/*.png", "JPEGImages/480p/*/*.jpg"):
        new = _files(again, pattern)
        old = {k: v for k, v in _files(root, pattern).items() if k in new}
        assert len(new) == 3 * VOS["frames"] and new == old
    other = tmp_path / "other"
    synth_vos.generate_vos(other, clips=1, **{**VOS, "seed": 1})
    a = _files(root, "Annotations/480p/synth-0-0000/*.png")
    b = _files(other, "Annotations/480p/synth-1-0000/*.png")
    assert list(a.values()) != list(b.values())


def test_vos_workers_write_the_same_files_and_summary(vos, tmp_path):
    root, summary = vos
    seen = []
    again = synth_vos.generate_vos(tmp_path, clips=4, workers=2, on_clip=lambda i, name: seen.append(i), **VOS)
    assert seen == [0, 1, 2, 3]  # in clip order
    for pattern in ("Annotations/480p/*/*.png", "JPEGImages/480p/*/*.jpg", "videos/*.mp4", "ImageSets/2017/*.txt",
                    "synth_vos.json"):
        assert _files(tmp_path, pattern) == _files(root, pattern), pattern
    assert {k: v for k, v in again.items() if k != "root"} == {k: v for k, v in summary.items() if k != "root"}


def test_vos_without_videos_writes_the_same_frames_and_no_pyav_is_needed(vos, tmp_path, monkeypatch):
    root, _ = vos
    modules = __import__("sys").modules
    monkeypatch.setitem(modules, "av", None)  # any import of PyAV now fails,
    monkeypatch.delitem(modules, "vseg.data.encode", raising=False)  # also through our encoder
    summary = synth_vos.generate_vos(tmp_path, clips=1, videos=False, **VOS)
    assert not (tmp_path / "videos").exists() and summary["videos"] is False
    for pattern in ("Annotations/480p/*/*.png", "JPEGImages/480p/*/*.jpg"):
        new = _files(tmp_path, pattern)
        assert new == {k: v for k, v in _files(root, pattern).items() if k in new} and len(new) == VOS["frames"]


def _clip_masks(root: Path, name: str) -> np.ndarray:
    folder = root / "Annotations" / "480p" / name
    return np.stack([read_mask(folder / f"{t:05d}.png")[0] for t in range(VOS["frames"])])


def test_vos_has_occlusion_exit_and_return(vos):
    root, summary = vos
    h, w = VOS["height"], VOS["width"]
    occluded = came_back = False
    for index, clip in enumerate(summary["clips"]):
        masks = _clip_masks(root, clip["name"])
        plan = vos_scene.plan_clip(0, index, VOS["frames"], h, w)
        for obj in plan.targets:
            area = (masks == obj.label).sum((1, 2))
            for t in range(VOS["frames"]):
                patch = vos_scene.object_patch(obj, t, h, w)
                if patch is None:
                    continue
                y0, x0, rgba = patch
                inside = y0 > 0 and x0 > 0 and y0 + rgba.shape[1] < h and x0 + rgba.shape[2] < w
                whole = int((rgba[3] >= 0.5).sum())
                # Inside the frame, yet fewer pixels annotated than the object covers: occluded.
                occluded |= inside and area[t] < 0.8 * whole
            gone = np.flatnonzero(area == 0)
            if len(gone) and area[-1] > 0:
                t = int(gone[0])
                assert vos_scene.object_patch(obj, t, h, w) is None  # it left; it was not hidden
                came_back |= bool((area[t:] > 0).any())
    assert occluded and came_back


def test_vos_distractors_look_like_their_targets_and_are_not_annotated(vos):
    _, summary = vos
    h, w = VOS["height"], VOS["width"]
    same, other = [], []
    for index, clip in enumerate(summary["clips"]):
        plan = vos_scene.plan_clip(0, index, VOS["frames"], h, w)
        rgb, labels, instances = vos_scene.render_frame(plan, 0, sc.clip_rng(0, index, stream=1))
        for obj in plan.objects:
            if obj.label:
                continue
            assert not labels[instances == obj.instance].any()
            mean = rgb[instances == obj.instance].mean(0)
            for target in plan.targets:
                pixels = rgb[instances == target.instance]
                if len(pixels) and (instances == obj.instance).sum():
                    dist = np.linalg.norm(pixels.mean(0) - mean)
                    (same if target.label == obj.mimics else other).append(dist)
    assert sum(c["distractors"] for c in summary["clips"]) >= 2
    assert same and other and np.median(same) < 25 and np.median(same) < np.median(other) / 2


def test_vos_video_is_ip_only_with_every_frame(vos):
    root, summary = vos
    name = summary["clips"][0]["name"]
    frames, _ = load_sequence(DavisDataset(root, summary["clips"][0]["split"])[name], with_masks=False)
    _check_ip_only(root / "videos" / f"{name}.mp4", list(frames))


def test_generation_rejects_bad_options(tmp_path):
    with pytest.raises(VsegError, match="even"):
        synth_vos.generate_vos(tmp_path, clips=1, seed=0, height=97, width=160)
    with pytest.raises(VsegError, match="seed"):
        synth_vss.generate_vss(tmp_path, clips=1, seed=-1)
    assert not any(tmp_path.iterdir())


def test_val_split_depends_on_index_only():
    flags = [sc.is_val_clip(i, 0.2) for i in range(100)]
    assert sum(flags) == 20 and flags[:5] == [False, False, True, False, False]


# ---------------------------------------------------------------- VSS

def test_vss_layout_classes_and_labels(vss):
    root, summary = vss
    assert detect_layout(root) == "camvid"
    classes = json.loads((root / "classes.json").read_text())
    assert classes["ignore_index"] == 255 and len(classes["names"]) == len(classes["colors"]) >= 8
    assert "trainannot" in (root / "README.txt").read_text()
    seen = set()
    for split in ("train", "val"):
        data = CamVidDataset(root, split)
        assert data.names == summary[split] and data.classes == classes["names"]
        for seq in data:
            assert seq.annotated == list(range(VSS["frames"]))  # a label for every frame
            frames, labels = load_sequence(seq)
            assert frames.shape == (VSS["frames"], VSS["height"], VSS["width"], 3)
            values = set(np.unique(labels).tolist())
            assert values <= set(range(len(classes["names"]))) | {255}
            seen |= values - {255}
    assert len(seen) >= 8


def test_vss_class_appearance_is_consistent_across_clips(vss):
    """Each class keeps its colour family from clip to clip: the chromaticity and brightness of
    its mean colour stay near the class's average, the sky is blue, foliage green, asphalt
    neutral grey, and paving lighter than asphalt in every clip."""
    root, _ = vss
    means: dict[int, list[np.ndarray]] = {}
    for split in ("train", "val"):
        for seq in CamVidDataset(root, split):
            frames, labels = load_sequence(seq)
            for c in (synth_vss.SKY, synth_vss.ROAD, synth_vss.SIDEWALK, synth_vss.BUILDING, synth_vss.VEGETATION):
                if (labels == c).sum() > 200:
                    means.setdefault(c, []).append(frames[labels == c].mean(0))
    assert len(means) == 5 and all(len(m) == 3 for m in means.values())
    for c, ms in means.items():
        centre = np.mean(ms, 0)
        for m in ms:
            assert np.abs(m / m.sum() - centre / centre.sum()).max() < 0.1
            assert abs(m.mean() / centre.mean() - 1) < 0.4
    for sky, road, walk, leaves in zip(*(means[c] for c in (synth_vss.SKY, synth_vss.ROAD, synth_vss.SIDEWALK,
                                                            synth_vss.VEGETATION))):
        assert sky[2] > sky[1] > sky[0]
        assert leaves[1] > max(leaves[0], leaves[2])
        assert np.ptp(road / road.sum()) < 0.03
        assert walk.mean() > road.mean() + 20


def test_vss_deterministic_prefix_and_video(vss, tmp_path):
    root, summary = vss
    again = tmp_path / "again"
    synth_vss.generate_vss(again, clips=1, **VSS)
    name = "synth-3-0000"
    split = "val" if name in summary["val"] else "train"
    for pattern in (f"{split}annot/{name}/*.png", f"{split}/{name}/*.png"):
        assert _files(again, pattern) == _files(root, pattern) and _files(again, pattern)
    other = tmp_path / "other"
    synth_vss.generate_vss(other, clips=1, **{**VSS, "seed": 4})
    assert list(_files(other, "*annot/*/*.png").values()) != list(_files(again, "*annot/*/*.png").values())
    frames, _ = load_sequence(CamVidDataset(root, split)[name], with_masks=False)
    _check_ip_only(root / "videos" / f"{name}.mp4", list(frames))


def test_vss_projection_matches_a_hand_worked_pinhole():
    """Two poles, 10 m and 30 m ahead, 4 m to the side; the camera moves forward without
    panning: each pole is where x = cx + f * X / Z puts it, and the near one moves faster."""
    plan = synth_vss.plan_street(5, 0, 6, 120, 160)
    plan.yaw[:] = 0.0
    plan.cam_x[:] = street_sprites.LANE / 2
    plan.walls = []
    colours = np.full((3, 3), 128, np.float32)
    plan.sprites = [street_sprites.Sprite("pole", side * 4.0, plan.cam_z[0] + dist, 0.0, 0.4, 6.0, colours,
                                     np.array([-1, 0.6, 0, 0.3])) for side, dist in ((1, 10.0), (-1, 30.0))]
    shifts = []
    for sprite in plan.sprites:
        cols = []
        for t in (0, 5):
            _, labels = synth_vss.render_street(plan, t, sc.clip_rng(5, 0, stream=1))
            rows = slice(0, int(plan.cy[t]) - 2)  # above the horizon: only the pole is there
            side = slice(80, 160) if sprite.x > 0 else slice(0, 80)
            pole = np.argwhere(labels[rows, side] == street_sprites.POLE)[:, 1] + side.start
            expected = plan.cx + plan.focal * (sprite.x - plan.cam_x[t]) / (sprite.z - plan.cam_z[t]) - 0.5
            assert abs(pole.mean() - expected) < 1.0
            cols.append(pole.mean())
        shifts.append(abs(cols[1] - cols[0]))
    assert shifts[0] > 2 * shifts[1] > 0
