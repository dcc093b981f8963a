"""scripts/gpu_cycle.py: a training cycle in time-limited calls, scored and decided on a choosing set.

Runs on the CPU with a tiny stm and clips of 4 frames; on a GPU machine the same script trains
and scores the real models (BENCHMARKS.md)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vseg.models.registry import build_model, load_model, save_model
from vseg.models.weights import shipped_weights
from vseg.train import validate_vos

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_cycle.py"
TINY = {"key_widths": (8, 16, 16), "value_widths": (8, 16, 16), "decoder_widths": (16, 16, 16)}
SMALL = ["--train-clips", "3", "--choose-clips", "3", "--held-out-clips", "2", "--frames", "4",
         "--steps", "2", "--batch-size", "2", "--workers", "0"]


def _module():
    spec = importlib.util.spec_from_file_location("gpu_cycle", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _call(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)


def test_paired_gain_by_hand():
    gain = _module().paired_gain({"sequences": {"a": 80.0, "b": 68.0, "c": 90.0, "d": 50.0}},
                                 {"sequences": {"a": 70.0, "b": 70.0, "c": 80.0}})
    # gains 10, -2, 10 (d is not in both): mean 6, sample variance (16 + 64 + 16) / 2 = 48, stderr sqrt(48 / 3)
    assert gain == pytest.approx({"clips": 3, "mean": 6.0, "stderr": 4.0})
    scores = {"start/choose": {"J&F": 73.33, "sequences": {"a": 70.0, "b": 70.0, "c": 80.0}},
              "new/choose": {"J&F": 79.33, "sequences": {"a": 80.0, "b": 68.0, "c": 90.0}}}
    assert _module().verdict(scores)["better"] is False  # a mean of 6 is not more than 2 stderr (8)
    scores["new/choose"]["sequences"]["b"] = 75.0  # gains 10, 5, 10: mean 8.33, stderr 1.67
    assert _module().verdict(scores)["better"] is True


def test_lite_learns_from_a_frozen_teacher_and_extra_arguments_come_last(tmp_path):
    gc = _module()
    args, extra = gc.parse_args(["--model", "lite", "--scale-range", "2.6", "3.4", "--min-side", "480",
                                 "--work", str(tmp_path), "--", "--lr", "1e-4"])
    cmd = gc.train_command(args, extra, tmp_path / "data", tmp_path / "run")
    teacher = cmd.index("--teacher")
    assert cmd[teacher + 1:teacher + 5] == [str(shipped_weights("stm")), "--teacher-lr", "0", "--no-adaptive-lr"]
    assert cmd[cmd.index("--init-weights") + 1] == str(shipped_weights("lite"))
    assert cmd[cmd.index("--scale-range") + 1:][:2] == ["2.6", "3.4"] and cmd[-2:] == ["--lr", "1e-4"]
    assert cmd[cmd.index("--ema") + 1] == "0.999"
    args, _ = gc.parse_args(["--model", "stm", "--ema", "0", "--work", str(tmp_path)])
    assert "--ema" not in gc.train_command(args, [], tmp_path / "data", tmp_path / "run")
    with pytest.raises(SystemExit):
        gc.parse_args(["--model", "stm", "--teacher", str(shipped_weights("stm"))])


def test_a_cycle_over_calls_trains_scores_and_decides(tmp_path):
    torch.manual_seed(0)
    start = save_model(build_model("stm", **TINY), tmp_path / "tiny.safetensors")
    common = ["--model", "stm", "--init", str(start), "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"),
              *SMALL]
    first = _call(*common, "--call-seconds", "1")  # the data, then no time left to train
    assert first.returncode == 0, first.stderr
    assert "time is up for this call" in first.stdout and not (tmp_path / "out" / "cycle.json").exists()

    second = _call(*common)
    assert second.returncode == 0, second.stdout + second.stderr
    cycle = json.loads((tmp_path / "out" / "cycle.json").read_text())
    assert set(cycle["scores"]) == {"start/choose", "start/held-out", "new/choose", "new/held-out"}
    assert f"--init-weights {start}" in cycle["train_command"]
    gain = cycle["choose_gain"]
    assert gain["clips"] == 3 and cycle["better"] == (gain["mean"] > 2 * gain["stderr"])
    # The figures are the new weights' J&F on the choosing clips, scored the usual way.
    new = load_model(tmp_path / "out" / "stm.safetensors").float().eval()
    choose = next((tmp_path / "work" / "data").glob("seed13-*"))
    assert cycle["scores"]["new/choose"] == pytest.approx(validate_vos(new, choose)["J&F"], abs=0.01)

    third = _call(*common)  # finished: nothing trains again, the cached scores give the same verdict
    assert third.returncode == 0 and "vseg train" not in third.stdout
    assert json.loads((tmp_path / "out" / "cycle.json").read_text())["scores"] == cycle["scores"]

    other = _call(*common, "--lr", "1e-3")  # the same folder, other arguments: refused, nothing lost
    assert other.returncode == 2 and other.stderr.startswith("error:") and "another --work" in other.stderr
    assert other.stderr.count("\n") == 1 and (tmp_path / "out" / "stm.safetensors").exists()
