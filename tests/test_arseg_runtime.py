"""AR-Seg at run time: the frame loop on a real IP-only stream (torch and onnxruntime engines),
its outputs against the batched evaluation, keyframe scheduling, and refused inputs."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
import torch

from vseg.data.palette import read_mask
from vseg.data.synth_vss import generate_vss
from vseg.data.video import read_frames
from vseg.errors import AmbiguousMotionError, InputError, VsegError
from vseg.models.registry import build_model
from vseg.runtime.arseg_engines import export_arseg_engines
from vseg.runtime.arseg_run import class_palette, run_arseg
from vseg.train.arseg_data import load_clips
from vseg.train.arseg_eval import predict_clip

TINY = {"stem_width": 8, "widths": [8, 8, 16, 16], "feature_channels": 8}
SEQ = "synth-0-0000"


@pytest.fixture(scope="module")
def vss_root(tmp_path_factory):
    """One synthetic street clip, 26 frames (GOPs of 12, 12, 2), 64 x 96."""
    root = tmp_path_factory.mktemp("vss")
    generate_vss(root, clips=1, seed=0, frames=26, height=64, width=96, val_fraction=0.0)
    return root


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("arseg", **TINY).eval()


def _ids(folder, frames: int) -> np.ndarray:
    return np.stack([read_mask(folder / f"{i:05d}.png")[0] for i in range(frames)])


def test_run_writes_class_maps_overlay_and_summary(vss_root, model, tmp_path):
    video = vss_root / "videos" / f"{SEQ}.mp4"
    summary = run_arseg(video, model, tmp_path / "out", overlay=tmp_path / "overlay.mp4", json=tmp_path / "s.json")
    assert summary["frames"] == 26 and summary["keyframes"] == 3 and summary["backend"] == "torch"
    assert summary["engines"]["keyframe"]["calls"] == 3 and summary["engines"]["nonkey"]["calls"] == 23
    flops = summary["gflops_per_frame"]
    assert flops["realized"] < 0.45 * flops["dense"]
    assert json.loads((tmp_path / "s.json").read_text())["keyframes"] == 3
    ids, palette = read_mask(tmp_path / "out" / "00000.png")
    assert ids.shape == (64, 96) and ids.max() < 11
    assert (palette[:11] == class_palette(11)[:11]).all()
    assert len(read_frames(tmp_path / "overlay.mp4")) == 26

    # the frame loop computes exactly what the batched evaluation computes
    clip = load_clips(vss_root, "train")[0]
    expected = predict_clip(model, clip, 0.5)["arseg"]
    assert np.array_equal(_ids(tmp_path / "out", 26), expected)


def test_keyframe_interval_adds_keyframes_inside_gops(vss_root, model, tmp_path):
    summary = run_arseg(vss_root / "videos" / f"{SEQ}.mp4", model, tmp_path, keyframe_interval=5, max_frames=20)
    assert summary["frames"] == 20 and summary["keyframes"] == 5  # 0, 5, 10, 12 (I), 17


@pytest.mark.slow  # two dynamo exports: about 25 s of CPU
def test_exported_engines_run_in_onnxruntime_like_torch(vss_root, model, tmp_path):
    video = vss_root / "videos" / f"{SEQ}.mp4"
    manifest = export_arseg_engines(model, tmp_path / "engines", height=64, width=96)
    assert manifest["custom_ops"] == ["vseg::MVWarp"] and manifest["lr_size"] == [32, 48]
    summary = run_arseg(video, model, tmp_path / "ort", engines=tmp_path / "engines")
    assert summary["backend"] == "ort" and summary["frames"] == 26
    run_arseg(video, model, tmp_path / "torch")
    agree = (_ids(tmp_path / "ort", 26) == _ids(tmp_path / "torch", 26)).mean()
    assert agree > 0.999

    with pytest.raises(InputError, match="do not fit the engines"):
        run_arseg(video, model, tmp_path / "x", lr_scale=0.75, engines=tmp_path / "engines")
    other = build_model("arseg", **TINY).eval()
    with pytest.raises(InputError, match="other arseg weights"):
        run_arseg(video, other, tmp_path / "y", engines=tmp_path / "engines")


def test_streams_with_b_frames_are_refused_with_the_fix(tmp_path, model):
    path = tmp_path / "b.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"bf": "2", "g": "12"}
        rng = np.random.default_rng(0)
        for i in range(16):
            frame = av.VideoFrame.from_ndarray(np.roll(rng.integers(0, 255, (48, 64, 3), np.uint8), i, 1), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(AmbiguousMotionError, match="vseg transcode"):
        run_arseg(path, model, tmp_path / "out")


def test_bad_requests_are_one_line_errors(vss_root, model, tmp_path):
    video = vss_root / "videos" / f"{SEQ}.mp4"
    with pytest.raises(VsegError, match="outside 0.3..0.9"):
        run_arseg(video, model, tmp_path, lr_scale=1.0)
    with pytest.raises(InputError, match="no such file"):
        run_arseg(tmp_path / "missing.mp4", model, tmp_path)
    with pytest.raises(InputError, match="not an engine folder"):
        run_arseg(video, model, tmp_path / "out", engines=tmp_path)
