"""spvos's gated decoder: exactness against stm, REUSE, masked-dense vs tile-sparse on random
decisions for every tile size, per-object state, training toward the budget, FLOP accounting
by hand, the decode engine wrapper and the runtime policy carrying its state."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from vseg.export.graphs import (
    DECISION,
    STATE_IN,
    STATE_OUT,
    engine_graphs,
    example_inputs,
)
from vseg.models.cost import SparseCostModel
from vseg.models.gates import GateOutput
from vseg.models.registry import load_model, save_model
from vseg.models.spvos import SpVOS, spvos_from_stm, spvos_training_step
from vseg.models.stm import STM, STMConfig
from vseg.ops.reference import COARSE, DENSE, REUSE
from vseg.runtime.inference_core import InferenceCore

SMALL = {"key_dim": 16, "value_dim": 32, "key_widths": (16, 24, 32), "value_widths": (16, 16, 32),
         "decoder_widths": (32, 16, 16), "key_blocks": (1, 1, 1)}
ALL_BLOCKS = ("compress", "up8", "up4")
H, W = 64, 96


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def stm_model():
    torch.manual_seed(0)
    return STM(STMConfig(**SMALL)).eval()


def decoder_inputs(objects: int, seed: int = 0):
    """(readout [1, K, 32, 4, 6], feat16, skip8, skip4) of a 64 x 96 frame."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, objects, 32, 4, 6, generator=g), torch.randn(1, 32, 4, 6, generator=g),
            torch.randn(1, 24, 8, 12, generator=g), torch.randn(1, 16, 16, 24, generator=g))


def moved(inputs, amount: float, seed: int = 1):
    """The same inputs, changed a little (a next frame)."""
    g = torch.Generator().manual_seed(seed)
    return tuple(t + amount * torch.randn(t.shape, generator=g) for t in inputs)


class FixedGate(torch.nn.Module):
    """Answers given decisions int32 [N, 1, th, tw] whatever its input, as TripleGate does:
    one-hot weights in training mode (for the masked-dense path), none in eval mode."""

    def __init__(self, decision: torch.Tensor) -> None:
        super().__init__()
        self.decision = decision

    def forward(self, x, x_prev, budget, tau=1.0, generator=None) -> GateOutput:
        one_hot = torch.nn.functional.one_hot(self.decision[:, 0].long(), 3).permute(0, 3, 1, 2).float()
        return GateOutput(self.decision, one_hot if self.training else None, one_hot)


def fix_decoder_gates(model: SpVOS, decisions) -> None:
    for name, d in zip(list(model.decoder_gates), decisions):
        model.decoder_gates[name] = FixedGate(d)


