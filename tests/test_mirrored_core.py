"""MirroredCore (test-time flip augmentation, ``vseg run --flip``): two independent cores
averaged by hand; with share_memory, what each memory writes against the two runs' decoded
probabilities averaged by hand; a mirror-symmetric video giving mirror-symmetric masks; a failing
frame leaving both runs where they were; an object entering later; ``vseg run --flip`` end to end
(the ort backend: test_runtime_ort.py); lite and spvos pairs against two cores by hand."""

import json

import numpy as np
import pytest
import torch
from cli_helpers import one_error_line, vseg

from vseg.data.palette import read_mask
from vseg.data.synth_vos import generate_vos
from vseg.data.video import read_frames
from vseg.models.registry import build_model, save_model
from vseg.runtime.backends import TorchBackend
from vseg.runtime.inference_core import InferenceCore
from vseg.runtime.mirrored import MirroredCore, mirror

H, W = 61, 90  # padded to 64 x 96: 3 columns each side, so the mirrored frame pads alike
TINY = {"key_widths": (8, 16, 16), "value_widths": (8, 16, 16), "decoder_widths": (16, 16, 16),
        "key_dim": 16, "value_dim": 16}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def stm():
    torch.manual_seed(0)
    return build_model("stm", **TINY).eval()


def video(num_frames, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(num_frames)]


def id_mask():
    mask = np.zeros((H, W), np.uint8)
    mask[5:20, 10:40], mask[30:50, 50:70] = 3, 7
    return mask


class Recording(TorchBackend):
    """A torch backend that keeps every engine call: (engine, feeds, outputs)."""

    def __init__(self, model):
        super().__init__(model)
        self.calls = []

    def _run(self, engine, feeds):
        outputs = super()._run(engine, feeds)
        self.calls.append((engine, {k: v.clone() for k, v in feeds.items() if isinstance(v, torch.Tensor)},
                           {k: v.clone() for k, v in outputs.items()}))
        return outputs


def content(x):
    """Padded [..., 64, 96] -> the frame's own 61 x 90 pixels (1 row on top, 3 columns left)."""
    return x[..., 1:1 + H, 3:3 + W]


def pair_and_two_cores(pair, model, frames, mask, **options):
    """Steps ``pair`` and, beside it, two InferenceCores of ``model`` (one fed the mirrored
    video); yields (the pair's result, the two cores' probabilities averaged by hand) per frame."""
    plain, mirrored = InferenceCore(model, **options), InferenceCore(model, **options)
    for t, frame in enumerate(frames):
        m = mask if t == 0 else None
        ours = pair.step(frame, m)
        yield ours, (plain.step(frame, m).probabilities
                     + torch.flip(mirrored.step(mirror(frame), mirror(m)).probabilities, dims=[-1])) / 2


def test_with_share_memory_both_memories_write_the_average_of_the_two_runs(stm):
    backend = Recording(stm)
    pair = MirroredCore(backend, share_memory=True, mem_every=1)
    frames, mask = video(4), id_mask()
    for t, frame in enumerate(frames):
        backend.calls.clear()
        result = pair.step(frame, mask if t == 0 else None)
        engines = [c[0] for c in backend.calls]
        if t == 0:  # the given mask, mirrored for the mirrored run, goes into both memories
            assert engines == ["encode_key", "encode_key", "encode_value", "encode_value"]
            written = [c[1]["masks"] for c in backend.calls[2:]]
            torch.testing.assert_close(content(written[1]), torch.flip(content(written[0]), dims=[-1]))
            continue
        assert engines == ["encode_key", "decode", "encode_key", "decode", "encode_value", "encode_value"]
        plain, mirrored = (torch.softmax(backend.calls[i][2]["logits"], dim=1) for i in (1, 3))
        average = (content(plain) + torch.flip(content(mirrored), dims=[-1])) / 2
        written = [backend.calls[i][1]["masks"] for i in (4, 5)]
        torch.testing.assert_close(content(written[0]), average[:, 1:], atol=1e-6, rtol=0)
        torch.testing.assert_close(content(written[1]), torch.flip(average[:, 1:], dims=[-1]), atol=1e-6, rtol=0)
        # the frames fed are the frame and its mirror
        torch.testing.assert_close(content(backend.calls[2][1]["frame"]),
                                   torch.flip(content(backend.calls[0][1]["frame"]), dims=[-1]))
        # the output is the average (no working-size scaling here), ids in the user's numbering
        torch.testing.assert_close(result.probabilities, average[0, :3], atol=1e-6, rtol=0)
        np.testing.assert_array_equal(result.ids, np.array([0, 3, 7], np.uint8)[average[0].argmax(0).numpy()])
    assert pair.memory.num_writes == pair.mirrored.memory.num_writes == 4
    assert pair.frame_index == 4 and pair.summary()["flip_shares_memory"] is True


