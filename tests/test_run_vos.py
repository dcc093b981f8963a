"""`vseg run` for VOS: frames in, palette PNGs out, ids and palette kept, bad input rejected."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from vseg.data.encode import H264Writer
from vseg.data.palette import DAVIS_PALETTE, read_mask, write_mask
from vseg.metrics.davis import evaluate_davis
from vseg.models.registry import build_model, save_model

H, W, T = 90, 122, 6  # not a multiple of 16


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip")
    rng = np.random.default_rng(0)
    bg = rng.integers(0, 255, (H, W + 3 * T, 3), dtype=np.uint8)
    ids = np.zeros((H, W), np.uint8)
    ids[10:30, 10:40] = 3
    ids[50:80, 60:90] = 7
    ids[20:40, 95:115] = 12
    with H264Writer(root / "v.mp4", W, H, keyint=4) as w:
        for t in range(T):
            w.write(np.ascontiguousarray(bg[:, 3 * t:3 * t + W]))
    palette = DAVIS_PALETTE.copy()
    palette[12] = (250, 10, 200)  # the user's own colour for id 12 must survive
    write_mask(root / "first.png", ids, palette)
    weights = save_model(build_model("lite"), root / "lite.safetensors")
    return root, ids, weights


def vseg(*args):
    return subprocess.run([sys.executable, "-m", "vseg", *args], capture_output=True, text=True)


def test_run_writes_palette_pngs_that_eval_scores(clip, tmp_path):
    root, ids, weights = clip
    out = tmp_path / "pred" / "v"
    r = vseg("run", str(root / "v.mp4"), "--mask", str(root / "first.png"), "--weights", str(weights),
             "--out", str(out))
    assert r.returncode == 0, r.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files == [".vseg_run.json"] + [f"{i:05d}.png" for i in range(T)]  # the record lets --resume check
    files = files[1:]
    first, pal = read_mask(out / "00000.png")
    np.testing.assert_array_equal(first, ids)  # frame 0 is the given mask
    assert tuple(pal[12]) == (250, 10, 200)
    for name in files:
        img = Image.open(out / name)
        assert img.mode == "P" and img.size == (W, H)
        assert set(np.unique(np.array(img))) <= {0, 3, 7, 12}
    gt = tmp_path / "gt" / "v"
    for i in range(T):  # a GT with the objects fixed in place: any scores are fine, they must be computed
        write_mask(gt / f"{i:05d}.png", ids)
    result = evaluate_davis(tmp_path / "pred", tmp_path / "gt")
    # DAVIS counts ids 1..max of the first GT frame as objects, so ids {3, 7, 12} make 12 of them.
    assert 0 <= result["dataset"]["J&F-Mean"] <= 100 and len(result["objects"]) == 12


@pytest.mark.parametrize("case", ["size", "empty", "colours", "not-a-video"])
def test_bad_input_is_one_line(clip, tmp_path, case):
    root, ids, weights = clip
    video, mask = root / "v.mp4", tmp_path / "m.png"
    if case == "size":
        write_mask(mask, np.pad(ids, ((0, 2), (0, 0))))
    elif case == "empty":
        write_mask(mask, np.zeros_like(ids))
    elif case == "colours":
        rgb = DAVIS_PALETTE[ids].copy()
        rgb[0, 0] = (1, 2, 3)
        Image.fromarray(rgb).save(mask)
    else:
        write_mask(mask, ids)
        video = tmp_path / "notes.mp4"
        video.write_text("hello")
    r = vseg("run", str(video), "--mask", str(mask), "--weights", str(weights), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert (video.name if case == "not-a-video" else mask.name) in lines[0]


def test_spvos_run_reports_realized_cost(clip, tmp_path):
    import json

    from vseg.models.spvos import spvos_from_stm

    root, ids, _ = clip
    weights = save_model(spvos_from_stm(build_model("stm")), tmp_path / "spvos.safetensors")
    r = vseg("run", str(root / "v.mp4"), "--mask", str(root / "first.png"), "--model", "spvos",
             "--weights", str(weights), "--budget", "0.3", "--dense-every", "4", "--out", str(tmp_path / "o"),
             "--json", str(tmp_path / "s.json"))
    assert r.returncode == 0, r.stderr
    sparse = json.loads((tmp_path / "s.json").read_text())["sparse"]
    assert sparse["frames"] == 6 and sparse["dense_frames"] == 3  # frame 0, 4 (dense_every) and 5 (memory write)
    assert 0 < sparse["realized_gflops_per_frame"] <= sparse["dense_gflops_per_frame"]
    for shares in sparse["gated_layer_shares"].values():
        assert abs(shares["reuse"] + shares["coarse"] + shares["dense"] - 1) < 1e-6
    r = vseg("run", str(root / "v.mp4"), "--mask", str(root / "first.png"), "--weights", str(clip[2]),
             "--budget", "0.3", "--out", str(tmp_path / "o2"))
    assert r.returncode == 2 and "spvos" in r.stderr


def mask_folder(root, ids, folder):
    """00000.png with ids 3 and 7, 00003.png with id 12 entering (in its own colour)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_mask(folder / "00000.png", np.where(ids == 12, 0, ids).astype(np.uint8))
    palette = DAVIS_PALETTE.copy()
    palette[12] = (250, 10, 200)
    write_mask(folder / "00003.png", np.where(ids == 12, 12, 0).astype(np.uint8), palette)
    return folder


