import json
import subprocess
import sys


def vseg(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "vseg", *args], capture_output=True, text=True, cwd=cwd)


def test_help_lists_commands():
    r = vseg("--help")
    assert r.returncode == 0
    for cmd in ("doctor", "data"):
        assert cmd in r.stdout


def test_doctor_json(tmp_path):
    r = vseg("doctor", "--json", str(tmp_path / "d.json"))
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "d.json").read_text())
    names = {c["name"] for c in report["checks"]}
    assert {"torch", "onnxruntime", "PyAV", "codec libx264", "TensorRT", "libvseg_plugins.so"} <= names
    assert report["ok"]


def _one_error_line(r):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr + r.stdout
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    return lines[0]


def test_eval_scores_a_folder_and_reports_bad_input(tmp_path):
    import numpy as np

    from vseg.data.palette import write_mask

    for t in range(4):
        m = np.zeros((24, 32), np.uint8)
        m[4:12, 4:12] = 1
        write_mask(tmp_path / "gt" / "s" / f"{t:05d}.png", m)
        write_mask(tmp_path / "pred" / "s" / f"{t:05d}.png", m)
    r = vseg("eval", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--json", str(tmp_path / "e.json"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-2 if "wrote" in r.stdout else -1].startswith("J&F 100.00  J 100.00  F 100.00")
    assert json.loads((tmp_path / "e.json").read_text())["dataset"]["J&F-Mean"] == 100.0
    line = _one_error_line(vseg("eval", "--pred", str(tmp_path / "missing"), "--gt", str(tmp_path / "gt")))
    assert "missing" in line


def _textured_clip(path, frames=10, bframes=0):
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    bg = rng.integers(0, 255, (120, 200, 3), dtype=np.uint8)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 128, 96, "yuv420p"
        s.options = {"x264-params": f"bframes={bframes}:b-adapt=0:keyint=30:scenecut=0"}
        for i in range(frames):
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(bg[10:106, 2 * i:2 * i + 128]))):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def test_probe_and_transcode_fix_b_frames(tmp_path):
    src = tmp_path / "b.mp4"
    _textured_clip(src, bframes=2)
    r = vseg("probe", str(src), "--json", str(tmp_path / "p.json"))
    assert r.returncode == 0, r.stderr
    assert "ambiguous" in r.stdout and "B-frames" in r.stdout and "vseg transcode" in r.stdout
    assert json.loads((tmp_path / "p.json").read_text())["has_b_frames"] is True
    r = vseg("transcode", str(src), "-o", str(tmp_path / "ip.mp4"), "--keyint", "4")
    assert r.returncode == 0, r.stderr
    r = vseg("probe", str(tmp_path / "ip.mp4"), "--json", str(tmp_path / "q.json"))
    report = json.loads((tmp_path / "q.json").read_text())
    assert report["motion_vectors_exact"] and report["gop"] == "IPPPIPPPIP"


def test_bad_videos_get_one_line(tmp_path):
    (tmp_path / "notes.mp4").write_text("not a video")
    good = tmp_path / "good.mp4"
    _textured_clip(good)
    (tmp_path / "cut.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    for bad in ("notes.mp4", "cut.mp4", "missing.mp4"):
        line = _one_error_line(vseg("probe", str(tmp_path / bad)))
        assert bad in line
        line = _one_error_line(vseg("transcode", str(tmp_path / bad), "-o", str(tmp_path / "o.mp4")))
        assert bad in line


def test_train_writes_weights_that_run_loads(tmp_path):
    from vseg.data.palette import read_mask
    from vseg.data.synth_vos import generate_vos
    from vseg.models.registry import load_model

    generate_vos(tmp_path / "data", clips=2, seed=3, frames=4, height=64, width=96, val_fraction=0.5)
    weights = tmp_path / "lite.safetensors"
    r = vseg("train", "--model", "lite", "--data", str(tmp_path / "data"), "--steps", "1", "--crop", "64", "96",
             "--no-kd", "--amp", "--dice-weight", "0.5", "--max-skip", "2", "--skip-schedule", "0.5:3", "--warmup-steps", "0",
             "--scale-range", "1.2", "1.6", "--val-data", str(tmp_path / "data"), "--val-size", "32", "48",
             "--min-side", "80", "--checkpoint-every", "7", "--lr", "3e-4", "--run-dir", str(tmp_path / "run"), "--out", str(weights),
             "--json", str(tmp_path / "t.json"))
    assert r.returncode == 0, r.stderr
    config = json.loads((tmp_path / "t.json").read_text())["config"]
    assert config["use_kd"] is False and config["amp"] is True and config["dice_weight"] == 0.5
    assert (config["max_skip"], config["warmup_steps"], config["checkpoint_every"], config["lr"]) == (2, 0, 7, 3e-4)
    assert config["skip_schedule"] == [[0.5, 3]] and config["scale_range"] == [1.2, 1.6]
    assert config["val_size"] == [32, 48] and json.loads((tmp_path / "t.json").read_text())["validation"]
    assert load_model(weights).config.min_side == 80  # --min-side goes into the weights
    seq = "synth-3-0000"
    r = vseg("run", str(tmp_path / "data" / "videos" / f"{seq}.mp4"), "--mask",
             str(tmp_path / "data" / "Annotations" / "480p" / seq / "00000.png"), "--weights", str(weights),
             "--out", str(tmp_path / "pred"), "--json", str(tmp_path / "run.json"))
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "pred").glob("*.png"))) == 4
    assert read_mask(tmp_path / "pred" / "00003.png")[0].shape == (64, 96)
    ran = json.loads((tmp_path / "run.json").read_text())
    assert ran["working_size"] == [80, 120] and ran["engine_size"] == [80, 128]  # the weights' min_side
    r = vseg("run", str(tmp_path / "data" / "videos" / f"{seq}.mp4"), "--mask",
             str(tmp_path / "data" / "Annotations" / "480p" / seq / "00000.png"), "--weights", str(weights),
             "--out", str(tmp_path / "pred2"), "--min-side", "-1")
    assert "min_side must be 0 or more" in _one_error_line(r)