@pytest.mark.parametrize("frames_compared", [4, 2])
def test_two_independent_cores_averaged_by_hand(stm, frames_compared):
    """The default (separate memories) is, on every frame, two InferenceCores, one on the
    mirrored video, whose probabilities are averaged; with share_memory the same holds on frame
    1 only (it reads frame 0's given mask alone; from frame 2 on it reads the shared writes)."""
    frames, mask = video(frames_compared, seed=1), id_mask()
    pair = MirroredCore(stm, share_memory=frames_compared == 2, mem_every=1)
    for t, (ours, by_hand) in enumerate(pair_and_two_cores(pair, stm, frames, mask, mem_every=1)):
        torch.testing.assert_close(ours.probabilities, by_hand, atol=1e-6, rtol=0)
        if t:
            np.testing.assert_array_equal(ours.ids, np.array([0, 3, 7], np.uint8)[by_hand.argmax(0).numpy()])
    assert pair.summary()["flip"] is True


@pytest.mark.parametrize("name", ["lite", "spvos"])
def test_lite_and_spvos_pairs_are_two_cores_averaged_by_hand(name):
    """The other families run the same way: lite with its STFF state and spvos with its gates'
    previous-frame state and budget are per core, so the pair is two cores, one mirrored."""
    torch.manual_seed(1)
    model = (build_model("lite", width=0.25, value_width=0.25, decoder_widths=(16, 16, 16)) if name == "lite"
             else build_model("spvos", **TINY, gate_hidden=4)).eval()
    options = {"mem_every": 2} | ({"budget": 0.5} if name == "spvos" else {})
    pair = MirroredCore(model, **options)
    for ours, by_hand in pair_and_two_cores(pair, model, video(4, seed=3), id_mask(), **options):
        torch.testing.assert_close(ours.probabilities, by_hand, atol=1e-6, rtol=0)