def conv_outputs(state):
    """Each gated conv's output in decision order: state is (input, conv1, conv2) per block."""
    return [t for b in range(len(state) // 3) for t in state[3 * b + 1: 3 * b + 3]]


def uniform_decisions(state, tile: int, value: int):
    return [torch.full((y.shape[0], 1, -(-y.shape[2] // tile), -(-y.shape[3] // tile)), value, dtype=torch.int32)
            for y in conv_outputs(state)]


# ------------------------------------------------------------------ exactness


@pytest.mark.parametrize("objects", [1, 3])
def test_dense_decode_is_stm_and_state_follows_the_objects(stm_model, objects):
    model = spvos_from_stm(stm_model, gated_decoder=ALL_BLOCKS).eval()
    inputs = decoder_inputs(objects)
    with torch.no_grad():
        expected = stm_model.decode(*inputs)
        for out in (model.decode_sparse(*inputs, dense=True), model.decode_sparse(*inputs)):  # no state: dense
            assert torch.equal(out.logits, expected)
            assert len(out.state) == len(model.decoder_state_names()) == 9
            widths = [64, 32, 32, 32, 16, 16, 16, 16, 16]  # compress reads readout + feat16
            sizes = [(4, 6)] * 3 + [(8, 12)] * 3 + [(16, 24)] * 3
            assert [tuple(s.shape) for s in out.state] == [(objects, c, *hw) for c, hw in zip(widths, sizes)]
            grids = [(1, 1)] * 2 + [(1, 2)] * 2 + [(2, 3)] * 2
            assert [tuple(d.shape) for d in out.decisions] == [(objects, 1, *g) for g in grids]
            assert all((d == DENSE).all() and d.dtype == torch.int32 for d in out.decisions)


@pytest.mark.parametrize("tile", [4, 8, 16])
def test_all_dense_decisions_reproduce_stm_and_all_reuse_returns_the_previous_outputs(stm_model, tile):
    model = spvos_from_stm(stm_model, tile=tile, gated_decoder=ALL_BLOCKS).eval()
    before, now = decoder_inputs(2), moved(decoder_inputs(2), 0.3)
    with torch.no_grad():
        first = model.decode_sparse(*before, dense=True)
        fix_decoder_gates(model, uniform_decisions(first.state, tile, DENSE))
        gated = model.decode_sparse(*now, None, first.state, 0.5)
        torch.testing.assert_close(gated.logits, stm_model.decode(*now), atol=1e-5, rtol=1e-5)
        fix_decoder_gates(model, uniform_decisions(first.state, tile, REUSE))
        reused = model.decode_sparse(*now, None, first.state, 0.5)
    for name, old, new in zip(model.decoder_state_names(), first.state, reused.state):
        assert torch.equal(old, new), name  # the outputs and the input they came from
    assert all((d == REUSE).all() for d in reused.decisions)


@pytest.mark.parametrize("tile, coarse_mode", [(4, "nearest"), (8, "bilinear"), (16, "nearest"), (16, "bilinear")])
def test_masked_dense_and_tile_sparse_agree_on_random_decisions(stm_model, tile, coarse_mode):
    model = spvos_from_stm(stm_model, tile=tile, coarse_mode=coarse_mode, gated_decoder=ALL_BLOCKS).eval()
    before, now = decoder_inputs(3), moved(decoder_inputs(3), 0.3)
    g = torch.Generator().manual_seed(tile)
    with torch.no_grad():
        first = model.decode_sparse(*before, dense=True)
        decisions = [torch.randint(0, 3, d.shape, generator=g, dtype=torch.int32)
                     for d in uniform_decisions(first.state, tile, DENSE)]
        fix_decoder_gates(model, decisions)
        sparse = model.eval().decode_sparse(*now, None, first.state, 0.5)  # the custom op, tile by tile
        masked = model.train().decode_sparse(*now, None, first.state, 0.5)  # dense convs blended per tile
    torch.testing.assert_close(sparse.logits, masked.logits, atol=1e-5, rtol=1e-5)
    for a, b in zip(sparse.state, masked.state):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(sparse.decisions, decisions))


def test_each_object_has_its_own_decisions_and_state(stm_model):
    model = spvos_from_stm(stm_model).eval()  # up8 and up4 gated (the default)
    inputs = decoder_inputs(2)
    with torch.no_grad():
        first = model.decode_sparse(*inputs, dense=True)
        # object 0 reuses everything, object 1 recomputes everything
        decisions = uniform_decisions(first.state, 8, REUSE)
        for d in decisions:
            d[1] = DENSE
        fix_decoder_gates(model, decisions)
        now = moved(inputs, 0.5)
        out = model.decode_sparse(*now, None, first.state, 0.5)
        alone = spvos_from_stm(stm_model).eval().decode_sparse(*now, dense=True)
    for name, old, new, fresh in zip(model.decoder_state_names(), first.state, out.state, alone.state):
        if not name.endswith("input"):
            assert torch.equal(new[0], old[0]), name
            torch.testing.assert_close(new[1], fresh[1], atol=1e-5, rtol=1e-5)


def test_key_encoder_only_variant_and_old_weight_files(stm_model, tmp_path):
    model = spvos_from_stm(stm_model, gated_decoder=())
    assert len(model.decoder_gates) == 0 and model.decoder_state_names() == []
    assert engine_graphs(model)["decode"].input_names[-1] == "object_valid"
    # a file written before gated_decoder existed has no such field: it loads as key-encoder-only
    path = save_model(model, tmp_path / "old.safetensors")
    config = {k: v for k, v in dataclasses.asdict(model.config).items() if k != "gated_decoder"}
    save_file(load_file(path), path, metadata={"model": "spvos", "config": json.dumps(config)})
    assert load_model(path).config.gated_decoder == ()


# ------------------------------------------------------------------ training


def test_a_few_steps_pull_the_expected_cost_of_every_gate_to_the_budget(stm_model):
    torch.manual_seed(0)
    model = spvos_from_stm(stm_model, gate_hidden=4).train()
    g = torch.Generator().manual_seed(0)
    clip = torch.rand(1, 3, 3, 32, 48, generator=g)
    masks = torch.zeros(1, 3, 2, 32, 48)
    masks[:, :, 0, 4:16, 8:24] = 1
    masks[:, :, 1, 18:30, 20:44] = 1
    valid = torch.ones(1, 2, dtype=torch.bool)
    gates = [*model.gates.values(), *model.decoder_gates.values()]
    with torch.no_grad():  # start far above the budget: every gate leans to DENSE
        for gate in gates:
            gate.head.bias.copy_(torch.tensor([0.0, 0.0, 3.0]))
    optimizer = torch.optim.Adam([p for gate in gates for p in gate.parameters()], lr=0.1)
    losses = []
    for step in range(6):
        optimizer.zero_grad()
        loss, stats = spvos_training_step(model, clip, masks, valid, budget=0.3, sparsity_weight=10.0,
                                          generator=torch.Generator().manual_seed(step))
        loss.backward()
        if step == 0:  # the decoder gates are in the budget: they get a gradient
            assert all(gate.head.bias.grad.abs().sum() > 0 for gate in model.decoder_gates.values())
        optimizer.step()
        losses.append(stats["sparsity"])
    assert losses[0] > 0.03 and losses[-1] < 0.1 * losses[0], losses


# ------------------------------------------------------------------ cost accounting


def test_decoder_flops_and_frame_cost_by_hand(stm_model):
    model = spvos_from_stm(stm_model, gated_stages=("layer1",), gated_decoder=("up8", "up4"))
    cost = SparseCostModel(model, H, W, objects=2)
    # up8.block: 32 -> 16 then 16 -> 16 at 8 x 12; up4.block: 16 -> 16 twice at 16 x 24; 2 objects
    assert cost.decoder.names == ("decoder.up8.block.conv1", "decoder.up8.block.conv2",
                                  "decoder.up4.block.conv1", "decoder.up4.block.conv2")
    assert cost.decoder.flops == (2 * 2 * 96 * 16 * 32 * 9, 2 * 2 * 96 * 16 * 16 * 9,
                                  2 * 2 * 384 * 16 * 16 * 9, 2 * 2 * 384 * 16 * 16 * 9)
    key = [torch.full((1, 1, 2, 3), REUSE, dtype=torch.int32)] * 2
    dec = [torch.full((2, 1, *grid), REUSE, dtype=torch.int32) for grid in ((1, 2), (1, 2), (2, 3), (2, 3))]
    dec[2][1] = DENSE  # up4 conv1: object 1 dense, object 0 reused
    dec[3][0, 0, 0, 0] = COARSE  # up4 conv2: one of object 0's six tiles coarse
    frame = cost.frame_cost(key, False, dec, False)
    decoder_spent = cost.decoder.flops[2] / 2 + cost.decoder.flops[3] / 2 * 0.25 / 6
    expected = (cost.key_dense_flops - cost.key.dense_flops + cost.key.gate_flops + cost.decode_dense_flops
                - cost.decoder.dense_flops + cost.decoder.gate_flops + decoder_spent)
    assert frame.realized_gflops * 1e9 == pytest.approx(expected)
    assert frame.dense_gflops * 1e9 == pytest.approx(cost.key_dense_flops + cost.decode_dense_flops)
    assert frame.layers["decoder.up4.block.conv1"] == pytest.approx({"reuse": 0.5, "coarse": 0.0, "dense": 0.5})
    assert set(frame.layers) == set(cost.key.names) | set(cost.decoder.names)
    # the decoder ran dense: its layers are not in the shares; the frame did not decode: no decoder cost
    assert set(cost.frame_cost(key, False, dec, True).layers) == set(cost.key.names)
    assert cost.frame_cost(key, True).dense_gflops * 1e9 == pytest.approx(cost.key_dense_flops)
    assert cost.realized_fraction(key, dec) == pytest.approx(
        decoder_spent / (cost.key.dense_flops + cost.decoder.dense_flops))
    one_hot = [torch.nn.functional.one_hot(d[:, 0].long(), 3).permute(0, 3, 1, 2).float() for d in (*key, *dec)]
    assert cost.expected_cost(one_hot[:2], one_hot[2:]).item() == pytest.approx(cost.realized_fraction(key, dec))


# ------------------------------------------------------------------ engine wrapper and runtime


def test_decode_graph_runs_segment_sparse_with_the_state_as_inputs(stm_model):
    model = spvos_from_stm(stm_model).eval()
    graph = engine_graphs(model)["decode"]
    inputs = example_inputs(model, H, W, 2, 3)["decode"]
    assert tuple(inputs) == graph.input_names
    assert [n for n in graph.input_names if n.startswith(STATE_IN)] == [STATE_IN + n for n in model.decoder_state_names()]
    assert [n for n in graph.output_names if n.startswith(DECISION)] == [DECISION + n for n in model.decoder_conv_names()]
    standard = [inputs[n] for n in graph.input_names[:8]]
    with torch.inference_mode():
        first = dict(zip(graph.output_names, graph(*inputs.values())))  # dense=True, zero state
        torch.testing.assert_close(first["logits"], model.segment(*standard), atol=1e-5, rtol=1e-5)
        assert all((first[DECISION + n] == DENSE).all() for n in model.decoder_conv_names())
        state = [first[STATE_OUT + n] for n in model.decoder_state_names()]
        standard[0] = standard[0] + 0.2  # another query key: another readout
        second = graph(*standard, torch.tensor([False]), torch.tensor([0.3]), *state)
        expected = model.segment_sparse(*standard, state, torch.tensor([0.3]))
    assert all(torch.equal(a, b) for a, b in zip(second, (expected.logits, *expected.state, *expected.decisions)))


def test_inference_core_carries_the_decoder_state_and_counts_its_decisions(stm_model):
    model = spvos_from_stm(stm_model, dense_every=4)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(7)]
    mask = np.zeros((H, W), np.uint8)
    mask[10:30, 10:40], mask[35:60, 50:90] = 3, 5
    core = InferenceCore(model, mem_every=5, budget=0.3)
    results = [core.step(f, mask if t == 0 else None) for t, f in enumerate(frames)]
    assert [r.kind for r in results] == ["first", "sparse", "sparse", "sparse", "refresh", "memory", "sparse"]
    decoder = set(model.decoder_conv_names())
    # frame 1 decodes dense (frame 0 decoded nothing); keyframes run no gate; the others gate both
    ran_gated = [bool(decoder & set(r.key_cost.layers)) for r in results]
    assert ran_gated == [False, False, True, True, False, False, True]
    specs = core.backend.input_specs("decode")
    for name in model.decoder_state_names():
        assert core.state[STATE_IN + name].shape == specs[STATE_IN + name].shape
        assert core.state[STATE_IN + name].shape[0] == 2  # one row per object
    summary = core.summary()["sparse"]
    assert decoder <= set(summary["gated_layer_shares"]) and 0 < summary["gated_share_of_dense"] < 1
    for r in results:
        if r.kind != "first":
            assert r.gflops.dense > r.key_cost.dense_gflops  # + the memory read (and a write)
