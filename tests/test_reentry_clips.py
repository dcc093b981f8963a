"""Re-entry training clips: VOSClipDataset(reentry_fraction=...) draws clips around an object
that leaves the picture and comes back, and leaves every other clip as the plain sampler draws it."""

from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import one_error_line, vseg
from PIL import Image

from vseg.data.palette import write_mask
from vseg.train.vos_data import VOSClipDataset

H, W = 48, 64
GONE = (3, 4)  # object 1 of "walk" is out of the picture in these frames


def _square(ids: np.ndarray, value: int, y: int, x: int, size: int = 10) -> None:
    ids[max(0, y):max(0, y + size), max(0, x):max(0, x + size)] = value


def _write_sequence(root: Path, name: str, frames: int, leaves: bool) -> None:
    rng = np.random.default_rng(len(name))
    for t in range(frames):
        pixels = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        path = root / "JPEGImages" / "480p" / name / f"{t:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)
        ids = np.zeros((H, W), np.uint8)
        _square(ids, 2, 30, 4 + 2 * t)  # never leaves
        _square(ids, 3, 4, 40)  # still
        if not (leaves and t in GONE):
            _square(ids, 1, 5, 5 + t)
        write_mask(root / "Annotations" / "480p" / name / f"{t:05d}.png", ids)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """DAVIS layout, 8 frames of 48x64: in "walk" object 1 is gone in frames 3 and 4; in
    "still" nothing leaves."""
    root = tmp_path_factory.mktemp("reentry")
    _write_sequence(root, "walk", 8, leaves=True)
    _write_sequence(root, "still", 8, leaves=False)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "train.txt").write_text("walk\nstill\n")
    return root


def _dataset(data, **kw) -> VOSClipDataset:
    return VOSClipDataset(data, **({"crop": (H, W), "flip": False, "max_objects": 3, "seed": 0} | kw))


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in ("frames", "masks", "frame_indices", "object_ids"))


def _is_reentry(clip: dict, obj: int = 1) -> bool:
    """Object ``obj`` shown in the first and last frames and in none of some frame between."""
    k = clip["object_ids"].tolist().index(obj) if obj in clip["object_ids"].tolist() else None
    if k is None:
        return False
    pixels = clip["masks"][:, k].sum((1, 2))
    return bool(pixels[0] > 0 and pixels[-1] > 0 and (pixels[1:-1] == 0).any())


def test_exits_are_found_from_the_masks(data):
    ds = _dataset(data)
    walk, still = (ds.sequences.index(next(s for s in ds.sequences if s.name == n)) for n in ("walk", "still"))
    assert ds.exits_of(walk) == [(1, [0, 1, 2, 5, 6, 7], [3, 4])]
    assert ds.exits_of(still) == []


@pytest.mark.parametrize("clip_len", [3, 5])
def test_every_clip_of_a_leaving_object_shows_it_gone_and_back(data, clip_len):
    ds = _dataset(data, clip_len=clip_len, reentry_fraction=1.0)
    plain = _dataset(data, clip_len=clip_len)
    for g in range(12):
        clip = ds[g]
        if clip["sequence"] == "still":  # nothing leaves: the plain sampler's clip
            assert _same(clip, plain[g])
            continue
        frames = clip["frame_indices"].tolist()
        assert frames == sorted(set(frames)) and len(frames) == clip_len
        assert frames[0] < GONE[0] and frames[-1] > GONE[-1] and set(frames[1:-1]) & set(GONE)
        assert _is_reentry(clip)
        # the masks are the dataset's: object 1 is absent exactly in the frames where it is gone
        k = clip["object_ids"].tolist().index(1)
        absent = [f for f, p in zip(frames, clip["masks"][:, k].sum((1, 2)).tolist()) if p == 0]
        assert absent == [f for f in frames if f in GONE]


def test_other_clips_are_the_plain_samplers(data):
    """With a fraction below 1 the clips not drawn around an exit are the ones a plain sampler
    with the same seed draws: a run can be compared clip for clip with one that had none."""
    plain, mixed = _dataset(data, seed=3, max_skip=2), _dataset(data, seed=3, max_skip=2, reentry_fraction=0.5)
    kinds = []
    for g in range(30):
        clip, reference = mixed[g], plain[g]
        if _same(clip, reference):
            kinds.append("plain")
        else:
            assert clip["sequence"] == "walk" and _is_reentry(clip)
            kinds.append("reentry")
    assert 3 <= kinds.count("reentry") <= 12  # about half of the walk clips (half the samples)
    again = _dataset(data, seed=3, max_skip=2, reentry_fraction=0.5)
    assert all(_same(again[g], mixed[g]) for g in range(10))  # deterministic by seed


def test_the_leaving_object_is_kept_in_the_crop_and_among_the_objects(data):
    ds = _dataset(data, crop=(32, 32), max_objects=1, reentry_fraction=1.0, seed=5)
    checked = 0
    for g in range(16):
        clip = ds[g]
        if clip["sequence"] != "walk":
            continue
        assert clip["object_ids"].tolist() == [1]
        pixels = clip["masks"][:, 0].sum((1, 2))
        assert pixels[0] >= ds.min_object_pixels and pixels[-1] >= ds.min_object_pixels
        checked += 1
    assert checked >= 4


def test_bad_fractions_are_refused(data):
    with pytest.raises(ValueError, match="reentry_fraction"):
        _dataset(data, reentry_fraction=1.5)
    result = vseg("train", "--model", "stm", "--data", str(data), "--reentry-fraction", "-0.1")
    assert "--reentry-fraction" in one_error_line(result)
    result = vseg("train", "--model", "arseg", "--data", str(data), "--reentry-fraction", "0.5")
    assert "--reentry-fraction" in one_error_line(result)


def test_the_crop_prefers_windows_showing_the_object_in_the_first_and_last_frames(data):
    """Object 1 sits left of centre in the first frame and at the right edge of the last, 2 and 3
    fill the middle: a 24x40 window can show object 1 in both frames only at a few places, and
    the plain choice (most objects of the first frame) seldom lands on them."""
    ds = _dataset(data, crop=(24, 40), max_objects=3)
    first, last = torch.zeros(H, W, dtype=torch.uint8), torch.zeros(H, W, dtype=torch.uint8)
    first[10:20, 14:24] = 1
    last[10:20, 54:64] = 1
    first[30:40, 20:30], first[30:40, 34:44] = 2, 3
    for seed in range(5):
        y, x, present = ds._choose_crop(first, np.random.default_rng(seed), required=(1, last))
        assert 1 in present
        assert int((last[y:y + 24, x:x + 40] == 1).sum()) >= ds.min_object_pixels
