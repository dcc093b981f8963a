"""Objects that enter after the first frame (YouTube-VOS style): pinned memory writes, the
inference core's later masks, the spvos policy after them, and the shipped lite tracking an
object given on frame 4 as well as one given on frame 0."""

import numpy as np
import pytest
import torch

from vseg.data.datasets import load_sequence, open_dataset
from vseg.data.synth_vos import generate_vos
from vseg.errors import InputError
from vseg.metrics.frame_jf import region_jaccard
from vseg.models.registry import build_model
from vseg.models.weights import load_named_model
from vseg.runtime.backends import TorchBackend
from vseg.runtime.given_masks import merge_given
from vseg.runtime.inference_core import InferenceCore
from vseg.runtime.memory import MemoryStore
from vseg.runtime.policies import SparsePolicy
from vseg.runtime.state import VideoState

pytestmark = pytest.mark.usefixtures("one_torch_thread")

H, W = 61, 90  # padded to 64 x 96 (1 row on top, 3 columns on the left)


def frame(i, objects=2):
    return torch.full((1, 3, 2, 2), float(i)), torch.full((1, objects, 4, 2, 2), float(i))


def test_pinned_writes_shrink_the_ring_and_are_never_overwritten():
    store = MemoryStore(capacity=5, keep_previous=True)  # slot 4 is the previous frame's
    store.add(*frame(0), frame_index=0)
    store.add(*frame(5), frame_index=5)
    assert store.add(*frame(7), frame_index=7, pin=True) == 2  # the next ring slot, now pinned
    for t in (10, 15, 20, 25):
        store.add(*frame(t), frame_index=t)
    assert store.frame_indices == [0, 25, 7, 20, -1]  # the ring is slots 1 and 3
    assert store.pinned_slots == [0, 2]
    assert store.pinnable == 1
    store.add(*frame(30), frame_index=30, pin=True)  # pins the oldest ring frame's slot (20)
    assert store.pinnable == 0
    with pytest.raises(ValueError, match="a ring slot must remain"):
        store.add(*frame(35), frame_index=35, pin=True)
    store.add(*frame(40), frame_index=40)
    assert store.frame_indices == [0, 40, 7, 30, -1] and store.pinned_slots == [0, 2, 3]


def test_an_entering_object_stops_reading_the_first_frame():
    store = MemoryStore(capacity=4)
    store.add(*frame(0), frame_index=0, present=torch.tensor([[True, False]]))  # the first: read by all
    store.add(*frame(3), frame_index=3, present=torch.tensor([[True, False]]))
    assert store.valid_per_object[0].tolist() == [[True, True, False, False], [True, False, False, False]]
    store.add(*frame(4), frame_index=4, present=torch.tensor([[True, True]]), pin=True,
              introduces=torch.tensor([[False, True]]))
    assert store.valid_per_object[0].tolist() == [[True, True, True, False], [False, False, True, False]]


def test_merge_given_sets_the_shown_objects_and_keeps_the_rest():
    probs = torch.tensor([0.2, 0.5, 0.3]).view(1, 3, 1, 1).expand(1, 3, 1, 2).clone()  # bg, a, b
    objects = torch.tensor([[0.0, 0.0], [1.0, 0.0]]).view(1, 2, 1, 2)  # b given on the left pixel
    merged = merge_given(probs, objects, torch.tensor([[False, True]]))
    torch.testing.assert_close(merged[0, :, 0, 0], torch.tensor([0.0, 0.0, 1.0]))  # b's pixel
    torch.testing.assert_close(merged[0, :, 0, 1], torch.tensor([0.5, 0.5, 0.0]))  # b absent: bg takes it


class FixedDecode(TorchBackend):
    """Decode logits that always put id 3 (object index 0) on the left third and record the
    object_valid and mem_valid each decode gets."""

    def __init__(self, model):
        super().__init__(model)
        self.fed = []

    def _run(self, engine, feeds):
        if engine != "decode":
            return super()._run(engine, feeds)
        self.fed.append((feeds["object_valid"].clone(), feeds["mem_valid"].clone()))
        logits = torch.full((1, 1 + feeds["object_valid"].shape[1], 64, 96), -5.0)
        logits[:, 0] = 0.0
        logits[:, 1, :, :33] = 5.0
        return {"logits": logits}


def masks():
    first = np.zeros((H, W), np.uint8)
    first[:, :30] = 3
    later = np.zeros((H, W), np.uint8)
    later[40:50, 60:70] = 9
    return first, later


def test_a_later_mask_starts_its_object_on_its_frame():
    torch.manual_seed(0)
    backend = FixedDecode(build_model("lite"))
    core = InferenceCore(backend, mem_every=5, capacity=8)
    first, later = masks()
    rng = np.random.default_rng(0)
    results = []
    for t in range(12):
        f = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        results.append(core.step(f, first if t == 0 else later if t == 3 else None,
                                 later_ids=[9] if t == 0 else ()))
    assert results[0].object_ids == (3, 9) and results[0].probabilities.shape == (3, H, W)
    assert all(9 not in r.ids for r in results[:3])
    np.testing.assert_array_equal(results[3].ids == 9, later == 9)  # the given pixels, exactly
    assert (results[3].ids == 3).any()  # id 3 keeps its prediction off them
    assert [r.kind for r in results[:6]] == ["first", "plain", "plain", "mask", "plain", "memory"]
    assert results[3].memory_written
    # object_valid: id 9 switched on from the frame after its mask; it never reads frame 0 again
    fed_valid = [v[0].tolist() for v, _ in backend.fed]  # decodes of frames 1..11
    assert fed_valid[:3] == [[True, False]] * 3 and fed_valid[3:] == [[True, True]] * 8
    held = core.memory.frame_indices
    assert 0 in held and 3 in held and core.memory.pinned_slots == [0, held.index(3)]
    _, mem_valid = backend.fed[-1]
    assert not mem_valid[0, 1, 0] and mem_valid[0, 1, held.index(3)]
    assert core.summary()["frame_kinds"] == {"first": 1, "plain": 8, "mask": 1, "memory": 2}


