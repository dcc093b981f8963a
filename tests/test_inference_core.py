"""InferenceCore: padding and cropping, memory-write schedule, object-id mapping, the
previous-frame state of lite, equality with the model's stages run by hand, user errors."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vseg.errors import InputError
from vseg.models.registry import build_model
from vseg.runtime.backends import TorchBackend
from vseg.runtime.framing import Framing, working_size
from vseg.runtime.inference_core import InferenceCore

H, W = 61, 90  # not multiples of 16: padded to 64 x 96, 1 row on top, 2 below, 3 columns each side
PAD = (3, 3, 1, 2)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {"stm": build_model("stm"), "lite": build_model("lite")}


def video(num_frames, seed=0, h=H, w=W):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(num_frames)]


def id_mask(ids=(3, 7), h=H, w=W):
    mask = np.zeros((h, w), np.uint8)
    for i, obj in enumerate(ids):
        mask[5 + 12 * i: 15 + 12 * i, 10 + 20 * i: 40 + 20 * i] = obj
    return mask


@pytest.mark.parametrize("name", ["stm", "lite"])
@pytest.mark.parametrize("ids", [(5,), (1, 2, 9)])
def test_odd_frame_sizes_and_object_counts(models, name, ids):
    core = InferenceCore(models[name])
    mask = id_mask(ids)
    for t, frame in enumerate(video(3)):
        result = core.step(frame, mask if t == 0 else None)
        assert result.probabilities.shape == (len(ids) + 1, H, W)
        torch.testing.assert_close(result.probabilities.sum(0), torch.ones(H, W))
        assert result.ids.shape == (H, W) and result.ids.dtype == np.uint8
        assert set(np.unique(result.ids)) <= {0, *ids}
        if t == 0:
            np.testing.assert_array_equal(result.ids, mask)  # the given mask comes back as is
    assert result.object_ids == ids and result.frame_index == 2


def test_memory_is_written_on_the_right_frames(models):
    core = InferenceCore(models["lite"], mem_every=3, capacity=3, keep_previous=False)
    written = [core.step(f, id_mask() if t == 0 else None).memory_written for t, f in enumerate(video(10))]
    assert [t for t, w in enumerate(written) if w] == [0, 3, 6, 9]
    assert core.memory.num_writes == 4
    assert core.memory.frame_indices == [0, 9, 6]  # frame 0 pinned; 9 replaced 3 in the ring
    assert core.memory.keys.shape[-2:] == (4, 6)  # the padded 64 x 96 frame at stride 16


def test_the_previous_frame_follows_the_video_between_writes(models):
    core = InferenceCore(models["lite"], mem_every=3, capacity=4)
    held = []
    for t, f in enumerate(video(8)):
        core.step(f, id_mask() if t == 0 else None)
        held.append(core.memory.frame_indices)
    # slot 0 pinned, ring slots 1-2, slot 3 the newest frame that is not in the ring
    assert held == [[0, -1, -1, -1], [0, -1, -1, 1], [0, -1, -1, 2], [0, 3, -1, -1], [0, 3, -1, 4],
                    [0, 3, -1, 5], [0, 3, 6, -1], [0, 3, 6, 7]]
    assert core.memory.num_writes == 3


class FakeDecode(TorchBackend):
    """The torch backend with a decode engine of hand-made logits on the padded 64 x 96 frame:
    object index 0 (id 3) on the first 10 visible columns, index 1 (id 7) elsewhere."""

    def _run(self, engine, feeds):
        if engine != "decode":
            return super()._run(engine, feeds)
        logits = torch.zeros(1, 3, 64, 96)
        logits[:, 1, :, : PAD[0] + 10] = 5.0
        logits[:, 2, :, PAD[0] + 10:] = 5.0
        return {"logits": logits}


def test_model_indices_map_back_to_user_ids(models):
    core = InferenceCore(FakeDecode(models["lite"]))
    frames = video(2)
    first = core.step(frames[0], id_mask((3, 7)))
    assert first.object_ids == (3, 7)
    second = core.step(frames[1])
    assert (second.ids[:, :10] == 3).all() and (second.ids[:, 10:] == 7).all()


def test_object_ids_choose_the_tracked_objects(models):
    core = InferenceCore(models["stm"])
    result = core.step(video(1)[0], id_mask((3, 7)), object_ids=[7])
    assert result.object_ids == (7,) and result.probabilities.shape[0] == 2
    np.testing.assert_array_equal(result.ids, np.where(id_mask((3, 7)) == 7, 7, 0))


def test_core_equals_the_stages_run_by_hand(models):
    model = models["lite"].eval()
    frames, mask = video(3, seed=1), id_mask((3, 7))
    core = InferenceCore(model, mem_every=3, capacity=4)
    got = [core.step(f, mask if t == 0 else None).probabilities for t, f in enumerate(frames)]

    def padded(frame):
        return F.pad(torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255, PAD)

    with torch.no_grad():
        objects = F.pad(torch.stack([torch.from_numpy(mask == i) for i in (3, 7)])[None].float(), PAD)
        f0 = model.encode_key(padded(frames[0]))
        keys, values = f0.key.unsqueeze(2), model.encode_value(padded(frames[0]), objects, f0.feat16).unsqueeze(3)
        prev = (f0.next_feat16, objects.sum(1, keepdim=True))
        # mem_every = 3: frame 1 reads a memory holding frame 0 alone; frame 1 then goes into the
        # previous-frame slot, so frame 2 reads frames 0 and 1.
        for t in (1, 2):
            f = model.encode_key(padded(frames[t]), *prev)
            probs = torch.softmax(model.segment(f.key, f.feat16, f.skip8, f.skip4, keys, values,
                                                torch.ones(1, keys.shape[2], dtype=torch.bool)), 1)
            torch.testing.assert_close(got[t], probs[0, :, 1:1 + H, 3:3 + W], atol=1e-5, rtol=1e-4)
            prev = (f.next_feat16, 1 - probs[:, :1])
            keys = torch.cat([keys, f.key.unsqueeze(2)], 2)
            values = torch.cat([values, model.encode_value(padded(frames[t]), probs[:, 1:], f.feat16).unsqueeze(3)], 3)


def test_channels_first_and_last_frames_agree(models):
    frames, mask = video(2, seed=2), id_mask()
    last = InferenceCore(models["stm"])
    first = InferenceCore(models["stm"])
    for t, f in enumerate(frames):
        a = last.step(f, mask if t == 0 else None)
        b = first.step(torch.from_numpy(f).permute(2, 0, 1), torch.from_numpy(mask) if t == 0 else None)
    torch.testing.assert_close(a.probabilities, b.probabilities)


def test_user_errors_are_one_line_input_errors(models):
    frame = video(1)[0]
    cases = [
        (np.zeros((H + 1, W), np.uint8), "first.png: mask is 62x90 but the video frames are 61x90"),
        (np.zeros((H, W), np.uint8), "first.png: the mask has no objects"),
        (id_mask().astype(np.float32), "first.png: a mask must hold integer object ids"),
    ]
    for mask, message in cases:
        with pytest.raises(InputError, match=message):
            InferenceCore(models["lite"]).step(frame, mask, mask_name="first.png")
    with pytest.raises(InputError, match=r"object id\(s\) \[4\] not in the mask"):
        InferenceCore(models["lite"]).step(frame, id_mask(), object_ids=[3, 4])
    core = InferenceCore(models["lite"])
    core.step(frame, id_mask())
    with pytest.raises(InputError, match="frame 1 is 64x90 but the video started at 61x90"):
        core.step(video(1, h=64)[0])


def test_misuse_by_the_caller_is_a_plain_error(models):
    core = InferenceCore(models["lite"])
    with pytest.raises(ValueError, match="first frame needs a mask"):
        core.step(video(1)[0])
    core.step(video(1)[0], id_mask())
    with pytest.raises(ValueError, match="only taken on the first frame"):
        core.step(video(1)[0], later_ids=[5])
    with pytest.raises(ValueError, match="uint8"):
        core.step(video(1)[0].astype(np.float32))


class VanishingDecode(TorchBackend):
    """Hand-made decode logits: object index 0 (id 3) on the first 10 visible columns except on
    frames 2 and 3, where it is gone; index 1 (id 7) elsewhere. Records each decode's mem_valid."""

    def __init__(self, model, spec_rank=3):
        super().__init__(model)
        self.frame, self.fed, self.spec_rank = 0, [], spec_rank

    def input_specs(self, engine):
        specs = dict(super().input_specs(engine))
        if engine == "decode" and self.spec_rank == 2:  # an engine folder from before per-object masks
            spec = specs["mem_valid"]
            specs["mem_valid"] = type(spec)((1, spec.shape[-1]), spec.dtype)
        return specs

    def _run(self, engine, feeds):
        if engine != "decode":
            return super()._run(engine, feeds)
        self.frame += 1
        self.fed.append(feeds["mem_valid"].clone())
        logits = torch.zeros(1, 3, 64, 96)
        logits[:, 2] = 5.0
        if self.frame not in (2, 3):
            logits[:, 1, :, : PAD[0] + 10] = 10.0
        return {"logits": logits}


