"""The VOS models `stm` and `lite`: stage shapes, memory read, soft aggregation, KD parts,
cost targets, traceability and the registry."""

import math

import pytest
import torch
from torch import nn

from vseg.errors import VsegError
from vseg.models.lite import (
    AdaptiveDistillationLR,
    LiteVOS,
    adversarial_loss,
    discriminator_loss,
    feature_distillation_loss,
    logit_distillation_loss,
)
from vseg.models.memory_read import read_memory
from vseg.models.registry import (
    build_model,
    count_parameters,
    load_model,
    make_config,
    save_model,
    step_gflops,
)
from vseg.models.stm import STM, soft_aggregate

H, W = 64, 96  # stride-16 grid 4 x 6


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {"stm": build_model("stm").eval(), "lite": build_model("lite").eval()}


def random_memory(model, num_objects, slots=3, h=H // 16, w=W // 16):
    keys = torch.randn(1, model.key_dim, slots, h, w)
    values = torch.randn(1, num_objects, model.value_dim, slots, h, w)
    return keys, values, torch.ones(1, slots, dtype=torch.bool)


@pytest.mark.parametrize("name", ["stm", "lite"])
@pytest.mark.parametrize("num_objects", [1, 3])
def test_stage_shapes(models, name, num_objects):
    model = models[name]
    frame = torch.rand(2, 3, H, W)
    with torch.no_grad():
        feats = model.encode_key(frame)
        assert feats.key.shape == (2, model.key_dim, H // 16, W // 16)
        assert feats.skip8.shape[-2:] == (H // 8, W // 8) and feats.skip4.shape[-2:] == (H // 4, W // 4)
        values = model.encode_value(frame, torch.rand(2, num_objects, H, W), feats.feat16)
        assert values.shape == (2, num_objects, model.value_dim, H // 16, W // 16)
        keys, mem_values, valid = random_memory(model, num_objects)
        keys, mem_values, valid = keys.repeat(2, 1, 1, 1, 1), mem_values.repeat(2, 1, 1, 1, 1, 1), valid.repeat(2, 1)
        readout = model.read_memory(feats.key, keys, mem_values, valid)
        assert readout.shape == (2, num_objects, model.value_dim, H // 16, W // 16)
        logits = model.decode(readout, feats.feat16, feats.skip8, feats.skip4)
        assert logits.shape == (2, num_objects + 1, H, W)
        torch.testing.assert_close(model.segment(feats.key, feats.feat16, feats.skip8, feats.skip4,
                                                 keys, mem_values, valid), logits)


def test_model_sizes_and_dimensions(models):
    stm, lite = models["stm"], models["lite"]
    assert (stm.key_dim, stm.value_dim, lite.key_dim, lite.value_dim) == (64, 256, 32, 64)
    assert 10e6 <= count_parameters(stm) <= 20e6
    assert count_parameters(lite) < 0.7e6


def test_soft_aggregation_hand_worked():
    # Two objects at p = 0.5 each: background = 0.25, odds 1/3 : 1 : 1 -> 1/7, 3/7, 3/7.
    logits = soft_aggregate(torch.zeros(1, 2, 1, 1))
    probs = torch.softmax(logits, 1).flatten()
    torch.testing.assert_close(probs, torch.tensor([1 / 7, 3 / 7, 3 / 7]))


def test_soft_aggregation_sums_to_one_and_masks_padding_objects():
    torch.manual_seed(1)
    object_logits = torch.randn(2, 4, 5, 7) * 5
    probs = torch.softmax(soft_aggregate(object_logits), 1)
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 5, 7))
    # A padding object (valid = 0) gets ~0 probability and leaves the others as if it were absent.
    valid = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0]])
    masked = torch.softmax(soft_aggregate(object_logits, valid), 1)
    assert masked[:, 4].max() < 1e-6
    alone = torch.softmax(soft_aggregate(object_logits[:, :3]), 1)
    torch.testing.assert_close(masked[:, :4], alone, atol=1e-5, rtol=1e-5)


def brute_force_read(query_key, mem_keys, mem_values, valid, k):
    """Full -||q - m||^2 / sqrt(Ck), a sort per query pixel, softmax over the k best, readout."""
    b, ck, h, w = query_key.shape
    num_objects, cv = mem_values.shape[1], mem_values.shape[2]
    q = query_key.reshape(b, ck, h * w).double()
    m = mem_keys.reshape(b, ck, -1).double()
    v = mem_values.reshape(b, num_objects * cv, -1).double()
    pixel_valid = valid.repeat_interleave(mem_keys.shape[3] * mem_keys.shape[4], dim=1)
    out = torch.zeros(b, num_objects * cv, h * w, dtype=torch.float64)
    for bi in range(b):
        cols = pixel_valid[bi].nonzero().flatten()
        for qi in range(h * w):
            dist = ((q[bi, :, qi:qi + 1] - m[bi][:, cols]) ** 2).sum(0)
            order = torch.argsort(dist)[:k]  # largest affinity = smallest distance
            weights = torch.softmax(-dist[order] / math.sqrt(ck), 0)
            out[bi, :, qi] = (v[bi][:, cols[order]] * weights).sum(1)
    return out.view(b, num_objects, cv, h, w).float()


