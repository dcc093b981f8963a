"""VOS training: the clip sampler, losses and schedules, a few real training steps of stm and
lite (overfitting one clip), resumable checkpoints and validation J&F."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import default_collate

from vseg.data.datasets import DavisDataset, load_sequence
from vseg.data.synth_vos import generate_vos
from vseg.errors import VsegError
from vseg.metrics.davis import score_sequence, summarise_davis
from vseg.models.registry import build_model, load_model
from vseg.train.checkpoint import list_checkpoints, resolve_checkpoint, save_checkpoint
from vseg.train.config import TrainConfig, hard_pixel_fraction, lr_factor
from vseg.train.losses import bootstrapped_cross_entropy, encode_clip_keys, masks_to_ids, rollout_clip
from vseg.train.trainer import VOSTrainer
from vseg.train.validate import segment_sequence, validate_vos
from vseg.train.vos import max_skip_at_step, skip_schedule_samples, train_vos
from vseg.train.vos_data import VOSClipDataset, resize_ids

CROP = (48, 80)
SMALL_CROP = (32, 48)  # for tests that only need the machinery to run


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """3 synthetic clips of 6 frames at 64x96: clip 1 is val, clips 0 and 2 train."""
    root = tmp_path_factory.mktemp("synth")
    summary = generate_vos(root, clips=3, seed=5, frames=6, height=64, width=96, val_fraction=0.3)
    assert summary["val"] == ["synth-5-0001"] and len(summary["train"]) == 2
    return root


def small_config(data, tmp_path, **kw) -> TrainConfig:
    options = dict(data=str(data), out=str(tmp_path / "run"), steps=4, crop=CROP, scale_range=(1.0, 1.0),
                   max_skip=2, warmup_steps=0, progress=False, checkpoint_every=1000, half_weights=False)
    return TrainConfig(**(options | kw))


def one_batch(data, seed=0, index=0, crop=CROP):
    ds = VOSClipDataset(data, crop=crop, max_skip=2, seed=seed)
    return default_collate([ds[index]])


# ---------------------------------------------------------------- sampler


def test_sampler_shapes_and_objects(data):
    ds = VOSClipDataset(data, clip_len=4, max_skip=2, max_objects=3, crop=CROP, scale_range=(0.9, 1.3), seed=3)
    for g in range(6):
        s = ds[g]
        assert s["frames"].shape == (4, 3, *CROP) and s["frames"].dtype == torch.float32
        assert 0 <= s["frames"].min() and s["frames"].max() <= 1
        assert s["masks"].shape == (4, 3, *CROP)
        assert set(s["masks"].unique().tolist()) <= {0.0, 1.0}
        assert s["masks"].sum(1).max() <= 1  # objects never overlap
        valid = s["object_valid"]
        assert valid.shape == (3,) and valid[0]  # at least one object
        assert (s["object_ids"][valid] > 0).all() and (s["object_ids"][~valid] == 0).all()
        first_pixels = s["masks"][0].sum((1, 2))
        assert (first_pixels[valid] >= ds.min_object_pixels).all() and (first_pixels[~valid] == 0).all()
        assert (s["masks"][:, ~valid] == 0).all()
        gaps = s["frame_indices"].diff()
        assert (gaps >= 1).all() and (gaps <= 2).all()


def test_sampler_is_deterministic_by_seed(data):
    a = VOSClipDataset(data, crop=CROP, scale_range=(0.9, 1.2), seed=1)
    b = VOSClipDataset(data, crop=CROP, scale_range=(0.9, 1.2), seed=1)
    other = VOSClipDataset(data, crop=CROP, scale_range=(0.9, 1.2), seed=2)
    differs = False
    for g in range(8):
        sa, sb, so = a[g], b[g], other[g]
        assert torch.equal(sa["frames"], sb["frames"]) and torch.equal(sa["masks"], sb["masks"])
        assert sa["sequence"] == sb["sequence"]
        differs |= not torch.equal(sa["frames"], so["frames"])
    assert differs
    # An epoch visits every sequence once; set_epoch(e) turns index i into sample e * len + i.
    assert sorted(a[g]["sequence"] for g in range(len(a))) == sorted(a.sequences[i].name for i in range(len(a)))
    b.set_epoch(3)
    assert torch.equal(b[1]["frames"], a[3 * len(a) + 1]["frames"])


def test_skip_schedule_switches_the_gap_at_its_sample_numbers(data):
    """Before its first sample a scheduled dataset draws the clips of a plain one with max_skip,
    from there on those of a plain one with the scheduled skip (same seed, same sample numbers)."""
    short = VOSClipDataset(data, crop=CROP, max_skip=1, seed=4)
    long = VOSClipDataset(data, crop=CROP, max_skip=2, seed=4)
    scheduled = VOSClipDataset(data, crop=CROP, max_skip=1, seed=4, skip_schedule=((5, 2),))
    for g in range(12):
        expected = short[g] if g < 5 else long[g]
        got = scheduled[g]
        assert torch.equal(got["frame_indices"], expected["frame_indices"])
        assert torch.equal(got["frames"], expected["frames"])
    assert all(int(short[g]["frame_indices"].diff().max()) == 1 for g in range(12))
    assert any(int(long[g]["frame_indices"].diff().max()) == 2 for g in range(5, 12))
    with pytest.raises(ValueError, match="skip_schedule"):
        VOSClipDataset(data, crop=CROP, skip_schedule=((8, 2), (4, 3)))


def test_skip_schedule_in_steps(data, tmp_path):
    cfg = small_config(data, tmp_path, steps=100, batch_size=4, max_skip=5, skip_schedule=((0.1, 12), (0.7, 5)))
    assert skip_schedule_samples(cfg) == ((40, 12), (280, 5))
    assert [max_skip_at_step(cfg, s) for s in (0, 9, 10, 69, 70, 99)] == [5, 5, 12, 12, 5, 5]
    with pytest.raises(VsegError, match="max-skip schedule"):
        train_vos(small_config(data, tmp_path, skip_schedule=((0.7, 5), (0.1, 12))))


def test_sampler_masks_follow_the_dataset_ids(data):
    """Without scaling or cropping, object k of every frame is exactly the dataset id object_ids[k]
    in that frame; with flips, frames and masks of the whole clip are mirrored together."""
    sequences = {s.name: s for s in DavisDataset(data, "train")}
    plain = VOSClipDataset(data, max_skip=2, max_objects=4, crop=(64, 96), flip=False, seed=0)
    flipping = VOSClipDataset(data, max_skip=2, max_objects=4, crop=(64, 96), flip=True, seed=0)
    mirrored = 0
    for g in range(10):
        s = plain[g]
        frames, masks = load_sequence(sequences[s["sequence"]])
        gt = torch.from_numpy(masks[s["frame_indices"].numpy()])  # [T, H, W]
        expected_frames = torch.from_numpy(frames[s["frame_indices"].numpy()]).permute(0, 3, 1, 2) / 255.0
        assert torch.allclose(s["frames"], expected_frames)
        for k, obj in enumerate(s["object_ids"].tolist()):
            expected = (gt == obj).float() if obj else torch.zeros_like(gt, dtype=torch.float32)
            assert torch.equal(s["masks"][:, k], expected)
        f = flipping[g]
        flipped = not torch.equal(f["frames"], s["frames"])
        mirrored += flipped
        if flipped:
            assert torch.equal(f["frames"], s["frames"].flip(-1)) and torch.equal(f["masks"], s["masks"].flip(-1))
        else:
            assert torch.equal(f["masks"], s["masks"])
    assert mirrored > 0


# ---------------------------------------------------------------- losses, schedules, checkpoints


def test_bootstrapped_ce_keeps_the_hardest_pixels():
    logits = torch.zeros(1, 2, 1, 4)
    logits[0, 1, 0] = torch.tensor([4.0, 2.0, -2.0, -4.0])  # target 0 everywhere: pixel 0 hardest
    target = torch.zeros(1, 1, 4, dtype=torch.long)
    per_pixel = torch.nn.functional.softplus(logits[0, 1, 0])  # CE of class 0 against [0, x]
    assert torch.isclose(bootstrapped_cross_entropy(logits, target, 1.0), per_pixel.mean())
    assert torch.isclose(bootstrapped_cross_entropy(logits, target, 0.5), per_pixel[:2].mean())
    masks = torch.zeros(1, 2, 2, 2)
    masks[0, 0, 0, 0] = masks[0, 1, 1, 1] = 1
    assert masks_to_ids(masks).tolist() == [[[1, 0], [0, 2]]]


def test_schedules():
    cfg = TrainConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.0,
                      bootstrap_start=0.2, bootstrap_end=0.6, bootstrap_fraction=0.2)
    assert lr_factor(cfg, 0) == pytest.approx(0.1 * (0.5 + 0.5 * np.cos(0)))
    assert lr_factor(cfg, 50) == pytest.approx(0.5)
    step = TrainConfig(steps=100, schedule="step", warmup_steps=0, step_milestones=(0.5, 0.8), step_gamma=0.1)
    assert [lr_factor(step, s) for s in (49, 50, 80)] == pytest.approx([1.0, 0.1, 0.01])
    assert [hard_pixel_fraction(cfg, s) for s in (19, 20, 40, 60, 99)] == pytest.approx([1, 1, 0.6, 0.2, 0.2])


def test_checkpoint_folders(tmp_path):
    module = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(module.parameters())
    for step in (10, 20, 30):
        save_checkpoint(tmp_path / "checkpoints", step, {"model": module}, {"model": opt}, {"x": step}, keep=2)
    (tmp_path / "checkpoints" / "step_0000040.partial").mkdir()  # an interrupted save is ignored
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step_0000020", "step_0000030"]
    assert resolve_checkpoint(tmp_path).name == "step_0000030"
    assert json.loads((resolve_checkpoint(tmp_path) / "state.json").read_text()) == {"step": 30, "x": 30}


# ---------------------------------------------------------------- training


def run_steps(trainer, batch, steps):
    return [trainer.train_step(batch, step) for step in range(steps)]


def test_stm_overfits_one_clip(data, tmp_path):
    torch.manual_seed(0)
    cfg = small_config(data, tmp_path, steps=10, lr=3e-4, bootstrap_fraction=1.0)
    stats = run_steps(VOSTrainer(cfg, torch.device("cpu")), one_batch(data), cfg.steps)
    losses = [s["loss"] for s in stats]
    assert losses[-1] < 0.5 * losses[0]


def test_stm_overfits_one_clip_with_bfloat16_autocast_on_cpu(data, tmp_path):
    torch.manual_seed(0)
    cfg = small_config(data, tmp_path, steps=10, lr=3e-4, bootstrap_fraction=1.0, amp=True, dice_weight=1.0)
    trainer = VOSTrainer(cfg, torch.device("cpu"))
    stats = run_steps(trainer, one_batch(data), cfg.steps)
    losses = [s["loss"] for s in stats]
    assert losses[-1] < 0.5 * losses[0]
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # autocast, not a bf16 model


def test_lite_distillation_with_every_part_overfits_one_clip(data, tmp_path):
    torch.manual_seed(0)
    cfg = small_config(data, tmp_path, model="lite", steps=10, lr=2e-3, teacher_lr=3e-4,
                       bootstrap_fraction=1.0)
    trainer = VOSTrainer(cfg, torch.device("cpu"))
    assert trainer.model.stff is not None and trainer.model.smooth is not None and trainer.damper is not None
    before = {name: [p.detach().clone() for p in m.parameters()]
              for name, m in {"teacher": trainer.teacher, "discriminator": trainer.model.discriminator}.items()}
    stats = run_steps(trainer, one_batch(data), cfg.steps)
    assert {"loss", "teacher", "feature_kd", "adversarial", "discriminator", "kd_factor"} <= set(stats[0])
    assert stats[-1]["loss"] < 0.5 * stats[0]["loss"]
    assert stats[-1]["feature_kd"] < stats[0]["feature_kd"]
    assert all(0.1 <= s["kd_factor"] <= 1.0 for s in stats)
    for name, module in {"teacher": trainer.teacher, "discriminator": trainer.model.discriminator}.items():
        assert any(not torch.equal(a, b) for a, b in zip(before[name], module.parameters())), name


@pytest.mark.parametrize("flags, parts", [
    (dict(use_kd=False, use_stff=False), set()),
    (dict(use_smooth=False, use_stff=False, use_discriminator=False, use_adaptive_lr=False), {"feature_kd"}),
    (dict(use_stff=False, use_discriminator=False, use_adaptive_lr=False), {"feature_kd", "smooth"}),
    (dict(use_discriminator=False, use_adaptive_lr=False), {"feature_kd", "smooth", "stff"}),
    (dict(use_adaptive_lr=False), {"feature_kd", "smooth", "stff", "adversarial"}),
    (dict(), {"feature_kd", "smooth", "stff", "adversarial", "kd_factor"}),
])
def test_lite_ablation_switches(data, tmp_path, flags, parts):
    cfg = small_config(data, tmp_path, model="lite", teacher_lr=0.0, crop=SMALL_CROP, **flags)
    trainer = VOSTrainer(cfg, torch.device("cpu"))
    model = trainer.model
    assert (model.smooth is not None) == ("smooth" in parts)
    assert (model.stff is not None) == ("stff" in parts)
    assert (model.discriminator is not None) == ("adversarial" in parts)
    assert (trainer.adapters is not None) == ("feature_kd" in parts and "smooth" not in parts)
    if "feature_kd" in parts:
        assert "teacher" not in trainer.optimizers and not trainer.teacher.training  # teacher_lr 0: frozen
    else:
        assert trainer.teacher is None  # nothing reads a teacher without KD
    stats = trainer.train_step(one_batch(data, crop=SMALL_CROP), 0)
    # A frozen teacher's loss is computed only for the adaptive damper, which reads it.
    expected = parts - {"smooth", "stff"} | ({"teacher"} if "kd_factor" in parts else set())
    assert set(stats) - {"loss", "discriminator"} == expected


def test_frozen_teacher_key_features_match_its_rollout(data):
    """The feature-KD path without the teacher's decoder reads the features a full rollout gives."""
    torch.manual_seed(0)
    teacher = build_model("stm", **TINY_STM).eval()
    batch = one_batch(data, crop=SMALL_CROP)
    with torch.no_grad():
        rolled = rollout_clip(teacher, batch["frames"], batch["masks"], batch["object_valid"]).feats
        encoded = encode_clip_keys(teacher, batch["frames"])
    assert len(rolled) == len(encoded) == batch["frames"].shape[1]
    for a, b in zip(rolled, encoded):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y)
    with pytest.raises(ValueError, match="previous frame"):
        encode_clip_keys(build_model("lite"), batch["frames"])


