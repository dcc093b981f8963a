"""`vseg run` / `demo` / `profile` on the torch backend: overlay and JSON sinks, interruption
(SIGINT and KeyboardInterrupt) and --resume, bad input as one line."""

import json
import os
import signal

import numpy as np
import pytest
import torch
from cli_helpers import one_error_line, vseg

from vseg.data.palette import read_mask
from vseg.data.synth_vos import generate_vos
from vseg.data.video import VideoSource
from vseg.errors import InputError
from vseg.models.registry import build_model, save_model
from vseg.runtime.backends import TorchBackend
from vseg.runtime.run_vos import RUN_RECORD, RunInterrupted, run_vos

TINY = {"key_widths": (8, 16, 16), "value_widths": (8, 16, 16), "decoder_widths": (16, 16, 16),
        "key_dim": 16, "value_dim": 16}
T = 9


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip")
    generate_vos(root / "data", clips=1, seed=4, frames=T, height=64, width=96, val_fraction=0.0)
    torch.manual_seed(0)
    weights = save_model(build_model("lite", width=0.25, value_width=0.25, decoder_widths=(16, 16, 16)),
                         root / "lite.safetensors")
    video = root / "data" / "videos" / "synth-4-0000.mp4"
    mask = root / "data" / "Annotations" / "480p" / "synth-4-0000" / "00000.png"
    return video, mask, weights


def backend(weights):
    from vseg.models.weights import load_named_model

    return TorchBackend(load_named_model("lite", weights)).activate()


