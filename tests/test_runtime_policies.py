"""Scheduler policies (frame kinds, state, GFLOPs per frame) and the torch backend's runner
interface; backend choice errors."""

import numpy as np
import pytest
import torch

from vseg.errors import VsegError
from vseg.models.registry import build_model, step_gflops
from vseg.runtime.backends import TorchBackend, choose_providers, open_backend
from vseg.runtime.inference_core import InferenceCore
from vseg.runtime.policies import MemoryPolicy, SparsePolicy, StffPolicy, make_policy, value_encode_share

TINY = {"key_widths": (8, 16, 16), "value_widths": (8, 16, 16), "decoder_widths": (16, 16, 16),
        "key_dim": 16, "value_dim": 16}
TINY_LITE = {"width": 0.25, "value_width": 0.25, "decoder_widths": (16, 16, 16)}
H, W = 40, 60  # padded to 48 x 64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {"stm": build_model("stm", **TINY).eval(), "lite": build_model("lite", **TINY_LITE).eval(),
            "spvos": build_model("spvos", **TINY, gate_hidden=4).eval()}


def clip(num_frames, seed=0):
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(num_frames)]
    mask = np.zeros((H, W), np.uint8)
    mask[5:25, 10:30] = 4
    mask[20:35, 35:55] = 9
    return frames, mask


def run(core, frames, mask):
    return [core.step(f, mask if t == 0 else None) for t, f in enumerate(frames)]


def test_make_policy_picks_one_policy_per_family(models):
    def policy(name, **options):
        backend = TorchBackend(models[name])
        return make_policy(backend.model_name, backend.model_config, **options)

    assert type(policy("stm")) is MemoryPolicy
    assert type(policy("lite")) is StffPolicy
    assert type(make_policy("lite", {"use_stff": False})) is MemoryPolicy
    assert type(policy("spvos", budget=0.3)) is SparsePolicy
    with pytest.raises(VsegError, match="apply to spvos, not stm"):
        policy("stm", budget=0.3)
    with pytest.raises(VsegError, match="outside the range"):
        policy("spvos", budget=0.95)
    with pytest.raises(VsegError, match="mem_every"):
        policy("stm", mem_every=0)


@pytest.mark.parametrize("keep_previous", [False, True])
def test_stm_schedule_and_gflops(models, keep_previous):
    frames, mask = clip(7)
    core = InferenceCore(models["stm"], mem_every=3, capacity=4, keep_previous=keep_previous)
    results = run(core, frames[:6], mask)
    # Writes at 0 and 3; with keep_previous the last slot holds the newest frame since then (5).
    assert core.memory.frame_indices == ([0, 3, -1, 5] if keep_previous else [0, 3, -1, -1])
    # the benchmarks' per-frame average of encode_value runs, over whole write periods
    assert core.summary()["engine_ms"]["encode_value"]["calls"] == 6 * value_encode_share(3, keep_previous)
    results.append(core.step(frames[6]))
    assert [r.kind for r in results] == ["first", "plain", "plain", "memory", "plain", "plain", "memory"]
    assert [r.memory_written for r in results] == [True, False, False, True, False, False, True]
    # A memory write puts the newest frame in the ring, so the previous-frame slot empties.
    assert core.memory.frame_indices == [0, 3, 6, -1]
    g = step_gflops(models["stm"], 48, 64, num_objects=2, capacity=4)
    expected = {"first": g["encode_key"] + g["encode_value"], "memory": g["step"] + g["encode_value"],
                "plain": g["step"] + (g["encode_value"] if keep_previous else 0.0)}
    for r in results:
        assert r.gflops.dense == r.gflops.realized == pytest.approx(expected[r.kind])
    summary = core.summary()
    assert summary["gflops"]["dense_total"] == pytest.approx(sum(expected[r.kind] for r in results), abs=1e-3)
    assert summary["keyframes"] == summary["memory_writes"] == 3
    assert summary["policy"] == {"mem_every": 3, "keep_previous": keep_previous}
    assert summary["engine_ms"]["encode_key"]["calls"] == 7 and summary["engine_ms"]["decode"]["calls"] == 6
    assert summary["engine_ms"]["encode_value"]["calls"] == (7 if keep_previous else 3)


def test_the_previous_frame_needs_a_third_memory_slot(models):
    frames, mask = clip(1)
    with pytest.raises(VsegError, match="the previous frame need 3 slots: use a larger capacity or --no-keep-previous"):
        InferenceCore(models["stm"], capacity=2).step(frames[0], mask)
    InferenceCore(models["stm"], capacity=2, keep_previous=False).step(frames[0], mask)


