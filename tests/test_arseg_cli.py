"""`vseg train / export / run --model arseg` end to end through the command line."""

import json

import numpy as np
import pytest
from cli_helpers import one_error_line, vseg
from PIL import Image

from vseg.data.synth_vss import generate_vss
from vseg.models.registry import build_model, load_model, save_model

TINY = {"stem_width": 8, "widths": [8, 8, 16, 16], "feature_channels": 8}
SEQ = "synth-0-0000"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("arseg-cli")
    generate_vss(root / "data", clips=1, seed=0, frames=14, height=64, width=96, val_fraction=0.0)
    weights = save_model(build_model("arseg", **TINY), root / "arseg.safetensors")
    return root, root / "data" / "videos" / f"{SEQ}.mp4", weights


def test_run_and_export_arseg(setup, tmp_path):
    root, video, weights = setup
    r = vseg("run", str(video), "--model", "arseg", "--weights", str(weights), "--out", str(tmp_path / "torch"),
             "--json", str(tmp_path / "s.json"))
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["frames"] == 14 and summary["keyframes"] == 2  # I-frames 0 and 12 (keyint 12)
    torch_maps = [np.asarray(Image.open(tmp_path / "torch" / f"{i:05d}.png")) for i in range(14)]
    assert torch_maps[0].shape == (64, 96)
    r = vseg("export", "--model", "arseg", "--weights", str(weights), "--height", "64", "--width", "96",
             "--flavor", "portable", "--out", str(tmp_path / "engines"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "engines" / "manifest.json").is_file()
    r = vseg("run", str(video), "--model", "arseg", "--weights", str(weights), "--backend", "ort",
             "--engines", str(tmp_path / "engines"), "--out", str(tmp_path / "ort"))
    assert r.returncode == 0, r.stderr
    ort_maps = [np.asarray(Image.open(tmp_path / "ort" / f"{i:05d}.png")) for i in range(14)]
    agree = np.mean([np.mean(a == b) for a, b in zip(torch_maps, ort_maps)])
    assert agree > 0.999


def test_train_arseg_through_the_cli(setup, tmp_path):
    root, _, _ = setup
    r = vseg("train", "--model", "arseg", "--data", str(root / "data"), "--stage-steps", "1", "1", "1",
             "--batch-size", "2", "--lr", "1e-3", "--crop", "48", "64", "--warmup-steps", "2",
             "--run-dir", str(tmp_path / "run"), "--json", str(tmp_path / "t.json"))
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "t.json").read_text())
    assert (tmp_path / "run" / "arseg.safetensors").is_file() and result["lr_alone_weights"]
    config = result["config"]  # the shared options reach arseg's own config
    assert (config["lr"], config["crop"], config["warmup_steps"], config["batch_size"]) == (1e-3, [48, 64], 2, 2)


def test_train_rejects_options_the_model_would_ignore(setup, tmp_path):
    root, _, _ = setup
    data = ["--data", str(root / "data"), "--run-dir", str(tmp_path)]
    line = one_error_line(vseg("train", "--model", "arseg", *data, "--amp", "--val-every", "5"))
    assert "--amp/--no-amp" in line and "--val-every" in line and "read by stm, lite, spvos only" in line
    assert "--stage-steps" in one_error_line(vseg("train", "--model", "arseg", *data, "--steps", "10"))
    line = one_error_line(vseg("train", "--model", "stm", *data, "--keep-lr"))
    assert "--lr-from-hr/--keep-lr" in line and "read by arseg only" in line
    for model in ("stm", "spvos"):  # the distillation switches belong to lite alone
        line = one_error_line(vseg("train", "--model", model, *data, "--teacher", "t.safetensors", "--no-stff"))
        assert "--teacher" in line and "--stff/--no-stff" in line and "read by lite only" in line
    line = one_error_line(vseg("train", "--model", "lite", *data, "--budget-range", "0.1", "0.5"))
    assert "--budget-range" in line and "read by spvos only" in line
    assert not (tmp_path / "checkpoints").exists()  # nothing started


def _branch_gap(model, name: str, other: str) -> float:
    """Largest difference between the parameters of two branches (hr and lr share one layout;
    BatchNorm's running statistics are left out: a training step updates them)."""
    a, b = dict(getattr(model, name).named_parameters()), dict(getattr(model, other).named_parameters())
    return max(float((a[k] - b[k]).detach().abs().max()) for k in a)


@pytest.mark.parametrize("keep", [True, False])
def test_phase2_continues_from_saved_weights_with_keep_lr(setup, tmp_path, keep):
    root, _, weights = setup
    start = load_model(weights)
    assert _branch_gap(start, "lr", "hr") > 1e-2  # random init: the two branches differ
    r = vseg("train", "--model", "arseg", "--data", str(root / "data"), "--stage-steps", "0", "0", "1",
             "--batch-size", "2", "--init-weights", str(weights), "--keep-lr" if keep else "--lr-from-hr",
             "--run-dir", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    trained = load_model(tmp_path / "run" / "arseg.safetensors")
    # one warm-up step moves a weight by about lr / warmup_steps = 4e-5
    if keep:
        assert max(float((a - b).detach().abs().max()) for a, b in
                   zip(trained.lr.parameters(), start.lr.parameters())) < 1e-3
    else:
        assert _branch_gap(trained, "lr", "hr") < 1e-3


def test_keep_lr_needs_init_weights(setup, tmp_path):
    root, _, _ = setup
    assert "--init-weights" in one_error_line(vseg("train", "--model", "arseg", "--data", str(root / "data"),
                                                   "--keep-lr", "--run-dir", str(tmp_path)))


def test_vos_models_need_a_mask_and_arseg_needs_its_backend_pairing(setup, tmp_path):
    root, video, weights = setup
    assert "batch size >= 2" in one_error_line(vseg("train", "--model", "arseg", "--data", str(root / "data"),
                                                    "--batch-size", "1", "--run-dir", str(tmp_path)))
    assert "--mask" in one_error_line(vseg("run", str(video), "--model", "lite"))
    assert "engines" in one_error_line(vseg("run", str(video), "--model", "arseg", "--weights", str(weights),
                                            "--backend", "ort"))