def pngs(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


def test_run_writes_overlay_and_json_summary(clip, tmp_path):
    video, mask, weights = clip
    r = vseg("run", str(video), "--mask", str(mask), "--weights", str(weights), "--out", str(tmp_path / "o"),
             "--overlay", str(tmp_path / "overlay.mp4"), "--json", str(tmp_path / "s.json"), "--mem-every", "4",
             "--no-keep-previous")
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["policy"] == {"mem_every": 4, "keep_previous": False}
    assert s["frames"] == s["written"] == T and s["model"] == "lite"
    assert s["frame_kinds"] == {"first": 1, "plain": 6, "memory": 2} and s["memory_writes"] == s["keyframes"] == 3
    # without the previous-frame slot, only the memory writes encode values
    assert [s["engine_ms"][e]["calls"] for e in ("encode_key", "decode", "encode_value")] == [T, T - 1, 3]
    per_frame = np.array(s["gflops"]["per_frame"])
    assert per_frame.shape == (T, 2) and np.allclose(per_frame[:, 0], per_frame[:, 1])  # dense model
    assert s["gflops"]["dense_total"] == pytest.approx(per_frame[:, 0].sum(), abs=1e-3)
    assert s["backend"]["providers"] == ["torch-cpu"]
    with VideoSource(tmp_path / "overlay.mp4", motion_vectors=False) as overlay:
        frames = [f.rgb for f in overlay]
    with VideoSource(video, motion_vectors=False) as source:
        first = next(iter(source)).rgb
    assert len(frames) == T and frames[0].shape == (64, 96, 3)
    ids, palette = read_mask(mask)
    # H.264 is lossy: compare means. Object pixels take half the palette colour, background stays.
    blended = first[ids > 0].astype(float) * 0.5 + palette[ids[ids > 0]] * 0.5
    assert np.abs(frames[0][ids > 0].astype(float).mean(0) - blended.mean(0)).max() < 8
    assert np.abs(frames[0][ids == 0].astype(float).mean(0) - first[ids == 0].mean(0)).max() < 8


def test_interrupted_run_resumes_to_the_uninterrupted_result(clip, tmp_path):
    video, mask, weights = clip
    runner = backend(weights)
    full = run_vos(video, mask, runner, tmp_path / "full", mem_every=3)
    expected = pngs(tmp_path / "full")

    def stop_at(k):
        def on_frame(index, total):
            if index == k:
                raise KeyboardInterrupt
        return on_frame

    out = tmp_path / "cut"
    run_vos(video, mask, runner, out, mem_every=4)  # an earlier, other run: its frames must not count as done
    with pytest.raises(RunInterrupted, match="interrupted: 5 frames .* --resume") as caught:
        run_vos(video, mask, runner, out, mem_every=3, overlay=tmp_path / "cut.mp4", on_frame=stop_at(4))
    assert caught.value.exit_code == 130
    assert list(pngs(out)) == [f"{i:05d}.png" for i in range(5)]
    with VideoSource(tmp_path / "cut.mp4", motion_vectors=False) as overlay:  # finalized: a valid mp4
        assert sum(1 for _ in overlay) == 5
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    with pytest.raises(InputError, match="differs in policy"):
        run_vos(video, mask, runner, out, mem_every=4, resume=True)
    resumed = run_vos(video, mask, runner, out, mem_every=3, resume=True)
    assert resumed["resumed_at"] == 5 and resumed["written"] == T - 5 and resumed["frames"] == T
    assert pngs(out) == expected  # byte for byte
    assert all(p.stat().st_mtime_ns == stamps[p.name] for p in out.glob("*.png") if p.name in stamps)
    assert resumed["gflops"] == full["gflops"]
    with pytest.raises(InputError, match="nothing to resume"):
        run_vos(video, mask, runner, tmp_path / "fresh", resume=True)


def test_no_skip_absent_is_recorded_and_a_resume_must_match_it(clip, tmp_path):
    video, mask, weights = clip
    out = tmp_path / "o"
    r = vseg("run", str(video), "--mask", str(mask), "--weights", str(weights), "--out", str(out),
             "--no-skip-absent", "--max-frames", "3")
    assert r.returncode == 0, r.stderr
    assert json.loads((out / RUN_RECORD).read_text())["skip_absent"] is False
    line = one_error_line(vseg("run", str(video), "--mask", str(mask), "--weights", str(weights), "--out", str(out),
                               "--resume"))
    assert "skip_absent" in line


def test_sigint_finishes_the_current_frame_and_stops(clip, tmp_path):
    video, mask, weights = clip

    def on_frame(index, total):
        if index == 2:
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C would, in the middle of the run

    previous = signal.getsignal(signal.SIGINT)
    with pytest.raises(RunInterrupted, match="interrupted: 3 frames"):
        run_vos(video, mask, backend(weights), tmp_path / "o", on_frame=on_frame)
    assert signal.getsignal(signal.SIGINT) is previous
    assert list(pngs(tmp_path / "o")) == ["00000.png", "00001.png", "00002.png"]
    assert (tmp_path / "o" / RUN_RECORD).is_file()


def test_truncated_stream_and_resume_without_record_are_one_line(clip, tmp_path):
    video, mask, weights = clip
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    line = one_error_line(vseg("run", str(cut), "--mask", str(mask), "--weights", str(weights),
                               "--out", str(tmp_path / "o")))
    assert "cut.mp4" in line
    line = one_error_line(vseg("run", str(video), "--mask", str(mask), "--model", "stm", "--weights", str(weights),
                               "--out", str(tmp_path / "o")))
    assert "lite" in line and "stm" in line
    line = one_error_line(vseg("run", str(video), "--mask", str(mask), "--backend", "trt"))
    assert "pass --engines DIR" in line and "vseg build" in line


def test_demo_and_profile_commands(clip, tmp_path):
    video, mask, weights = clip
    r = vseg("demo", "--out", str(tmp_path / "demo"), "--weights", str(weights), "--frames", "4",
             "--height", "64", "--width", "96", "--json", str(tmp_path / "demo.json"))
    assert r.returncode == 0, r.stderr
    assert "J&F" in r.stdout
    demo = json.loads((tmp_path / "demo.json").read_text())
    assert 0 <= demo["J&F"] <= 100 and len(list((tmp_path / "demo" / "pred" / demo["clip"]).glob("*.png"))) == 4
    assert (tmp_path / "demo" / f"{demo['clip']}_overlay.mp4").is_file()

    r = vseg("profile", "--model", "lite", "--weights", str(weights), "--video", str(video), "--mask", str(mask),
             "--frames", "6", "--warmup", "2", "--json", str(tmp_path / "p.json"), "--plot", str(tmp_path / "p.png"),
             "--no-skip-absent")
    assert r.returncode == 0, r.stderr
    p = json.loads((tmp_path / "p.json").read_text())
    assert p["frames"] == 6 and len(p["per_frame"]) == 6 and p["fps_end_to_end"] > 0 and p["skip_absent"] is False
    assert [f["kind"] for f in p["per_frame"]] == ["first", "plain", "plain", "plain", "plain", "memory"]
    assert p["latency_ms"]["p50"] <= p["latency_ms"]["p90"] <= p["latency_ms"]["p99"]
    assert p["engine_ms"]["encode_key"]["calls"] == 6 and p["memory"]["peak_rss_mib"] > 0
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    r = vseg("profile", "--model", "lite", "--weights", str(weights), "--video", str(video), "--mask", str(mask),
             "--frames", "6", "--warmup", "2", "--no-skip-absent", "--flip", "--json", str(tmp_path / "f.json"))
    assert r.returncode == 0, r.stderr
    f = json.loads((tmp_path / "f.json").read_text())  # --flip: every engine twice, the same frame kinds
    assert f["flip"] is True and f["engine_ms"]["encode_key"]["calls"] == 12
    assert f["gflops"]["dense_per_frame"] == pytest.approx(2 * p["gflops"]["dense_per_frame"], rel=1e-3)
    assert [x["kind"] for x in f["per_frame"]] == [x["kind"] for x in p["per_frame"]]