def test_later_masks_a_user_gets_wrong():
    torch.manual_seed(0)
    model = build_model("lite")
    first, later = masks()
    f = np.zeros((H, W, 3), np.uint8)
    with pytest.raises(InputError, match=r"object id\(s\) \[3\] are in the first mask already"):
        InferenceCore(model).step(f, first, later_ids=[3, 9])
    core = InferenceCore(model)
    core.step(f, first)
    with pytest.raises(InputError, match=r"00003.png: object id\(s\) \[9\] were not announced"):
        core.step(f, later, mask_name="00003.png")
    with pytest.raises(InputError, match="no objects"):
        core.step(f, np.zeros((H, W), np.uint8))
    with pytest.raises(InputError, match="mask is 60x90"):
        core.step(f, later[:60])
    assert core.frame_index == 1  # a rejected mask leaves the video where it was
    small = InferenceCore(model, capacity=4)  # first, previous, one ring slot: one more to pin
    assert small.step(f, first).frame_index == 0 and small.memory.pinnable == 1
    small.step(f, first)
    with pytest.raises(InputError, match="memory \\(4 slots\\) cannot pin another mask frame"):
        small.step(f, first)


def test_spvos_decodes_densely_after_a_mask_frame():
    policy = SparsePolicy("spvos", {"budget_low": 0.2, "budget_high": 0.8, "budget": 0.5, "dense_every": 100})
    state = VideoState(8, True, last_dense=0, decoder_ready=True)
    state.begin()
    plan = policy.plan(3, state, given_mask=True)
    assert plan.kind == "mask" and plan.writes_memory and plan.dense
    policy.after_frame(plan, {"logits": None}, None, state)
    state.commit()
    assert not policy.plan(4, state).dense and policy.plan(4, state).decode_dense  # gated key, dense decoder
    state.begin()
    policy.after_frame(policy.plan(4, state), {"logits": None}, None, state)
    state.commit()
    assert not policy.plan(5 + 1, state).decode_dense


@pytest.mark.slow
def test_the_shipped_lite_tracks_an_object_given_later(tmp_path):
    """One synthetic clip with three objects (seed 6), the last given on frame 4 (from the ground truth)
    instead of frame 0: before frame 4 it is never drawn, on frame 4 it is its mask, and from
    frame 5 on it is tracked about as well as when given on frame 0."""
    generate_vos(tmp_path, clips=1, seed=6, frames=16, height=160, width=288, val_fraction=1.0, videos=False)
    frames, gt = load_sequence(next(iter(open_dataset(tmp_path, "val"))))
    ids = [int(v) for v in np.unique(gt[0]) if v]
    late = ids[-1]
    model = load_named_model("lite")
    runs = {}
    for start in (0, 4):
        core = InferenceCore(model)
        out = []
        for t, f in enumerate(frames):
            mask = None
            if t == 0:
                mask = gt[0] if start == 0 else np.where(gt[0] == late, 0, gt[0]).astype(np.uint8)
            elif t == start:
                mask = np.where(gt[t] == late, late, 0).astype(np.uint8)
            out.append(core.step(f, mask, later_ids=[late] if t == 0 and start else ()).ids)
        runs[start] = np.stack(out)
    assert not (runs[4][:4] == late).any()
    np.testing.assert_array_equal(runs[4][4] == late, gt[4] == late)
    j = {start: np.mean([region_jaccard(g == late, p == late) for g, p in zip(gt[5:-1], pred[5:-1])])
         for start, pred in runs.items()}
    assert j[4] > 0.8 and j[4] > j[0] - 0.05, j  # measured: 0.959 and 0.949


def test_spvos_runs_a_later_mask_with_its_gate_state():
    from vseg.models.spvos import spvos_from_stm

    torch.manual_seed(0)
    core = InferenceCore(spvos_from_stm(build_model("stm")), mem_every=5, budget=0.3, dense_every=100)
    plans, plan = [], core.policy.plan
    core.policy.plan = lambda *args, **kw: plans.append(plan(*args, **kw)) or plans[-1]
    first, later = masks()
    rng = np.random.default_rng(1)
    results = [core.step(rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
                         first if t == 0 else later if t == 3 else None, later_ids=[9] if t == 0 else ())
               for t in range(6)]
    assert [r.kind for r in results] == ["first", "sparse", "sparse", "mask", "sparse", "memory"]
    np.testing.assert_array_equal(results[3].ids == 9, later == 9)
    # frame 1: no decode to reuse yet; 3: a memory write; 4: after the mask; 5: a memory write
    assert [p.decode_dense for p in plans[1:]] == [True, False, True, True, True]