def test_train_spvos_takes_its_budget_range(tmp_path):
    from vseg.data.synth_vos import generate_vos
    from vseg.models.registry import build_model, load_model, save_model

    generate_vos(tmp_path / "data", clips=1, seed=3, frames=4, height=64, width=96, val_fraction=0.0, videos=False)
    stm = save_model(build_model("stm", key_widths=(16, 32, 64), value_widths=(16, 32, 64),
                                 decoder_widths=(32, 32, 32), value_dim=64), tmp_path / "stm.safetensors")
    common = ["--data", str(tmp_path / "data"), "--init-weights", str(stm), "--crop", "64", "96",
              "--run-dir", str(tmp_path / "run"), "--warmup-steps", "0"]
    r = vseg("train", "--model", "spvos", *common, "--steps", "2", "--budget-range", "0.1", "0.3",
             "--sparsity-weight", "2.0", "--gate-lr-scale", "10", "--out", str(tmp_path / "spvos.safetensors"),
             "--json", str(tmp_path / "t.json"))
    assert r.returncode == 0, r.stderr
    config = json.loads((tmp_path / "t.json").read_text())["config"]
    assert config["sparsity_weight"] == 2.0 and config["gate_lr_scale"] == 10.0
    spvos = load_model(tmp_path / "spvos.safetensors").config
    assert (spvos.budget_low, spvos.budget_high, spvos.budget) == (0.1, 0.3, 0.3)  # the default moved into range
    r = vseg("train", "--model", "spvos", *common, "--budget-range", "0.8", "0.2")
    assert r.returncode != 0 and "--budget-range needs 0 <= LOW <= HIGH <= 1" in r.stderr
    r = vseg("train", "--model", "spvos", *common, "--gate-lr-scale", "0")
    assert r.returncode != 0 and "--gate-lr-scale must be > 0" in r.stderr


def test_train_lite_freezes_a_given_teacher_with_teacher_lr_0(tmp_path):
    from vseg.data.synth_vos import generate_vos
    from vseg.models.registry import build_model, save_model

    generate_vos(tmp_path / "data", clips=1, seed=3, frames=4, height=64, width=96, val_fraction=0.0, videos=False)
    stm = save_model(build_model("stm", key_widths=(16, 32, 64), value_widths=(16, 32, 64),
                                 decoder_widths=(32, 32, 32), value_dim=64), tmp_path / "stm.safetensors")
    common = ["--data", str(tmp_path / "data"), "--crop", "64", "96", "--run-dir", str(tmp_path / "run"),
              "--warmup-steps", "0", "--steps", "1"]
    weights = tmp_path / "lite.safetensors"
    r = vseg("train", "--model", "lite", *common, "--teacher", str(stm), "--teacher-lr", "0", "--no-adaptive-lr",
             "--out", str(weights), "--json", str(tmp_path / "t.json"))
    assert r.returncode == 0, r.stderr  # the Smooth Blocks take this narrow teacher's widths
    assert json.loads((tmp_path / "t.json").read_text())["config"]["teacher_lr"] == 0.0
    assert weights.is_file() and not list(tmp_path.glob("*teacher*"))  # a frozen teacher is not written back
    r = vseg("train", "--model", "lite", *common, "--teacher", str(stm), "--teacher-lr", "-1")
    assert r.returncode != 0 and "--teacher-lr must be >= 0" in r.stderr
    r = vseg("train", "--model", "stm", *common, "--teacher-lr", "0")
    assert r.returncode != 0 and "--teacher-lr" in _one_error_line(r)
    r = vseg("train", "--model", "stm", *common, "--skip-schedule", "0.5-12")
    assert r.returncode != 0 and "--skip-schedule takes FRACTION:SKIP" in _one_error_line(r)
    r = vseg("train", "--model", "stm", *common, "--skip-schedule", "0.5:12,0.2:5")
    assert r.returncode != 0 and "max-skip schedule needs ascending" in _one_error_line(r)
    r = vseg("train", "--model", "stm", *common, "--scale-range", "2", "1")
    assert r.returncode != 0 and "--scale-range needs 0 < LOW <= HIGH" in _one_error_line(r)
    r = vseg("train", "--model", "stm", *common, "--min-side", "-1")
    assert "--min-side needs N >= 0" in _one_error_line(r)
    r = vseg("train", "--model", "stm", *common, "--val-size", "8", "96")
    assert r.returncode != 0 and "--val-size needs" in _one_error_line(r)
    r = vseg("train", "--model", "arseg", *common, "--scale-range", "1", "2")
    assert r.returncode != 0 and "--scale-range" in _one_error_line(r)


def test_data_commands_write_layouts_and_reject_odd_sizes(tmp_path):
    r = vseg("data", "synth-vos", "--out", str(tmp_path / "vos"), "--clips", "2", "--seed", "4", "--frames", "3",
             "--height", "64", "--width", "96")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "vos" / "Annotations" / "480p" / "synth-4-0001" / "00002.png").is_file()
    r = vseg("data", "synth-vss", "--out", str(tmp_path / "vss"), "--clips", "1", "--seed", "4", "--frames", "3",
             "--height", "64", "--width", "96")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "vss" / "classes.json").is_file() and (tmp_path / "vss" / "videos").is_dir()
    line = _one_error_line(vseg("data", "synth-vos", "--out", str(tmp_path / "bad"), "--height", "65"))
    assert "even" in line
