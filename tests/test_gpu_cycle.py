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
    assert _module().verdict(scores)["choice"] == "new"
    scores["mix/choose"] = {"J&F": 80.0, "sequences": {"a": 80.0, "b": 80.0, "c": 80.0}}  # gains 10, 10, 0
    assert _module().verdict(scores)["choice"] == "new"  # mean 6.67, stderr 3.33: not better
    scores["mix/choose"]["sequences"]["c"] = 89.0  # gains 10, 10, 9: mean 9.67 > 8.33, stderr 0.33
    decided = _module().verdict(scores)
    assert decided["better"] is True and decided["choice"] == "mix"
    assert decided["choose_gains"]["mix"]["mean"] == pytest.approx(29 / 3, abs=1e-3)


def test_files_over_the_tools_limit_go_back_in_parts_and_join_again(tmp_path):
    gc = _module()
    gc.PART_BYTES = 1000  # 15 MiB in use; small here
    big, small = tmp_path / "w.safetensors", tmp_path / "train.json"
    big.write_bytes(bytes(range(256)) * 10)  # 2560 bytes: three parts
    small.write_text("{}")
    out, dest = tmp_path / "out", tmp_path / "dest"
    out.mkdir()
    parts = gc.send_back([big, small], out)
    assert parts["w.safetensors"]["parts"] == [f"w.safetensors.part0{i}" for i in range(3)]
    assert sorted(p.name for p in out.iterdir()) == ["train.json", *parts["w.safetensors"]["parts"]]
    (out / "cycle.json").write_text(json.dumps({"parts": parts}))
    joined = _call("join", str(out), str(dest))
    assert joined.returncode == 0, joined.stderr
    assert (dest / "w.safetensors").read_bytes() == big.read_bytes()
    (out / "w.safetensors.part01").write_bytes(b"x" * 1000)  # a damaged part: refused in one line
    damaged = _call("join", str(out), str(tmp_path / "again"))
    assert damaged.returncode == 2 and damaged.stderr.count("\n") == 1 and "SHA-256" in damaged.stderr


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
    assert set(cycle["scores"]) == {f"{w}/{s}" for w in ("start", "new", "mix") for s in ("choose", "held-out")}
    assert f"--init-weights {start}" in cycle["train_command"]
    gain = cycle["choose_gains"]["new"]
    assert gain["clips"] == 3 and (cycle["choice"] == "new") <= (gain["mean"] > 2 * gain["stderr"])
    # The mix is the mean of the start and the new weights, in float16.
    mix = load_model(tmp_path / "out" / "stm-mix.safetensors").float().state_dict()
    ends = [load_model(p).float().state_dict() for p in (start, tmp_path / "out" / "stm.safetensors")]
    for name, tensor in mix.items():
        if tensor.is_floating_point():
            torch.testing.assert_close(tensor, ((ends[0][name] + ends[1][name]) / 2).half().float())
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