# Narrow models: resuming does not depend on the widths, and the checkpoints stay small.
TINY_STM = dict(key_widths=(16, 32, 64), value_widths=(16, 32, 64), decoder_widths=(32, 32, 32), value_dim=64)
TINY_OPTIONS = {"stm": dict(model_options=TINY_STM),
                "lite": dict(teacher_options=TINY_STM, model_options=dict(teacher_feat16=64, teacher_skip8=32))}


@pytest.mark.parametrize("model", ["stm", "lite"])
def test_resume_gives_the_uninterrupted_weights(data, tmp_path, model):
    options = dict(model=model, steps=4, crop=SMALL_CROP, **TINY_OPTIONS[model])
    a = train_vos(small_config(data, tmp_path / "full", checkpoint_every=2, **options))
    resumed = tmp_path / "full" / "run" / "checkpoints" / "step_0000002"
    b = train_vos(small_config(data, tmp_path / "resumed", resume=str(resumed), **options))
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    wa, wb = load_file(str(a.checkpoint / "weights.safetensors")), load_file(str(b.checkpoint / "weights.safetensors"))
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # Steps 3 and 4 did change the weights (the comparison above is not vacuous).
    w2 = load_file(str(resumed / "weights.safetensors"))
    assert any(not torch.equal(w2[k], wa[k]) for k in wa if k.startswith("model."))
    shipped = load_model(a.weights)  # the deployable model: no training-only parts
    assert all(k.split(".")[0] not in shipped.training_only for k in shipped.state_dict())