def test_lite_carries_the_previous_frame_through_the_state(models):
    # (test_inference_core checks the whole STFF computation against the model run by hand)
    frames, mask = clip(3, seed=1)
    core = InferenceCore(models["lite"], mem_every=5)
    results = run(core, frames, mask)
    specs = core.backend.input_specs("encode_key")
    assert core.state["prev_feat16"].shape == specs["prev_feat16"].shape
    assert not torch.equal(core.state["prev_feat16"], torch.zeros(specs["prev_feat16"].shape))
    # The last frame's foreground, 1 - background, inside the padding (2 columns, 4 rows each side)
    torch.testing.assert_close(core.state["prev_fg"][0, 0, 4:4 + H, 2:2 + W], 1 - results[-1].probabilities[0])


def test_spvos_schedule_gate_state_and_realized_gflops(models):
    frames, mask = clip(8, seed=2)
    core = InferenceCore(models["spvos"], mem_every=5, dense_every=3, budget=0.3)
    results = run(core, frames, mask)
    assert [r.kind for r in results] == ["first", "sparse", "sparse", "refresh", "sparse", "memory", "sparse",
                                         "sparse"]
    assert [r.key_cost.dense for r in results] == [True, False, False, True, False, True, False, False]
    for r in results:
        if r.key_cost.dense:
            assert r.gflops.realized == pytest.approx(r.gflops.dense)
        else:  # random gates: any mix of reuse/coarse/dense, never above dense plus the gates' own work
            assert r.gflops.realized < r.gflops.dense + 0.01
    summary = core.summary()
    assert summary["sparse"]["budget"] == 0.3 and summary["sparse"]["dense_frames"] == 3
    assert summary["keyframes"] == 3 and summary["frame_kinds"] == {"first": 1, "sparse": 5, "refresh": 1,
                                                                    "memory": 1}
    state_names = [n for n in core.backend.input_specs("encode_key") if n.startswith("state_in.")]
    assert len(state_names) == 3 * len(models["spvos"].gated_blocks())
    assert all(core.state[n].shape == core.backend.input_specs("encode_key")[n].shape for n in state_names)


def test_torch_backend_runs_the_model_stages_and_times_each_call(models):
    model = models["stm"]
    backend = TorchBackend(model)
    frame = torch.rand(1, 3, 48, 64)
    with pytest.raises(RuntimeError, match="activate"):
        backend.infer("encode_key", {"frame": frame})
    with backend:
        out = backend.infer("encode_key", {"frame": frame.numpy()})  # numpy feeds work too
        with pytest.raises(KeyError, match="no feed for input 'masks'"):
            backend.infer("encode_value", {"frame": frame, "feat16": out["feat16"]})
    assert not backend.active
    with torch.no_grad():
        expected = model.encode_key(frame)
    assert list(out) == ["key", "feat16", "skip8", "skip4"]
    assert torch.equal(out["key"], expected.key) and torch.equal(out["skip4"], expected.skip4)
    times = backend.timing_summary()
    assert times["encode_key"]["calls"] == 1 and times["encode_key"]["total_ms"] > 0
    assert times["decode"] == {"calls": 0, "total_ms": 0.0, "mean_ms": None}
    described = backend.describe()
    assert described["backend"] == "torch" and described["model"] == "stm" and described["providers"] == ["torch-cpu"]


def test_backend_choice_errors_are_one_line(tmp_path):
    with pytest.raises(VsegError, match="the trt backend runs an engine folder: pass --engines DIR"):
        open_backend("trt", "lite")
    with pytest.raises(VsegError, match="unknown backend 'tensorflow'"):
        open_backend("tensorflow", "lite")
    with pytest.raises(VsegError, match="pass --engines DIR"):
        open_backend("ort", "lite")
    with pytest.raises(VsegError, match="--weights is for the torch backend"):
        open_backend("ort", "lite", weights=tmp_path / "w.safetensors", engines=tmp_path)
    with pytest.raises(VsegError, match="--engines runs an exported folder"):
        open_backend("torch", "lite", engines=tmp_path)
    with pytest.raises(VsegError, match="not an engine folder"):
        open_backend("ort", "lite", engines=tmp_path)
    with pytest.raises(VsegError, match="has no NoSuchExecutionProvider"):
        choose_providers(["NoSuchExecutionProvider"])
    assert choose_providers(None)[-1] == "CPUExecutionProvider"
