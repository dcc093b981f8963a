"""spvos: weights from stm, dense frames equal stm, explicit gate state, the triple gate and its
training pieces, FLOP accounting on hand-built decisions, the inference-core policy."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from vseg.errors import VsegError
from vseg.models.cost import SparseCostModel, summarise_frame_costs, tile_area_weights
from vseg.models.gates import (
    TripleGate,
    check_budget,
    expected_tile_cost,
    gumbel_softmax_st,
    mixed_batch_budget,
    reference_input,
    sample_budget,
    sparsity_loss,
)
from vseg.models.lite import LiteVOS
from vseg.models.registry import build_model, load_model, save_model, step_gflops
from vseg.models.spvos import SpVOS, spvos_from_stm, spvos_training_step
from vseg.models.stm import STM, STMConfig
from vseg.ops.reference import COARSE, DENSE, REUSE
from vseg.runtime.inference_core import InferenceCore

SMALL = {"key_dim": 16, "value_dim": 32, "key_widths": (16, 24, 32), "value_widths": (16, 16, 32),
             "decoder_widths": (32, 16, 16)}
ALL_STAGES = ("layer1", "layer2", "layer3")


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same global RNG state (fresh gates, random tensors)."""
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def stm_model():
    torch.manual_seed(0)
    model = STM(STMConfig(**SMALL))
    with torch.no_grad():  # non-trivial BatchNorm statistics, so folding them is really tested
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def frames(n=3, h=64, w=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 3, h, w, generator=g) for _ in range(n)]


def force(model: SpVOS, choices) -> None:
    """Make every gate (key encoder, then decoder) answer a fixed choice, whatever its input:
    choices (one per gated conv, in order) are repeated as needed."""
    for i, gate in enumerate([*model.gates.values(), *model.decoder_gates.values()]):
        choice = choices[i % len(choices)]
        with torch.no_grad():
            gate.head.weight.zero_()
            gate.head.bias.copy_(torch.tensor([0.0, 0.0, 0.0]))
            gate.head.bias[choice] = 100.0  # far beyond any Gumbel noise
            gate.budget_bias.weight.zero_()
            gate.budget_bias.bias.zero_()


# ------------------------------------------------------------------ weights and the dense path


def test_from_stm_copies_every_shared_weight(stm_model):
    model = spvos_from_stm(stm_model, gated_stages=ALL_STAGES)
    ours, theirs = model.state_dict(), stm_model.state_dict()
    for name, tensor in theirs.items():
        assert torch.equal(ours[name], tensor), name
    assert all(name.startswith(("gates.", "decoder_gates.")) for name in set(ours) - set(theirs))
    assert len(model.gates) == 2 * 6  # two gated convs per block, 2 blocks in each of 3 stages
    assert list(model.decoder_gates) == ["up8_conv1", "up8_conv2", "up4_conv1", "up4_conv2"]
    with pytest.raises(VsegError, match="stm weights"):
        spvos_from_stm(LiteVOS())


def test_load_spvos_takes_spvos_or_stm_weights_only(stm_model, tmp_path):
    from vseg.models.weights import load_spvos

    from_stm = load_spvos(save_model(stm_model, tmp_path / "stm.safetensors"))
    assert isinstance(from_stm, SpVOS) and not from_stm.training
    ours = from_stm.state_dict()
    assert all(torch.equal(ours[k], v.float()) for k, v in stm_model.state_dict().items())
    trained = spvos_from_stm(stm_model)
    reloaded = load_spvos(save_model(trained, tmp_path / "spvos.safetensors"))
    assert all(torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), trained.state_dict().values()))
    with pytest.raises(VsegError, match="not spvos or stm"):
        load_spvos(save_model(LiteVOS(), tmp_path / "lite.safetensors"))


@pytest.mark.parametrize("stages", [("layer1", "layer2"), ALL_STAGES])
def test_dense_encode_key_equals_stm(stm_model, stages):
    model = spvos_from_stm(stm_model, gated_stages=stages).eval()
    frame = frames(1)[0]
    with torch.no_grad():
        expected = stm_model.encode_key(frame)
        for out in (model.encode_key(frame, dense=True), model.encode_key(frame)):  # no state -> dense
            for got, want in zip(out.features[:4], expected[:4]):
                assert torch.equal(got, want)
            assert all((d == DENSE).all() for d in out.decisions)
            assert torch.equal(out.key, expected.key)  # stm-style field access