def test_half_weights_load_as_float32(data, tmp_path):
    result = train_vos(small_config(data, tmp_path, steps=1, half_weights=True, crop=SMALL_CROP))
    assert result.weights.stat().st_size < 25e6  # the default stm ships under 25 MB
    stored = load_file(str(result.weights))
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}
    assert next(load_model(result.weights).parameters()).dtype == torch.float32


def test_init_weights_carry_their_config_and_options_override_it(data, tmp_path):
    """Continuing a file keeps its widths and working size (no size-mismatch traceback for a
    non-default one); --min-side (model_options) still replaces the working size; weights that
    do not fit an option are one InputError."""
    from vseg.errors import InputError
    from vseg.models.registry import save_model

    torch.manual_seed(0)
    tiny = {"key_widths": (8, 16, 16), "value_widths": (8, 16, 16), "decoder_widths": (16, 16, 16), "min_side": 96}
    start = save_model(build_model("stm", **tiny), tmp_path / "tiny.safetensors")
    kept = load_model(train_vos(small_config(data, tmp_path / "a", steps=1, crop=SMALL_CROP,
                                             init_weights=str(start))).weights)
    assert (kept.config.key_widths, kept.config.decoder_widths, kept.config.min_side) == ((8, 16, 16), (16, 16, 16), 96)
    replaced = load_model(train_vos(small_config(data, tmp_path / "b", steps=1, crop=SMALL_CROP,
                                                 init_weights=str(start), model_options={"min_side": 0})).weights)
    assert replaced.config.min_side == 0 and replaced.config.key_widths == (8, 16, 16)
    with pytest.raises(InputError, match="do not fit"):
        train_vos(small_config(data, tmp_path / "c", steps=1, crop=SMALL_CROP, init_weights=str(start),
                               model_options={"decoder_widths": (8, 8, 8)}))