def run_and_watch(core, backend, frames=6):
    """Step through a video; per decoded frame, (the frame each slot held when it was read, the
    mem_valid the decode engine got)."""
    reads = []
    for t, f in enumerate(video(frames)):
        held = core.memory.frame_indices if t else None
        core.step(f, id_mask((3, 7)) if t == 0 else None)
        if t:
            reads.append((held, backend.fed[-1]))
    return reads


def test_an_object_reads_only_the_frames_that_show_it(models):
    backend = VanishingDecode(models["lite"])
    core = InferenceCore(backend, mem_every=2, capacity=8)
    for held, fed in run_and_watch(core, backend):
        assert fed.shape == (1, 2, 8)
        filled = torch.tensor(held) >= 0
        shows_3 = filled & ~torch.isin(torch.tensor(held), torch.tensor([2, 3]))  # id 3 gone on frames 2, 3
        assert torch.equal(fed[0, 0], shows_3) and torch.equal(fed[0, 1], filled)
    assert held.count(2) + held.count(3) > 0  # the last read did have frames without id 3
    assert core.summary()["skip_absent"] is True


def test_skip_absent_off_and_old_engines_read_every_slot(models):
    for backend, options in ((VanishingDecode(models["lite"]), {"skip_absent": False}),
                             (VanishingDecode(models["lite"], spec_rank=2), {})):
        core = InferenceCore(backend, mem_every=2, capacity=8, **options)
        for held, fed in run_and_watch(core, backend):
            filled = torch.tensor(held) >= 0
            assert all(torch.equal(row, filled) for row in fed.reshape(-1, 8))
        assert fed.dim() == (3 if "skip_absent" in options else 2)
        assert core.summary()["skip_absent"] is False


