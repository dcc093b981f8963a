"""Double-buffered runtime state: the memory banks and named values change only when a frame
commits, and a frame that fails half way leaves the core able to go on as if it never ran."""

import numpy as np
import pytest
import torch

from vseg.models.registry import build_model
from vseg.runtime.backends import TorchBackend
from vseg.runtime.inference_core import InferenceCore
from vseg.runtime.memory import MemoryStore
from vseg.runtime.state import DoubleBufferedMemory, VideoState

TINY = {"key_widths": (8, 16, 16), "value_widths": (8, 16, 16), "decoder_widths": (16, 16, 16),
        "key_dim": 16, "value_dim": 16}
H, W = 50, 70


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def memory_frame(i):
    return torch.full((1, 2, 3, 3), float(i)), torch.full((1, 2, 4, 3, 3), float(i))


@pytest.mark.parametrize("keep_previous", [False, True])
def test_memory_front_follows_the_committed_writes_only(keep_previous):
    rng = np.random.default_rng(0)
    banks = DoubleBufferedMemory(capacity=4, keep_previous=keep_previous)
    reference = MemoryStore(capacity=4, keep_previous=keep_previous)
    for i in range(60):
        action = rng.choice(["commit", "discard", "none"])
        # with keep_previous, most frames after the first go into the previous-frame slot
        previous = keep_previous and reference.num_writes > 0 and rng.random() < 0.7
        if action != "none":
            banks.write(*memory_frame(i), frame_index=i, previous=previous)
            with pytest.raises(RuntimeError, match="one memory write per frame"):
                banks.write(*memory_frame(i), frame_index=i)
        if action == "commit":
            banks.commit()
            (reference.set_previous if previous else reference.add)(*memory_frame(i), frame_index=i)
        else:
            banks.discard()
        if reference.num_writes:
            assert torch.equal(banks.front.keys, reference.keys) and torch.equal(banks.front.values, reference.values)
            assert torch.equal(banks.front.valid, reference.valid)
        assert banks.front.frame_indices == reference.frame_indices
        assert banks.front.num_writes == reference.num_writes


def test_named_values_change_on_commit_only():
    state = VideoState(capacity=2, frame_index=0, prev=torch.zeros(1))
    state.begin()
    state.set("frame_index", 1)
    state.set("prev", torch.ones(1))
    assert state["frame_index"] == 0 and state.get("frame_index") == 1  # front vs this frame's back buffer
    state.discard()
    assert state["frame_index"] == 0 and torch.equal(state["prev"], torch.zeros(1))
    state.begin()
    state.set("frame_index", 1)
    state.commit()
    assert state["frame_index"] == 1
    with pytest.raises(RuntimeError, match="begin"):
        state.set("frame_index", 2)


class FailsOnce(TorchBackend):
    """The torch backend, raising once on the n-th call of one engine (a fault mid-frame)."""

    def __init__(self, model, engine, call):
        super().__init__(model)
        self.fail_engine, self.fail_call, self.calls = engine, call, 0

    def _run(self, engine, feeds):
        if engine == self.fail_engine:
            self.calls += 1
            if self.calls == self.fail_call:
                raise RuntimeError("engine fault")
        return super()._run(engine, feeds)


@pytest.mark.parametrize("name, engine, call", [
    ("lite", "encode_value", 2),  # frame 3's memory write fails after its key and decode ran
    ("spvos", "decode", 4),  # a gated frame fails after its key encoder produced new gate state
])
def test_a_failed_frame_leaves_the_state_of_the_last_finished_frame(name, engine, call):
    torch.manual_seed(0)
    overrides = TINY if name == "spvos" else {"width": 0.25, "value_width": 0.25, "decoder_widths": (16, 16, 16)}
    model = build_model(name, **overrides).eval()
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(7)]
    mask = np.zeros((H, W), np.uint8)
    mask[10:30, 10:40] = 2
    options = {"mem_every": 3, **({"dense_every": 4, "budget": 0.5} if name == "spvos" else {})}
    clean = InferenceCore(TorchBackend(model), **options)
    faulty = InferenceCore(FailsOnce(model, engine, call), **options)
    failures = 0
    for t, frame in enumerate(frames):
        expected = clean.step(frame, mask if t == 0 else None)
        try:
            got = faulty.step(frame, mask if t == 0 else None)
        except RuntimeError:
            failures += 1
            assert faulty.frame_index == t  # nothing of the frame stuck
            got = faulty.step(frame, mask if t == 0 else None)
        assert torch.equal(got.probabilities, expected.probabilities), t
        assert got.kind == expected.kind
    assert failures == 1
    assert faulty.memory.frame_indices == clean.memory.frame_indices
    assert faulty.summary()["frame_kinds"] == clean.summary()["frame_kinds"]