# ---------------------------------------------------------------- validation


def test_validate_oracle_scores_100(data):
    val = {s.name: s for s in DavisDataset(data, "val")}

    def oracle(name, frames, first_mask):
        truth = resize_ids(load_sequence(val[name])[1], frames.shape[1:3]).numpy()
        assert np.array_equal(truth[0], first_mask)
        return truth

    result = validate_vos(oracle, data, split="val", size=(32, 48))
    assert result["J&F"] == result["J"] == result["F"] == pytest.approx(100.0)
    assert result["num_sequences"] == 1 and list(result["sequences"]) == ["synth-5-0001"]


def test_validate_model_matches_manual_scoring(data):
    torch.manual_seed(0)
    model = build_model("stm")
    result = validate_vos(model, data, split="train", max_sequences=1, mem_every=2, capacity=3)
    seq = DavisDataset(data, "train")[0]
    frames, masks = load_sequence(seq)
    preds = segment_sequence(model, frames, masks[0], mem_every=2, capacity=3)
    assert np.array_equal(preds[0], masks[0])
    expected = summarise_davis([score_sequence(masks, preds, name=seq.name)])["dataset"]
    assert result["J&F"] == pytest.approx(expected["J&F-Mean"]) and result["J"] == pytest.approx(expected["J-Mean"])
    assert 0.0 <= result["F"] <= 100.0 and result["num_sequences"] == 1