@pytest.mark.parametrize(("size", "min_side", "expected"), [
    ((160, 288), 320, (320, 576)),  # twice the size
    ((288, 160), 320, (576, 320)),  # portrait: the width is the shorter side
    ((90, 161), 320, (320, 572)),  # 161 * 320 / 90 = 572.4
    ((480, 854), 320, (480, 854)),  # large enough already: never scaled down
    ((61, 90), 0, (61, 90)),  # 0: every frame as it is
])
def test_working_size(size, min_side, expected):
    assert working_size(*size, min_side) == expected


def test_framing_pads_evenly_and_gives_the_frame_back():
    framing = Framing.of(61, 90, 0)  # 61 -> 64 (3 rows: 1 above, 2 below), 90 -> 96 (3 and 3)
    assert framing.padded == (64, 96) and framing.pad == (3, 3, 1, 2) and not framing.scaled
    image = torch.rand(1, 3, 61, 90)
    padded = framing.frame_in(image)
    assert padded.shape == (1, 3, 64, 96) and padded[..., 0, :].abs().sum() == 0 and padded[..., :, -3:].abs().sum() == 0
    assert torch.equal(framing.content(padded), image) and torch.equal(framing.to_video(padded), image)
    scaled = Framing.of(61, 90, 122)  # exactly twice: 122 x 180, padded to 128 x 192
    assert scaled.scaled and scaled.work == (122, 180) and scaled.padded == (128, 192)
    masks = (torch.rand(1, 2, 61, 90) > 0.5).float()
    # Nearest neighbour up by 2 and bilinear back down by 2 (the mean of each 2 x 2 block) is the identity.
    assert torch.equal(scaled.to_video(scaled.masks_in(masks)), masks)