@pytest.mark.parametrize("k", [1, 5, 1000])
def test_topk_read_equals_brute_force(k):
    torch.manual_seed(2)
    query = torch.randn(2, 8, 2, 3)
    keys, values = torch.randn(2, 8, 3, 2, 3), torch.randn(2, 2, 4, 3, 2, 3)
    valid = torch.tensor([[True, True, True], [True, False, True]])
    got = read_memory(query, keys, values, valid, top_k=k)
    torch.testing.assert_close(got, brute_force_read(query, keys, values, valid, k), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["stm", "lite"])
def test_invalid_memory_slots_have_no_effect(models, name):
    model = models[name]
    torch.manual_seed(3)
    feats = model.encode_key(torch.rand(1, 3, H, W))
    keys, values, _ = random_memory(model, 2, slots=2)
    # The same two frames in a 5-slot memory whose other slots hold garbage, NaN and inf.
    big_keys, big_values = torch.randn(1, model.key_dim, 5, 4, 6) * 1e3, torch.randn(1, 2, model.value_dim, 5, 4, 6)
    big_keys[:, :, 1] = float("nan")
    big_values[:, :, :, 3] = float("inf")
    big_keys[:, :, [0, 2]], big_values[:, :, :, [0, 2]] = keys, values
    big_valid = torch.tensor([[True, False, True, False, False]])
    with torch.no_grad():
        ref = model.segment(feats.key, feats.feat16, feats.skip8, feats.skip4, keys, values,
                            torch.ones(1, 2, dtype=torch.bool))
        got = model.segment(feats.key, feats.feat16, feats.skip8, feats.skip4, big_keys, big_values, big_valid)
    torch.testing.assert_close(got, ref)


def test_memory_read_and_aggregation_run_in_float32_under_autocast(models):
    # bfloat16 training (TrainConfig.amp): the encoders run in bfloat16, but the top-k read and
    # the soft aggregation must see float32, or close affinities tie and probabilities clamp.
    model = models["stm"]
    torch.manual_seed(4)
    feats = model.encode_key(torch.rand(1, 3, H, W))
    keys, values, valid = random_memory(model, 2)
    with torch.no_grad():
        ref_read = model.read_memory(feats.key, keys, values, valid)
        with torch.autocast("cpu", torch.bfloat16):
            read = model.read_memory(feats.key.bfloat16(), keys.bfloat16(), values.bfloat16(), valid)
            logits = model.decode(ref_read, feats.feat16, feats.skip8, feats.skip4)
    assert read.dtype == torch.float32 and logits.dtype == torch.float32
    # The same read of the bfloat16-rounded inputs: float32 arithmetic, not bfloat16.
    rounded = [x.bfloat16().float() for x in (feats.key, keys, values)]
    torch.testing.assert_close(read, read_memory(*rounded[:2], rounded[2], valid, model.top_k))
    torch.testing.assert_close(read, ref_read, atol=0.1, rtol=0.05)
    # The aggregation itself (spvos's gated decoder calls it directly): confident pixels stay
    # confident, where bfloat16's eps would cap the probabilities at 0.992.
    with torch.autocast("cpu", torch.bfloat16):
        aggregated = soft_aggregate(torch.full((1, 1, 2, 2), 9.0, dtype=torch.bfloat16))
    assert aggregated.dtype == torch.float32 and torch.softmax(aggregated, 1)[0, 1].min() > 0.999


def test_read_with_fewer_memory_pixels_than_k():
    # 1x1 grid: 2 memory pixels, one valid, k = 20: the only valid pixel is read exactly.
    values = torch.randn(1, 1, 4, 2, 1, 1)
    got = read_memory(torch.randn(1, 8, 1, 1), torch.randn(1, 8, 2, 1, 1), values,
                      torch.tensor([[False, True]]), top_k=20)
    torch.testing.assert_close(got, values[:, :, :, 1])


def test_lite_is_20x_smaller_and_30x_cheaper_than_stm(models):
    stm, lite = models["stm"], models["lite"]
    assert count_parameters(stm) >= 20 * count_parameters(lite)
    stm_cost, lite_cost = step_gflops(stm, 480, 854), step_gflops(lite, 480, 854)
    assert stm_cost["step"] >= 30 * lite_cost["step"]
    # Also with a memory write amortised over mem_every = 5 frames.
    assert (stm_cost["step"] + stm_cost["encode_value"] / 5) >= 30 * (lite_cost["step"] + lite_cost["encode_value"] / 5)
    assert count_parameters(lite, include_training_only=True) > count_parameters(lite)


def test_lite_stff_takes_previous_frame_explicitly(models):
    lite = models["lite"]
    assert lite.uses_prev_frame
    frame = torch.rand(1, 3, H, W)
    with torch.no_grad():
        first = lite.encode_key(frame)
        raw = lite.key_encoder(lite.normalize(frame))[2]
        torch.testing.assert_close(first.next_feat16, raw)
        again = lite.encode_key(frame, torch.zeros_like(raw), torch.zeros(1, 1, H, W))
        torch.testing.assert_close(again.key, first.key)  # None means zeros
        primed = lite.encode_key(frame, raw, torch.ones(1, 1, H, W))
    assert not torch.allclose(primed.key, first.key)


