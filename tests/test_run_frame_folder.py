"""`vseg run` on a folder of frame images (DAVIS / YouTube-VOS JPEGImages): frames in name
order, masks and outputs named like the images, the same J&F as validation on those frames."""

import json
import shutil

import numpy as np
import pytest
from cli_helpers import one_error_line, vseg
from PIL import Image

from vseg.data.frame_folder import FrameFolder
from vseg.data.palette import read_mask, write_mask
from vseg.data.synth_vos import generate_vos
from vseg.errors import InputError
from vseg.models.weights import load_named_model
from vseg.train import validate_vos

SEQ = "synth-1-0000"


@pytest.fixture(scope="module")
def davis(tmp_path_factory):
    """One synthetic clip (seed 1, 8 frames, 160 x 288, two objects) in the DAVIS layout, without videos."""
    root = tmp_path_factory.mktemp("davis")
    generate_vos(root, clips=1, seed=1, frames=8, height=160, width=288, val_fraction=1.0, videos=False)
    return root


def test_frame_folder_reads_images_in_name_order(tmp_path):
    rng = np.random.default_rng(0)
    images = {name: rng.integers(0, 256, (6, 8, 3), dtype=np.uint8) for name in ("00010", "00000", "00005")}
    for name, rgb in images.items():
        Image.fromarray(rgb).save(tmp_path / f"{name}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    with FrameFolder(tmp_path) as source:
        assert source.names == ["00000", "00005", "00010"] and source.frame_count == 3
        assert (source.height, source.width, source.fps) == (6, 8, None)
        frames = list(source)
    assert [f.index for f in frames] == [0, 1, 2]
    for frame, name in zip(frames, source.names):
        np.testing.assert_array_equal(frame.rgb, images[name])
    Image.fromarray(np.zeros((7, 8, 3), np.uint8)).save(tmp_path / "00015.png")
    with pytest.raises(InputError, match="00015.png: frame is 8x7, the folder's first is 8x6"):
        list(FrameFolder(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no frame images"):
        FrameFolder(tmp_path / "empty")


@pytest.mark.slow
def test_a_davis_frame_folder_scores_as_validation_does(davis, tmp_path):
    frames = davis / "JPEGImages" / "480p" / SEQ
    first = davis / "Annotations" / "480p" / SEQ / "00000.png"
    out = tmp_path / "pred" / SEQ
    r = vseg("run", str(frames), "--mask", str(first), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.glob("*.png")) == [f"{i:05d}.png" for i in range(8)]
    r = vseg("eval", "--pred", str(tmp_path / "pred"), "--gt", str(davis), "--json", str(tmp_path / "e.json"))
    assert r.returncode == 0, r.stderr
    scored = json.loads((tmp_path / "e.json").read_text())["dataset"]["J&F-Mean"]
    assert scored == pytest.approx(validate_vos(load_named_model("lite"), davis)["J&F"], abs=1e-9)


def youtube_folder(davis, root):
    """The clip's frames renamed as YouTube-VOS names them (every fifth of a 30 fps video) and
    a mask folder: the first frame without the highest id, which enters on frame 00010."""
    frames, masks = root / "JPEGImages" / "v", root / "masks"
    frames.mkdir(parents=True)
    masks.mkdir()
    for i, path in enumerate(sorted((davis / "JPEGImages" / "480p" / SEQ).glob("*.jpg"))):
        shutil.copy(path, frames / f"{5 * i:05d}.jpg")
    ann = davis / "Annotations" / "480p" / SEQ
    gt0, gt2 = read_mask(ann / "00000.png")[0], read_mask(ann / "00002.png")[0]
    late = int(gt0.max())
    write_mask(masks / "00000.png", np.where(gt0 == late, 0, gt0).astype(np.uint8))
    write_mask(masks / "00010.png", np.where(gt2 == late, late, 0).astype(np.uint8))
    return frames, masks, late, gt2


@pytest.mark.slow
def test_youtube_vos_names_go_from_masks_to_outputs(davis, tmp_path):
    frames, masks, late, gt2 = youtube_folder(davis, tmp_path)
    out = tmp_path / "out"
    r = vseg("run", str(frames), "--mask", str(masks), "--out", str(out), "--json", str(tmp_path / "s.json"))
    assert r.returncode == 0, r.stderr
    names = [f"{5 * i:05d}" for i in range(8)]
    assert sorted(p.stem for p in out.glob("*.png")) == names
    for name in names[:2]:
        assert late not in read_mask(out / f"{name}.png")[0]
    np.testing.assert_array_equal(read_mask(out / "00010.png")[0] == late, gt2 == late)  # frame index 2
    assert json.loads((tmp_path / "s.json").read_text())["frame_kinds"]["mask"] == 1

    again = tmp_path / "again"  # interrupted after 3 frames, resumed
    assert vseg("run", str(frames), "--mask", str(masks), "--out", str(again), "--max-frames", "3").returncode == 0
    assert sorted(p.stem for p in again.glob("*.png")) == names[:3]
    (frames / "notes.txt").write_text("not a frame")  # a file that is no frame does not block the resume
    assert vseg("run", str(frames), "--mask", str(masks), "--out", str(again), "--resume").returncode == 0
    for name in names:
        np.testing.assert_array_equal(read_mask(again / f"{name}.png")[0], read_mask(out / f"{name}.png")[0])
    shutil.copy(frames / "00035.jpg", frames / "00040.jpg")  # one that is does
    line = one_error_line(vseg("run", str(frames), "--mask", str(masks), "--out", str(again), "--resume"))
    assert "differs in video_bytes" in line
    (frames / "00040.jpg").unlink()

    write_mask(masks / "00007.png", np.zeros_like(gt2))
    line = one_error_line(vseg("run", str(frames), "--mask", str(masks), "--out", str(tmp_path / "o3")))
    assert "00007.png names no frame of the video folder (its frames are 00000...00035)" in line


def test_profile_reads_a_frame_folder(davis, tmp_path):
    frames = davis / "JPEGImages" / "480p" / SEQ
    first = davis / "Annotations" / "480p" / SEQ / "00000.png"
    r = vseg("profile", "--model", "lite", "--backend", "torch", "--video", str(frames), "--mask", str(first),
             "--frames", "3", "--warmup", "1", "--json", str(tmp_path / "p.json"))
    assert r.returncode == 0, r.stderr
    profile = json.loads((tmp_path / "p.json").read_text())
    assert profile["frames"] == 3 and profile["fps_end_to_end"] > 0, profile.keys()