def test_small_frames_run_scaled_up_to_the_models_min_side():
    torch.manual_seed(0)
    model = build_model("stm", min_side=2 * H)  # 122 x 180 working size, padded to 128 x 192
    frames, mask = video(3, seed=4), id_mask((3, 7))
    core = InferenceCore(model)
    results = [core.step(f, mask if t == 0 else None) for t, f in enumerate(frames)]
    assert core.min_side == 2 * H and (core.geometry.height, core.geometry.width) == (128, 192)
    assert core.memory.keys.shape[-2:] == (8, 12)  # the memory holds the working size's grid
    assert core.summary()["working_size"] == [122, 180]
    for result in results:  # outputs come back at the video's size
        assert result.probabilities.shape == (3, H, W) and result.ids.shape == (H, W)
    # Nearest up by exactly 2, bilinear back down by 2: the first mask survives the round trip.
    np.testing.assert_array_equal(results[0].ids, mask)
    # The working size is the point: frame 2 differs from the same model run at 61 x 90.
    plain = InferenceCore(model, min_side=0)
    at_own_size = [plain.step(f, mask if t == 0 else None) for t, f in enumerate(frames)]
    assert plain.geometry.height == 64
    assert (at_own_size[2].probabilities - results[2].probabilities).abs().max() > 1e-3


def test_core_at_working_size_equals_the_stages_run_by_hand(models):
    """Frames bilinear up, the first mask nearest up, probabilities bilinear back: by hand."""
    model = models["stm"].eval()
    frames, mask = video(2, seed=5), id_mask((3, 7))
    core = InferenceCore(model, min_side=80, mem_every=5, capacity=4, keep_previous=False)
    got = [core.step(f, mask if t == 0 else None).probabilities for t, f in enumerate(frames)]
    work, pad = (80, 118), (5, 5, 0, 0)  # 90 * 80 / 61 = 118.03; padded to 80 x 128

    def scaled(frame):
        x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
        return F.pad(F.interpolate(x, size=work, mode="bilinear", align_corners=False), pad)

    with torch.no_grad():
        ids = F.interpolate(torch.from_numpy(mask)[None, None].float(), size=work, mode="nearest-exact")[0, 0]
        objects = F.pad(torch.stack([ids == i for i in (3, 7)])[None].float(), pad)
        f0 = model.encode_key(scaled(frames[0]))
        keys = f0.key.unsqueeze(2)
        values = model.encode_value(scaled(frames[0]), objects, f0.feat16).unsqueeze(3)
        f1 = model.encode_key(scaled(frames[1]))
        logits = model.segment(f1.key, f1.feat16, f1.skip8, f1.skip4, keys, values, torch.ones(1, 1, dtype=torch.bool))
        probs = torch.softmax(logits, 1)[:, :, :, 5:5 + 118]
        expected = F.interpolate(probs, size=(H, W), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(got[1], expected, atol=1e-5, rtol=1e-4)


def test_min_side_travels_with_the_weights_and_engine_configs(tmp_path):
    from vseg.export.manifest import model_config
    from vseg.models.registry import load_model, save_model

    model = build_model("lite", min_side=320)
    assert load_model(save_model(model, tmp_path / "lite.safetensors")).config.min_side == 320
    assert model_config(model)["min_side"] == 320  # what an engine folder's manifest records
    assert TorchBackend(model).model_config["min_side"] == 320
    assert build_model("stm").config.min_side == 0  # older weights files lack the field: 0
