"""scripts/interpolate_weights.py: the mix of two weight files of one model, and its refusals;
scripts/set_min_side.py: a working size written into a file without touching its tensors."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vseg.errors import InputError, VsegError
from vseg.models.registry import build_model, load_model, save_model
from vseg.models.weights import interpolate_weights

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "interpolate_weights.py"
TINY = {"key_widths": (8, 16, 16), "value_widths": (8, 16, 16), "decoder_widths": (16, 16, 16)}


@pytest.fixture()
def two_stms(tmp_path):
    torch.manual_seed(0)
    return save_model(build_model("stm", **TINY), tmp_path / "a.safetensors"), \
        save_model(build_model("stm", **TINY), tmp_path / "b.safetensors")


def test_interpolation_is_the_weighted_mean_of_every_float_tensor(two_stms):
    a, b = (load_model(p).state_dict() for p in two_stms)
    for t in (0.0, 0.3, 1.0):
        mixed = interpolate_weights(*two_stms, t).state_dict()
        for name, tensor in mixed.items():
            if tensor.is_floating_point():
                torch.testing.assert_close(tensor, (1 - t) * a[name].float() + t * b[name].float())
            else:
                assert torch.equal(tensor, b[name])
    assert any(not torch.equal(a[n], b[n]) for n in a)  # two different networks, so the test can fail


def test_other_models_and_weights_outside_0_1_are_refused(two_stms, tmp_path):
    other = save_model(build_model("stm", **{**TINY, "key_dim": 32}), tmp_path / "c.safetensors")
    with pytest.raises(InputError, match="hold different models"):
        interpolate_weights(two_stms[0], other, 0.5)
    with pytest.raises(VsegError, match=r"must be in \[0, 1\]"):
        interpolate_weights(*two_stms, 1.5)


def test_script_writes_fp16_weights_and_errors_in_one_line(two_stms, tmp_path):
    out = tmp_path / "mix.safetensors"
    done = subprocess.run([sys.executable, str(SCRIPT), *map(str, two_stms), "--t", "0.5", "--out", str(out),
                           "--fp16"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    stored = load_file(out)
    assert {t.dtype for t in stored.values() if t.is_floating_point()} == {torch.float16}
    failed = subprocess.run([sys.executable, str(SCRIPT), str(two_stms[0]), str(tmp_path / "none.safetensors"),
                             "--t", "0.5", "--out", str(tmp_path / "x.safetensors")], capture_output=True, text=True,
                            check=False)
    assert failed.returncode == 2 and failed.stderr.startswith("error:") and "Traceback" not in failed.stderr
    assert not (tmp_path / "x.safetensors").exists()


SET_MIN_SIDE = SCRIPT.with_name("set_min_side.py")


def test_set_min_side_changes_the_config_and_no_tensor(two_stms, tmp_path):
    out = tmp_path / "scaled.safetensors"
    r = subprocess.run([sys.executable, str(SET_MIN_SIDE), str(two_stms[0]), "--min-side", "320", "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert load_model(out).config.min_side == 320 and load_model(two_stms[0]).config.min_side == 0
    before, after = load_file(two_stms[0]), load_file(out)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    r = subprocess.run([sys.executable, str(SET_MIN_SIDE), str(tmp_path / "none.safetensors"), "--min-side", "320",
                        "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no such weights file" in r.stderr


def test_weights_of_two_working_sizes_mix_at_the_one_asked_for(tmp_path, two_stms):
    at_480 = save_model(build_model("stm", **{**TINY, "min_side": 480}), tmp_path / "x3.safetensors")
    with pytest.raises(InputError, match="configs differ"):
        interpolate_weights(two_stms[0], at_480, 0.5)
    out = tmp_path / "mix.safetensors"
    done = subprocess.run([sys.executable, str(SCRIPT), str(two_stms[0]), str(at_480), "--t", "0.5", "--min-side", "480",
                           "--out", str(out)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    mixed = load_model(out)
    assert mixed.config.min_side == 480 and load_model(two_stms[0]).config.min_side != 480
    a, b = load_model(two_stms[0]).state_dict(), load_model(at_480).state_dict()
    for name, tensor in mixed.state_dict().items():
        if tensor.is_floating_point():
            torch.testing.assert_close(tensor, (a[name].float() + b[name].float()) / 2)