@pytest.mark.parametrize("share_memory", [False, True])
def test_a_mirror_symmetric_video_gets_mirror_symmetric_masks(stm, share_memory):
    """Frames and objects that are their own mirror images: the mirrored run sees what the plain
    one sees (and, sharing the memory, symmetric writes), so the average is symmetric where one
    run's output is not (the network is not mirror-equivariant)."""
    half = [f[:, :W // 2] for f in video(4, seed=2)]
    frames = [np.ascontiguousarray(np.concatenate([h, h[:, ::-1]], axis=1)) for h in half]
    mask = np.zeros((H, 2 * (W // 2)), np.uint8)
    mask[10:30, 20:-20], mask[40:55, 35:-35] = 1, 2  # each object mirror-symmetric itself
    pair, plain = MirroredCore(stm, share_memory, mem_every=2), InferenceCore(stm, mem_every=2)
    for t, frame in enumerate(frames):
        a, b = pair.step(frame, mask if t == 0 else None), plain.step(frame, mask if t == 0 else None)
        torch.testing.assert_close(a.probabilities, torch.flip(a.probabilities, dims=[-1]), atol=1e-6, rtol=0)
        if t:
            assert (b.probabilities - torch.flip(b.probabilities, dims=[-1])).abs().max() > 1e-3
    assert a.gflops.dense == pytest.approx(2 * b.gflops.dense)


def test_a_frame_that_fails_in_the_mirrored_run_leaves_both_runs_as_they_were(stm, monkeypatch):
    frames, mask = video(4, seed=3), id_mask()
    pair, reference = MirroredCore(stm, mem_every=1), MirroredCore(stm, mem_every=1)
    for t in range(2):
        pair.step(frames[t], mask if t == 0 else None)
        reference.step(frames[t], mask if t == 0 else None)

    def broken(*args, **kwargs):
        raise RuntimeError("engine failed")

    monkeypatch.setattr(pair.mirrored, "finish_step", broken)
    with pytest.raises(RuntimeError, match="engine failed"):
        pair.step(frames[2])
    monkeypatch.undo()
    assert pair.frame_index == pair.mirrored.frame_index == 2
    assert pair.memory.num_writes == pair.mirrored.memory.num_writes == 2
    for t in (2, 3):
        torch.testing.assert_close(pair.step(frames[t]).probabilities, reference.step(frames[t]).probabilities)


def test_mirroring_frames_and_masks():
    hwc = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    np.testing.assert_array_equal(mirror(hwc), hwc[:, ::-1])
    chw = torch.arange(3 * 2 * 4).reshape(3, 2, 4)
    torch.testing.assert_close(mirror(chw), chw[:, :, [3, 2, 1, 0]])
    ids = np.array([[1, 0, 2]], np.uint8)
    np.testing.assert_array_equal(mirror(ids), [[2, 0, 1]])
    assert mirror(None) is None
    with pytest.raises(TypeError, match="policy"):
        MirroredCore(build_model("lite"), policy=object())


@pytest.mark.slow
def test_vseg_run_flip_writes_masks_and_resumes_only_with_flip(tmp_path, stm):
    generate_vos(tmp_path / "data", clips=1, seed=3, frames=5, height=62, width=90, val_fraction=0.0)
    video_path = tmp_path / "data" / "videos" / "synth-3-0000.mp4"
    first = tmp_path / "data" / "Annotations" / "480p" / "synth-3-0000" / "00000.png"
    weights = save_model(stm, tmp_path / "stm.safetensors")
    out = tmp_path / "out"
    args = ["run", str(video_path), "--mask", str(first), "--model", "stm", "--weights", str(weights),
            "--out", str(out), "--mem-every", "2"]
    result = vseg(*args, "--flip", "--json", str(tmp_path / "run.json"))
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "run.json").read_text())
    assert summary["flip"] is True and summary["frames"] == 5
    ids = [read_mask(out / f"{t:05d}.png")[0] for t in range(5)]
    np.testing.assert_array_equal(ids[0], read_mask(first)[0])
    # the same masks as MirroredCore on the decoded frames (the CLI adds nothing of its own)
    pair = MirroredCore(stm, mem_every=2)
    for t, frame in enumerate(read_frames(video_path)):
        np.testing.assert_array_equal(pair.step(frame, ids[0] if t == 0 else None).ids, ids[t])
    refused = vseg(*args, "--resume")  # the earlier run had --flip
    assert "differs in flip" in one_error_line(refused)
    assert "--flip is for the VOS models" in one_error_line(vseg("run", str(video_path), "--model", "arseg", "--flip"))


def test_an_object_entering_later_is_given_to_both_runs(stm):
    frames, mask = video(4, seed=4), id_mask()
    first = np.where(mask == 7, 0, mask).astype(np.uint8)
    entering = np.where(mask == 7, 7, 0).astype(np.uint8)
    pair = MirroredCore(stm, mem_every=5)
    for t, frame in enumerate(frames):
        result = pair.step(frame, first if t == 0 else entering if t == 2 else None, later_ids=[7] if t == 0 else ())
        if t == 2:  # the given object is exactly its mask; both memories pin the frame
            np.testing.assert_array_equal(result.ids == 7, entering == 7)
            assert result.kind == "mask"
    assert pair.memory.pinned_slots == pair.mirrored.memory.pinned_slots == [0, 1]
    assert result.object_ids == (3, 7)