# ---------------------------------------------------------------- BatchNorm freeze

def test_recalibration_averages_the_batch_statistics(data):
    from vseg.train.norm import recalibrate_batchnorm

    model = build_model("stm", **TINY_STM)
    first_bn = next(m for m in model.key_encoder.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen = []
    hook = first_bn.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach().mean((0, 2, 3))))
    batches = [one_batch(data, index=i, crop=SMALL_CROP) for i in range(2)]
    assert recalibrate_batchnorm(model, batches, torch.device("cpu")) == 2
    hook.remove()
    assert len(seen) == 2  # one key-encoder call per clip
    torch.testing.assert_close(first_bn.running_mean, torch.stack(seen).mean(0), rtol=1e-5, atol=1e-6)
    assert first_bn.momentum == 0.1  # restored after calibrating


def test_frozen_norms_stay_frozen_and_resume_across_the_freeze(data, tmp_path):
    options = dict(model="stm", steps=4, crop=SMALL_CROP, freeze_norm_at=0.5, norm_calibration_batches=2,
                   checkpoint_every=1, keep_checkpoints=10, **TINY_OPTIONS["stm"])
    train_vos(small_config(data, tmp_path / "full", **options))
    ckpts = tmp_path / "full" / "run" / "checkpoints"
    # freeze_norm_at 0.5 of 4 steps: recalibrated and frozen before the third step
    w2, w3, w4 = (load_file(str(ckpts / f"step_000000{i}" / "weights.safetensors")) for i in (2, 3, 4))
    stats = [k for k in w4 if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(w3[k], w4[k]) for k in stats)  # frozen: the last step left them
    assert any(not torch.equal(w2[k], w3[k]) for k in stats)  # recalibrated
    for start in ("step_0000002", "step_0000003"):  # resumed before and after the freeze
        b = train_vos(small_config(data, tmp_path / start, resume=str(ckpts / start), **options))
        wb = load_file(str(b.checkpoint / "weights.safetensors"))
        assert all(torch.equal(w4[k], wb[k]) for k in w4), start


