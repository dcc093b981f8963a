"""AR-Seg: the model's stages and CReFF, FLOP counts, the keyframe schedule, training pairs from
real decoded motion vectors, two-phase training (frozen parts, resume) and evaluation by distance."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vseg.data.synth_vss import generate_vss
from vseg.data.video import DecodedFrame
from vseg.errors import VsegError
from vseg.models.arseg import (
    ARSeg,
    ARSegConfig,
    CReFF,
    arseg_gflops,
    downscale,
    lr_size,
)
from vseg.models.registry import build_model, load_model, save_model
from vseg.runtime.arseg_motion import KeyframeSchedule, pad_motion
from vseg.train import arseg_data
from vseg.train.arseg import ARSegTrainConfig, ARSegTrainer, train_arseg
from vseg.train.arseg_data import (
    Clip,
    load_clips,
    pair_pool,
    sample_frames,
    sample_pairs,
)
from vseg.train.arseg_eval import evaluate_arseg, format_arseg_table

TINY = {"stem_width": 8, "widths": [8, 8, 16, 16], "feature_channels": 8}


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def tiny_model() -> ARSeg:
    return build_model("arseg", **TINY).eval()


@pytest.fixture(scope="module")
def vss_root(tmp_path_factory):
    """Two synthetic street clips (26 frames: GOPs of 12, 12, 2), one per split, 64 x 96."""
    root = tmp_path_factory.mktemp("vss")
    generate_vss(root, clips=2, seed=0, frames=26, height=64, width=96, val_fraction=0.5)
    return root


# ------------------------------------------------------------------ model


def test_stage_shapes():
    model = tiny_model()
    frame = torch.rand(2, 3, 64, 96)
    logits, feature = model.keyframe(frame)
    assert logits.shape == (2, 11, 64, 96) and feature.shape == (2, 8, 8, 12)
    small = downscale(frame, lr_size(64, 96, 0.5))
    assert small.shape == (2, 3, 32, 48)
    mv = torch.randn(2, 2, 16, 24)
    assert model.nonkey(small, feature, mv).shape == (2, 11, 64, 96)
    assert model.lr_only(small, (64, 96)).shape == (2, 11, 64, 96)


def test_lr_size_rounds_to_multiples_of_8_and_scale_is_checked():
    assert lr_size(184, 240, 0.5) == (96, 120)
    assert lr_size(360, 480, 0.3) == (112, 144)  # 108 -> 13.5 eighths, rounded up
    assert lr_size(16, 16, 0.3) == (8, 8)
    with pytest.raises(VsegError, match="outside 0.3..0.9"):
        build_model("arseg", lr_scale=0.2)


def test_a_fresh_crff_passes_the_lr_feature_through():
    # the value conv starts at zero, so before fusion training nonkey is the LR branch alone
    model = tiny_model()
    frame = torch.rand(1, 3, 64, 96)
    small = downscale(frame, (32, 48))
    _, feature = model.keyframe(frame)
    mv = torch.randn(1, 2, 16, 24) * 4
    torch.testing.assert_close(model.nonkey(small, feature, mv), model.lr_only(small, (64, 96)))


def _unfold_crff(crff: CReFF, warped: torch.Tensor, lr_up: torch.Tensor) -> torch.Tensor:
    """An independent CReFF: unfold the neighbourhoods, mask those outside the map, softmax, sum."""
    n, c, h, w = lr_up.shape
    k = crff.kernel
    q = crff.query(lr_up) / c ** 0.5
    keys = F.unfold(crff.key(warped), k, padding=k // 2).view(n, c, k * k, h, w)
    values = F.unfold(crff.value(warped), k, padding=k // 2).view(n, c, k * k, h, w)
    valid = F.unfold(torch.ones(1, 1, h, w), k, padding=k // 2).view(1, k * k, h, w) > 0
    logits = (q.unsqueeze(2) * keys).sum(1).masked_fill(~valid, float("-inf"))
    return lr_up + (torch.softmax(logits, 1).unsqueeze(1) * values).sum(2)


def test_crff_and_its_gradients_match_an_unfold_implementation():
    crff = CReFF(6, 7)
    inputs = [torch.randn(2, 6, 9, 11, requires_grad=True) for _ in range(2)]
    ours, theirs = crff(*inputs), _unfold_crff(crff, *inputs)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    grad = torch.randn_like(ours)
    for a, b in zip(torch.autograd.grad(ours, inputs, grad), torch.autograd.grad(theirs, inputs, grad)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_crff_attention_is_a_convex_combination_of_inside_neighbours():
    # value = identity: a constant warped map gives lr_up + c everywhere, border pixels included,
    # because neighbours outside the map are masked rather than read as zeros
    crff = CReFF(3, 7)
    with torch.no_grad():
        crff.value.weight.zero_()
        crff.value.weight[:, 0, 1, 1] = 1.0
        crff.value.bias.zero_()
    lr_up = torch.randn(1, 3, 6, 8)
    out = crff(torch.full((1, 3, 6, 8), 2.5), lr_up)
    torch.testing.assert_close(out, lr_up + 2.5)


def test_gflops_of_a_gop_of_12_at_half_resolution():
    cost = arseg_gflops(ARSegConfig(), 176, 240)
    assert cost["lr_size"] == [88, 120]
    assert cost["nonkey"] < cost["keyframe"] / 3
    assert cost["arseg_per_frame"] == pytest.approx((cost["keyframe"] + 11 * cost["nonkey"]) / 12)
    assert cost["saving"] > 0.6
    paper = ARSegConfig(stem_width=64, widths=(64, 128, 256, 512), feature_channels=128)
    assert arseg_gflops(paper, 176, 240)["keyframe"] > 3 * cost["keyframe"]


def test_weights_round_trip_through_the_registry(tmp_path):
    model = tiny_model()
    loaded = load_model(save_model(model, tmp_path / "a.safetensors")).eval()
    assert loaded.config == model.config
    frame = torch.rand(1, 3, 32, 48)
    torch.testing.assert_close(loaded.keyframe(frame)[0], model.keyframe(frame)[0])


# ------------------------------------------------------------------ schedule and data


def _frame(index: int, pict_type: str, dx: float = 0.0) -> DecodedFrame:
    mv = np.zeros((2, 4, 6), np.float32)
    mv[0] = dx
    return DecodedFrame(index, np.zeros((16, 24, 3), np.uint8), pict_type, pict_type == "I", mv,
                        np.full((4, 6), pict_type == "I"))


def test_schedule_keys_on_i_frames_and_every_l_frames():
    types = "IPPPPPPIPPPP"
    plain = KeyframeSchedule(16, 24)
    assert [plain.push(_frame(i, t)).keyframe for i, t in enumerate(types)] == [t == "I" for t in types]
    every3 = KeyframeSchedule(16, 24, keyframe_interval=3)
    steps = [every3.push(_frame(i, t, dx=-1.0)) for i, t in enumerate(types)]
    assert [s.distance for s in steps] == [0, 1, 2, 0, 1, 2, 0, 0, 1, 2, 0, 1]
    assert steps[2].acc[0].tolist() == np.full((4, 6), -2.0).tolist()  # two frames of 1 px back to the key
    assert not steps[3].acc.any()


def test_pad_motion_repeats_edge_cells():
    acc = np.arange(2 * 2 * 3, dtype=np.float32).reshape(2, 2, 3)
    padded = pad_motion(acc, 12, 16)
    assert padded.shape == (2, 3, 4) and (padded[:, 2, :3] == acc[:, 1]).all() and (padded[:, :2, 3] == acc[:, :, 2]).all()


def test_clips_come_from_the_decoded_video_with_cached_motion(vss_root, tmp_path, monkeypatch):
    clips = load_clips(vss_root, "train", cache_dir=tmp_path)
    (clip,) = clips
    assert clip.frames.shape == (26, 64, 96, 3) and clip.acc.shape == (26, 2, 16, 24)
    assert np.flatnonzero(clip.keyframe).tolist() == [0, 12, 24]
    assert clip.distance.tolist() == list(range(12)) * 2 + [0, 1]
    assert clip.labelled.all() and clip.acc[1:12].any() and not clip.acc[clip.keyframe].any()
    assert len(list(tmp_path.glob("*.npz"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("the cached motion should have been used")

    monkeypatch.setattr(arseg_data, "decode_with_motion", no_decoding)
    again = load_clips(vss_root, "train", cache_dir=tmp_path)[0]
    assert np.array_equal(again.acc, clip.acc) and np.array_equal(again.frames, clip.frames)


def test_pairs_cover_every_distance_and_flips_mirror_the_field():
    t, h, w = 12, 16, 24
    acc = np.random.default_rng(0).normal(size=(t, 2, h // 4, w // 4)).astype(np.float32)
    frames = np.random.default_rng(1).integers(0, 255, (t, h, w, 3), dtype=np.uint8)
    labels = np.zeros((t, h, w), np.uint8)
    keyframe = np.arange(t) % 6 == 0
    clip = Clip("c", frames, labels, keyframe, np.arange(t) % 6, acc)
    pool = pair_pool([clip])
    assert sorted(pool) == [1, 2, 3, 4, 5] and pool[2] == [(0, 0, 2), (0, 6, 8)]
    batch = sample_pairs([clip], np.random.default_rng(0), 64, (16, 24), flip=True, pool=pool)
    assert set(batch["distance"].tolist()) == {1, 2, 3, 4, 5}
    for i in range(64):
        d = int(batch["distance"][i])
        frame = (batch["frame"][i] * 255).round().byte().permute(1, 2, 0).numpy()
        t_index = next(j for j in range(t) if (frames[j] == frame).all() or (frames[j][:, ::-1] == frame).all())
        flipped = not (frames[t_index] == frame).all()
        expected = acc[t_index][:, :, ::-1] * np.array([-1, 1]).reshape(2, 1, 1) if flipped else acc[t_index]
        assert t_index % 6 == d and np.allclose(batch["mv"][i].numpy(), expected)


def test_frame_batches_are_a_function_of_the_generator(vss_root, tmp_path):
    clips = load_clips(vss_root, "train", cache_dir=tmp_path)
    a = sample_frames(clips, np.random.default_rng([3, 7]), 4, (32, 48))
    b = sample_frames(clips, np.random.default_rng([3, 7]), 4, (32, 48))
    assert a["frame"].shape == (4, 3, 32, 48) and a["label"].shape == (4, 32, 48)
    assert torch.equal(a["frame"], b["frame"]) and torch.equal(a["label"], b["label"])


# ------------------------------------------------------------------ training and evaluation


def _config(root, out, **changes) -> ARSegTrainConfig:
    base = ARSegTrainConfig(data=str(root), out=str(out), model_options=dict(TINY), hr_steps=2, lr_steps=1,
                            fusion_steps=2, batch_size=2, crop=(32, 48), threads=1, checkpoint_every=2, warmup_steps=1)
    return dataclasses.replace(base, **changes)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_stages_freeze_the_keyframe_path_and_resume_exactly(vss_root, tmp_path):
    straight = train_arseg(_config(vss_root, tmp_path / "a"))
    assert [h["stage"] for h in straight.history] == ["hr", "hr", "lr", "fusion", "fusion"]
    after_hr = load_model(train_arseg(_config(vss_root, tmp_path / "b", lr_steps=0, fusion_steps=0)).weights)
    final, lr_alone = load_model(straight.weights), load_model(straight.lr_alone_weights)
    for model in (final, lr_alone):  # hr and the classifier are frozen in phase 2
        assert _same(model.hr, after_hr.hr) and _same(model.classifier, after_hr.classifier)
    # lr started as a copy of hr, was trained alone, then with CReFF (which starts as the identity)
    assert not _same(lr_alone.lr, after_hr.hr) and not _same(final.lr, lr_alone.lr)
    assert not lr_alone.crff.value.weight.any() and final.crff.value.weight.any()

    # phase 2 alone from saved weights, keeping their LR branch instead of copying hr into it
    # (learning rate 0: the weights stay as they start, only BatchNorm statistics move)
    kept = train_arseg(_config(vss_root, tmp_path / "d", init_weights=str(straight.lr_alone_weights), hr_steps=0,
                               lr_steps=0, fusion_steps=1, init_lr_from_hr=False, lr=0.0))
    first = load_model(kept.weights)
    assert kept.history[0]["stage"] == "fusion"
    assert all(torch.equal(a, b) for a, b in zip(first.lr.parameters(), lr_alone.lr.parameters()))

    resumed_out = tmp_path / "c"
    train_arseg(_config(vss_root, resumed_out, lr_steps=0, fusion_steps=0))  # checkpoint at the end of hr
    resumed = train_arseg(_config(vss_root, resumed_out, resume=str(resumed_out)))
    assert resumed.history == straight.history
    assert _same(load_model(resumed.weights), final)


def test_each_stage_fits_a_fixed_batch(vss_root, tmp_path):
    config = _config(vss_root, tmp_path, hr_steps=20, lr_steps=20, fusion_steps=20, lr=1e-2)
    trainer = ARSegTrainer(config, torch.device("cpu"))
    clips = load_clips(vss_root, "train", cache_dir=tmp_path)
    frames = sample_frames(clips, np.random.default_rng(0), 4, (32, 48))
    pairs = sample_pairs(clips, np.random.default_rng(0), 4, (32, 48))
    for stage, step, batch, gain in (("hr", trainer.hr_step, frames, 0.75), ("lr", trainer.lr_step, frames, 0.95),
                                     ("fusion", trainer.fusion_step, pairs, 0.97)):
        if stage == "lr":
            trainer.begin_phase2()
        losses = [step(batch, i)["loss"] for i in range(20)]
        assert np.mean(losses[-3:]) < gain * np.mean(losses[:3]), stage


def test_training_refuses_bad_options(vss_root, tmp_path):
    with pytest.raises(VsegError, match="multiples of 8"):
        train_arseg(_config(vss_root, tmp_path, crop=(30, 48)))
    with pytest.raises(VsegError, match="dataset folder"):
        train_arseg(_config("", tmp_path))


def test_evaluation_by_distance(vss_root, tmp_path):
    model = tiny_model()
    result = evaluate_arseg(model, vss_root, "val", cache_dir=tmp_path)
    other = evaluate_arseg(model, vss_root, "val", cache_dir=tmp_path, lr_alone=tiny_model())
    assert other["methods"]["arseg"] == result["methods"]["arseg"]
    assert other["methods"]["lr_only"]["mIoU"] != result["methods"]["lr_only"]["mIoU"]
    assert result["clips"] == 1 and result["frames"] == 26 and result["keyframes"] == 3
    rows = {r["distance"]: r for r in result["by_distance"]}
    assert sorted(rows) == list(range(12)) and rows[0]["frames"] == 3 and rows[11]["frames"] == 2
    assert rows[0]["arseg"] == rows[0]["full"]  # keyframes run the full-resolution network
    methods = result["methods"]
    assert methods["arseg"]["gflops_per_frame"] == pytest.approx(
        (3 * methods["full"]["gflops_per_frame"] + 23 * arseg_gflops(model.config, 64, 96)["nonkey"]) / 26)
    assert 0.5 < result["gflops_saving"] < 1
    table = format_arseg_table(result).splitlines()
    assert table[5].split() == ["d", "frames", "full", "lr_only", "arseg"] and len(table) == 6 + 12