def test_lite_kd_parts_switch_off():
    plain = build_model("lite", use_stff=False, use_smooth=False, use_discriminator=False, use_adaptive_lr=False)
    assert plain.stff is None and plain.smooth is None and plain.discriminator is None
    assert not plain.uses_prev_frame and plain.make_lr_damper() is None
    feats = plain.encode_key(torch.rand(1, 3, H, W), torch.randn(1, 48, 4, 6), torch.rand(1, 1, H, W))
    assert feats.next_feat16 is None and plain.adapt_features(feats) == {}
    # The deployed size does not depend on the training-only switches.
    assert count_parameters(plain) == count_parameters(build_model("lite", use_stff=False))


def test_adaptive_distillation_lr_hand_worked():
    damper = AdaptiveDistillationLR(momentum=0.5, min_factor=0.2)
    assert damper.update(1.0, 1.0) == 1.0  # ratio 1, average 1
    assert damper.update(2.0, 1.0) == pytest.approx(0.5)  # ratio 2 against average 1
    assert damper.update(0.5, 1.0) == 1.0  # improving: no damping (average now 1.5)
    assert damper.update(10.0, 1.0) == pytest.approx(0.2)  # 1.0 / 10 clamped to min_factor
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    damper.apply(opt)
    damper.apply(opt)  # applies to the base lr, not compounding
    assert opt.param_groups[0]["lr"] == pytest.approx(0.02)


def test_losses_backpropagate_through_all_stages_and_kd_parts():
    torch.manual_seed(4)
    teacher, student = STM(), LiteVOS()
    frames = torch.rand(2, 2, 3, H, W)  # [time, B, 3, H, W]
    masks = (torch.rand(2, 2, 2, H, W) > 0.5).float()  # [time, B, K, H, W]
    target = torch.cat([1 - masks[1].amax(1, keepdim=True), masks[1]], 1).argmax(1)
    opt_student = torch.optim.Adam(student.student_parameters(), lr=1e-3)
    opt_teacher = torch.optim.Adam(teacher.parameters(), lr=1e-4)
    opt_disc = torch.optim.Adam(student.discriminator.parameters(), lr=1e-4)
    for _ in range(2):
        losses = {}
        for name, model in (("teacher", teacher), ("student", student)):
            first = model.encode_key(frames[0])
            mem_values = model.encode_value(frames[0], masks[0], first.feat16).unsqueeze(3)
            prev = (first.next_feat16, 1 - masks[0].amax(1, keepdim=True)) if model.uses_prev_frame else ()
            query = model.encode_key(frames[1], *prev)
            logits = model.segment(query.key, query.feat16, query.skip8, query.skip4, first.key.unsqueeze(2),
                                   mem_values, torch.ones(2, 1, dtype=torch.bool))
            losses[name] = (nn.functional.cross_entropy(logits, target), logits, query)
        t_loss, t_logits, t_feats = losses["teacher"]
        s_loss, s_logits, s_feats = losses["student"]
        adapted = student.adapt_features(s_feats)
        student_total = (s_loss + feature_distillation_loss(adapted, t_feats)
                         + logit_distillation_loss(s_logits, t_logits, temperature=2.0)
                         + 0.1 * adversarial_loss(student.discriminator, adapted["feat16"]))
        for opt in (opt_student, opt_teacher, opt_disc):
            opt.zero_grad()
        (student_total + t_loss).backward()
        discriminator_loss(student.discriminator, t_feats.feat16, adapted["feat16"]).backward()
        for model in (teacher, student):
            for pname, p in model.named_parameters():
                assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname
        for opt in (opt_student, opt_teacher, opt_disc):
            opt.step()


def test_stages_export_with_static_shapes(models):
    lite = models["lite"]

    class Decode(nn.Module):  # the `decode` engine
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, *args):
            return self.model.segment(*args)

    feats = lite.encode_key(torch.rand(1, 3, H, W))
    keys, values, valid = random_memory(lite, 2, slots=4)
    args = (feats.key, feats.feat16, feats.skip8, feats.skip4, keys, values, valid)
    program = torch.export.export(Decode(lite), args)
    other_valid = torch.tensor([[True, False, True, False]])  # a different fill, the same graph
    with torch.no_grad():
        torch.testing.assert_close(program.module()(*args[:-1], other_valid), lite.segment(*args[:-1], other_valid))


def test_registry_build_save_load(tmp_path, models):
    with pytest.raises(VsegError, match="unknown model 'nope'"):
        build_model("nope")
    with pytest.raises(VsegError, match="no option"):
        make_config("lite", key_dims=3)
    small = build_model("lite", decoder_widths=[32, 16, 16], use_discriminator=False)
    path = save_model(small, tmp_path / "lite.safetensors")
    back = load_model(path).eval()
    assert back.config == small.config
    frame = torch.rand(1, 3, H, W)
    with torch.no_grad():
        torch.testing.assert_close(back.encode_key(frame).key, small.eval().encode_key(frame).key)