# ---------------------------------------------------------------- spvos (mixed sparse training)

@pytest.fixture(scope="module")
def tiny_stm_weights(tmp_path_factory):
    from vseg.models.registry import save_model

    torch.manual_seed(0)
    return save_model(build_model("stm", **TINY_STM), tmp_path_factory.mktemp("stm") / "stm.safetensors")


def test_spvos_mixed_sparse_training_trains_the_gates_and_resumes(data, tmp_path, tiny_stm_weights):
    options = dict(model="spvos", steps=4, crop=(64, 96), init_weights=str(tiny_stm_weights),
                   model_options=dict(tile=8), checkpoint_every=2)
    a = train_vos(small_config(data, tmp_path / "full", **options))
    sparse = [h for h in a.history if "budget" in h]
    assert [h["step"] for h in sparse] == [2, 4]  # dense and sparse batches alternate
    assert all(0.2 <= h["budget"] <= 0.8 and 0.0 <= h["realized_cost"] <= 1.0 for h in sparse)
    trained = load_model(a.weights)
    start = load_model(tiny_stm_weights)
    key_bn = [k for k in start.state_dict() if k.startswith("key_encoder.") and "running" in k]
    assert all(torch.equal(trained.state_dict()[k], start.state_dict()[k]) for k in key_bn)  # frozen
    resumed = tmp_path / "full" / "run" / "checkpoints" / "step_0000002"
    b = train_vos(small_config(data, tmp_path / "resumed", resume=str(resumed), **options))
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    wa = load_file(str(a.checkpoint / "weights.safetensors"))
    w2 = load_file(str(resumed / "weights.safetensors"))
    assert any(not torch.equal(w2[k], wa[k]) for k in wa if k.startswith("model.gates."))  # the gates learn


def test_spvos_training_needs_stm_weights(data, tmp_path):
    from vseg.errors import VsegError

    with pytest.raises(VsegError, match="init-weights"):
        train_vos(small_config(data, tmp_path, model="spvos"))


def test_spvos_gates_learn_at_their_own_rate_through_the_schedule(data, tmp_path):
    from vseg.models.registry import save_model

    stm = save_model(build_model("stm", **TINY_STM), tmp_path / "stm.safetensors")
    cfg = small_config(data, tmp_path, model="spvos", init_weights=str(stm), lr=1e-3, gate_lr_scale=10.0,
                       warmup_steps=4, steps=8)
    trainer = VOSTrainer(cfg, torch.device("cpu"))
    gates = {id(p) for p in trainer.model.gate_parameters()}
    groups = trainer.optimizers["model"].param_groups
    assert gates and all(({id(p) for p in g["params"]} <= gates) == (g["multiplier"] == 10.0) for g in groups if g["params"])
    assert sum(len(g["params"]) for g in groups if g["multiplier"] == 10.0) == len(gates)
    factor = trainer.set_step_lr(1)  # in the warm-up
    assert factor == pytest.approx(lr_factor(cfg, 1)) and factor < 0.5
    for g in groups:
        assert g["lr"] == pytest.approx(1e-3 * factor * (10.0 if g["multiplier"] == 10.0 else 1.0))
    assert {g["multiplier"] for g in groups} == {1.0, 10.0}


def test_cpu_training_keeps_the_callers_thread_count():
    # Two CPU runs side by side, each given one core (OMP_NUM_THREADS=1 or set_num_threads),
    # must not be switched back to every core: they would spin against each other.
    from vseg.train.config import pick_device

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert pick_device("cpu").type == "cpu"
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