def test_state_layout_and_round_trip(stm_model):
    model = spvos_from_stm(stm_model, gated_stages=ALL_STAGES).eval()
    f0, f1, f2 = frames(3)
    with torch.no_grad():
        first = model.encode_key(f0, dense=True)
        assert len(first.state) == len(model.gate_state_names()) == 18
        assert len(first.decisions) == len(model.gated_conv_names()) == 12
        second = model.encode_key(f1, first.state, 0.5)
        for a, b in zip(first.state, second.state):
            assert a.shape == b.shape and a.dtype == b.dtype
        for a, b in zip(first.decisions, second.decisions):
            assert a.shape == b.shape and b.dtype == torch.int32
        # the state survives a trip out of torch and back (what an engine runtime does)
        carried = tuple(torch.from_numpy(s.numpy().copy()) for s in second.state)
        direct = model.encode_key(f2, second.state, 0.5)
        resumed = model.encode_key(f2, carried, 0.5)
    for a, b in zip(direct.features[:4], resumed.features[:4]):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="gate_state has 3 tensors"):
        model.encode_key(f1, first.state[:3], 0.5)


def test_forced_dense_frames_equal_dense_and_forced_reuse_keeps_the_state(stm_model):
    model = spvos_from_stm(stm_model).eval()  # all three stages gated (the default)
    f0, f1 = frames(2)
    with torch.no_grad():
        first = model.encode_key(f0, dense=True)
        force(model, [DENSE])
        gated = model.encode_key(f1, first.state, 0.5)
        dense = model.encode_key(f1, dense=True)
        for a, b in zip(gated.features[:4], dense.features[:4]):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)  # BatchNorm folded: rounding only
        force(model, [REUSE])
        reused = model.encode_key(f1, first.state, 0.5)
    for a, b in zip(gated.state, dense.state):  # computed everywhere: the new inputs and outputs
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    names = model.gate_state_names()
    for name, before, after in zip(names, first.state, reused.state):
        # every conv output is last frame's, and so is the input those outputs came from
        assert torch.equal(before, after), name
    assert all((d == REUSE).all() for d in reused.decisions)


def test_reference_input_keeps_the_old_input_under_reused_tiles_by_hand():
    # a stride-2 conv with 2x2 output tiles: one tile covers a 4x4 input window; the input is
    # 6x7, so the last row and column of tiles cover a clipped window
    x, x_prev = torch.ones(2, 3, 6, 7), torch.zeros(2, 3, 6, 7)
    decision = torch.full((2, 1, 2, 2), DENSE, dtype=torch.int32)
    decision[0, 0, 0, 1] = REUSE
    decision[1, 0, 1, 0] = COARSE
    ref = reference_input(x, x_prev, decision, window=4)
    expected = torch.ones(2, 3, 6, 7)
    expected[0, :, 0:4, 4:7] = 0.0  # the REUSEd tile's window (clipped at the right edge)
    assert torch.equal(ref, expected)