def test_a_mask_folder_starts_objects_on_their_frames(clip, tmp_path):
    import json

    root, ids, weights = clip
    masks = mask_folder(root, ids, tmp_path / "masks")
    out = tmp_path / "o"
    r = vseg("run", str(root / "v.mp4"), "--mask", str(masks), "--weights", str(weights), "--out", str(out),
             "--json", str(tmp_path / "s.json"))
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["objects"] == [3, 7, 12] and s["masks_at"] == [0, 3] and s["frame_kinds"]["mask"] == 1
    for t in range(T):
        got, pal = read_mask(out / f"{t:05d}.png")
        if t < 3:
            assert 12 not in got
        if t == 3:
            np.testing.assert_array_equal(got == 12, ids == 12)
    assert tuple(pal[12]) == (250, 10, 200) and tuple(pal[3]) == tuple(DAVIS_PALETTE[3])

    # an interrupted run resumed past the later mask's frame gives the same masks
    again = tmp_path / "again"
    assert vseg("run", str(root / "v.mp4"), "--mask", str(masks), "--weights", str(weights), "--out", str(again),
                "--max-frames", "2").returncode == 0
    r = vseg("run", str(root / "v.mp4"), "--mask", str(masks), "--weights", str(weights), "--out", str(again),
             "--resume")
    assert r.returncode == 0, r.stderr
    for t in range(T):
        np.testing.assert_array_equal(read_mask(again / f"{t:05d}.png")[0], read_mask(out / f"{t:05d}.png")[0])


@pytest.mark.parametrize("case", ["no-first", "misnamed", "past-the-end", "size", "too-many"])
def test_mask_folders_a_user_gets_wrong(clip, tmp_path, case):
    root, ids, weights = clip
    masks = mask_folder(root, ids, tmp_path / "masks")
    expected = {"no-first": "needs the first frame's mask, 00000.png", "misnamed": "not first.png",
                "past-the-end": "00009.png: a mask for frame 9 but", "size": "00003.png: mask is 92x122",
                "too-many": "masks on 2 frames after the first, but a memory of 4 slots pins at most 1"}[case]
    options = ["--capacity", "4"] if case == "too-many" else []
    if case == "no-first":
        (masks / "00000.png").unlink()
    elif case == "misnamed":
        write_mask(masks / "first.png", ids)
    elif case == "past-the-end":
        write_mask(masks / "00009.png", np.where(ids == 12, 12, 0).astype(np.uint8))
    elif case == "size":
        write_mask(masks / "00003.png", np.pad(ids, ((0, 2), (0, 0))))
    else:  # 4 slots: the first frame, the previous frame, a ring slot, and one to pin
        write_mask(masks / "00004.png", np.where(ids == 3, 3, 0).astype(np.uint8))
    out = tmp_path / "o"
    r = vseg("run", str(root / "v.mp4"), "--mask", str(masks), "--weights", str(weights), "--out", str(out), *options)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], lines
    assert not list(out.glob("*.png"))  # found before any frame was written