def test_training_path_equals_the_inference_op_for_the_same_decisions(stm_model):
    model = spvos_from_stm(stm_model, gated_stages=ALL_STAGES, coarse_mode="bilinear")
    force(model, [REUSE, COARSE, DENSE])
    f0, f1 = frames(2)
    with torch.no_grad():
        first = model.eval().encode_key(f0, dense=True)
        inference = model.encode_key(f1, first.state, 0.5)
        training = model.train().encode_key(f1, first.state, 0.5)  # masked-dense, Gumbel ST gates
    for a, b in zip(inference.features[:4], training.features[:4]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(inference.decisions, training.decisions))
    assert not any(m.training for m in model.key_encoder.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_sparse_encode_key_exports_with_one_op_per_gated_conv(stm_model):
    model = spvos_from_stm(stm_model, gated_stages=("layer1", "layer2")).eval()
    f0, f1 = frames(2)
    with torch.no_grad():
        state = model.encode_key(f0, dense=True).state

    class SparseKey(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.spvos = model

        def forward(self, frame, *state):
            out = self.spvos.encode_key(frame, state, 0.5)
            return (*out.features[:4], *out.state, *out.decisions)

    exported = torch.export.export(SparseKey(), (f1, *state))
    ops = [n for n in exported.graph.nodes if n.target is torch.ops.vseg.gated_sparse_conv2d.default]
    assert len(ops) == len(model.gated_conv_names()) == 8
    with torch.no_grad():
        eager = SparseKey()(f1, *state)
    for a, b in zip(exported.module()(f1, *state), eager):
        torch.testing.assert_close(a, b)


# ------------------------------------------------------------------ the gate and training pieces


def test_gumbel_straight_through_is_one_hot_forward_and_soft_backward():
    logits = torch.randn(2, 3, 4, 5, requires_grad=True)
    weights = gumbel_softmax_st(logits, tau=0.5, generator=torch.Generator().manual_seed(1))
    assert set(weights.detach().unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(weights.detach().sum(1), torch.ones(2, 4, 5))
    again = gumbel_softmax_st(logits, tau=0.5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(weights, again)
    (weights * torch.randn(2, 3, 4, 5)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_gate_eval_decisions_and_budget_direction():
    gate = TripleGate(in_channels=4, tile=4, stride=2, budget_range=(0.2, 0.8)).eval()
    x, x_prev = torch.randn(1, 4, 24, 20), torch.randn(1, 4, 24, 20)
    out = gate(x, x_prev, 0.5)
    assert out.decision.shape == (1, 1, 3, 3) and out.decision.dtype == torch.int32  # 8-pixel windows, ceil
    assert torch.equal(out.decision, out.probabilities.argmax(1, keepdim=True).int())
    costs = [expected_tile_cost(gate(x, x_prev, b).probabilities).mean().item() for b in (0.2, 0.5, 0.8)]
    assert costs[0] < costs[1] < costs[2]  # an untrained gate already spends more with more budget


def test_budget_helpers():
    assert check_budget(0.5, 0.2, 0.8) == 0.5
    with pytest.raises(VsegError, match="outside the range"):
        check_budget(0.9, 0.2, 0.8)
    draws = [sample_budget(random.Random(3), 0.2, 0.6) for _ in range(2)]
    assert draws[0] == draws[1] and 0.2 <= draws[0] <= 0.6
    assert 0.2 <= sample_budget(np.random.default_rng(0), 0.2, 0.6) <= 0.6
    assert torch.isclose(sparsity_loss(torch.tensor([0.3, 0.7]), 0.5), torch.tensor(0.04))
    rng = random.Random(0)
    plan = [mixed_batch_budget(step, rng, 0.2, 0.8) for step in range(4)]
    assert plan[0] is None and plan[2] is None and 0.2 <= plan[1] <= 0.8 and 0.2 <= plan[3] <= 0.8


def test_training_step_gradients(stm_model):
    model = spvos_from_stm(stm_model).train()
    g = torch.Generator().manual_seed(0)
    clip = torch.rand(1, 3, 3, 32, 32, generator=g)
    masks = torch.zeros(1, 3, 1, 32, 32)
    masks[..., 8:20, 8:24] = 1
    valid = torch.ones(1, 1, dtype=torch.bool)
    loss, stats = spvos_training_step(model, clip, masks, valid, budget=0.4, generator=g)
    loss.backward()
    assert np.isfinite(stats["loss"]) and 0.0 <= stats["expected_cost"] <= 1.0 and stats["budget"] == 0.4
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.gates.parameters())
    assert model.key_encoder.layer1[0].conv1[0].weight.grad.abs().sum() > 0
    model.zero_grad()
    loss, stats = spvos_training_step(model, clip, masks, valid, budget=None)
    loss.backward()
    assert "sparsity" not in stats and all(p.grad is None for p in model.gates.parameters())


# ------------------------------------------------------------------ cost accounting


def test_tile_area_weights_by_hand():
    # 5 x 6 output, tile 4: tile rows hold 4 and 1 rows, tile columns 4 and 2 columns
    expected = torch.tensor([[16.0, 8.0], [4.0, 2.0]], dtype=torch.float64) / 30
    assert torch.allclose(tile_area_weights(5, 6, 4), expected)


def test_frame_cost_on_hand_built_decisions(stm_model):
    model = spvos_from_stm(stm_model, tile=8, gated_stages=("layer1", "layer2"), gated_decoder=())
    cost = SparseCostModel(model, 64, 96)
    # layer1 convs: 16 -> 16 channels at 16 x 24 (layer1's first conv reads the 64-channel stem)
    assert cost.key.flops[1] == 2 * 16 * 24 * 16 * 16 * 9
    assert cost.key.flops[0] == 2 * 16 * 24 * 16 * 64 * 9
    assert cost.key_dense_flops == pytest.approx(step_gflops(stm_model, 64, 96)["encode_key"] * 1e9)
    assert cost.decoder.names == ()
    grids = [(2, 3)] * 4 + [(1, 2)] * 4  # 16 x 24 and 8 x 12 outputs in 8-pixel tiles
    reuse = [torch.full((1, 1, *g), REUSE, dtype=torch.int32) for g in grids]
    base = cost.key_dense_flops - cost.key.dense_flops + cost.key.gate_flops
    assert cost.frame_cost(reuse, key_dense=False).realized_gflops * 1e9 == pytest.approx(base)
    assert cost.frame_cost(reuse, key_dense=True).realized_gflops * 1e9 == pytest.approx(cost.key_dense_flops)
    # layer1.0.conv2: one DENSE tile (8x8) and one COARSE tile (8x8) of the six 8x8 tiles
    mixed = [d.clone() for d in reuse]
    mixed[1][0, 0, 0, 0] = DENSE
    mixed[1][0, 0, 1, 2] = COARSE
    frame = cost.frame_cost(mixed, key_dense=False)
    assert frame.realized_gflops * 1e9 == pytest.approx(base + cost.key.flops[1] * (1 + 0.25) / 6)
    assert frame.layers["layer1.0.conv2"] == pytest.approx({"reuse": 4 / 6, "coarse": 1 / 6, "dense": 1 / 6})
    assert cost.realized_fraction(mixed) == pytest.approx(cost.key.flops[1] * 1.25 / 6 / cost.key.dense_flops)
    one_hot = [torch.nn.functional.one_hot(d[:, 0].long(), 3).permute(0, 3, 1, 2).float() for d in mixed]
    assert cost.expected_cost(one_hot).item() == pytest.approx(cost.realized_fraction(mixed))
    summary = summarise_frame_costs([cost.frame_cost(reuse, key_dense=True), frame])
    assert summary["frames"] == 2 and summary["dense_frames"] == 1
    assert summary["gated_layer_shares"]["layer1.0.conv2"]["dense"] == round(1 / 6, 4)


# ------------------------------------------------------------------ runtime and registry


def _video(num, h=61, w=90):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    clips = []
    for t in range(num):
        frame = base.copy()
        frame[5 + 4 * t: 15 + 4 * t, 30:45] = 255  # a moving bright square
        clips.append(frame)
    mask = np.zeros((h, w), np.uint8)
    mask[20:40, 20:50] = 4
    return clips, mask


def test_inference_core_runs_spvos_with_its_frame_policy(stm_model):
    model = spvos_from_stm(stm_model, dense_every=3)
    video, mask = _video(8)
    core = InferenceCore(model, mem_every=5)
    results = [core.step(f, mask if t == 0 else None) for t, f in enumerate(video)]
    assert [r.key_cost.dense for r in results] == [True, False, False, True, False, True, False, False]
    assert all(r.ids.shape == mask.shape for r in results)
    summary = core.summary()["sparse"]
    assert summary["frames"] == 8 and summary["dense_frames"] == 3 and summary["budget"] == model.config.budget
    assert summary["realized_gflops_per_frame"] < summary["dense_gflops_per_frame"]
    with pytest.raises(VsegError, match="outside the range"):
        InferenceCore(model, budget=0.95)


def test_spvos_forced_dense_tracks_like_stm(stm_model):
    model = spvos_from_stm(stm_model)
    force(model, [DENSE])
    video, mask = _video(4)
    ours, theirs = InferenceCore(model, mem_every=2), InferenceCore(stm_model, mem_every=2)
    for t, f in enumerate(video):
        a = ours.step(f, mask if t == 0 else None)
        b = theirs.step(f, mask if t == 0 else None)
        torch.testing.assert_close(a.probabilities, b.probabilities, atol=1e-4, rtol=1e-4)


def test_registry_builds_saves_and_loads_spvos(tmp_path, stm_model):
    model = spvos_from_stm(stm_model, tile=4, gated_stages=ALL_STAGES)
    loaded = load_model(save_model(model, tmp_path / "spvos.safetensors"))
    assert isinstance(loaded, SpVOS) and loaded.config == model.config
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    with pytest.raises(VsegError, match="tile"):
        build_model("spvos", tile=6)
    with pytest.raises(VsegError, match="gated_stages"):
        build_model("spvos", gated_stages=("layer4",))
