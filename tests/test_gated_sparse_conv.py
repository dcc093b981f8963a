"""GatedSparseConv2d in PyTorch: the tile-sparse path, the masked-dense path and the custom op
against the reference (vseg.ops.reference), exact corner cases, gradients, torch.export."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from vseg.ops.gated_sparse_conv import (
    coarse_fill,
    decision_to_gate,
    gated_sparse_conv2d,
    masked_dense_gated_conv2d,
    tile_sparse_gated_conv2d,
)
from vseg.ops.reference import (
    COARSE,
    DENSE,
    REUSE,
    conv_output_size,
    decision_grid_shape,
    gated_sparse_conv2d_reference,
)

TOL = {"atol": 1e-5, "rtol": 1e-5}


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same global RNG state (fresh gates, random tensors)."""
    torch.manual_seed(0)


def make_case(n=2, cin=5, cout=6, h=29, w=37, kernel=3, stride=1, padding=1, dilation=1, groups=1, tile=8, seed=0,
              decision=None):
    """Random operands; decision: None (random 0/1/2) or a value for every tile."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cin, h, w, generator=g)
    weight = torch.randn(cout, cin // groups, kernel, kernel, generator=g)
    bias = torch.randn(cout, generator=g)
    out_h = conv_output_size(h, kernel, stride, padding, dilation)
    out_w = conv_output_size(w, kernel, stride, padding, dilation)
    y_prev = torch.randn(n, cout, out_h, out_w, generator=g)
    grid = decision_grid_shape(out_h, out_w, tile)
    if decision is None:
        d = torch.randint(0, 3, (n, 1, *grid), generator=g, dtype=torch.int32)
    else:
        d = torch.full((n, 1, *grid), decision, dtype=torch.int32)
    return x, d, y_prev, weight, bias


def all_paths(x, d, y_prev, weight, bias, **attrs):
    """{name: output} of the reference, the tile-sparse path, the masked-dense path, the op."""
    return {
        "reference": gated_sparse_conv2d_reference(x, d, y_prev, weight, bias, **attrs),
        "tile_sparse": tile_sparse_gated_conv2d(x, d, y_prev, weight, bias, **attrs),
        "masked_dense": masked_dense_gated_conv2d(x, decision_to_gate(d), y_prev, weight, bias, **attrs),
        "op": gated_sparse_conv2d(x, d, y_prev, weight, bias, **attrs),
    }


@pytest.mark.parametrize("tile,stride,padding", list(itertools.product([4, 8, 16], [1, 2], [0, 1])))
def test_every_path_matches_the_reference(tile, stride, padding):
    # Odd sizes: the last tile row and column are cut by the map's edge.
    x, d, y_prev, weight, bias = make_case(h=37, w=45, stride=stride, padding=padding, tile=tile, seed=tile + stride)
    for coarse_mode, activation in itertools.product(["nearest", "bilinear"], ["none", "relu"]):
        attrs = {"stride": stride, "padding": padding, "tile": tile, "coarse_mode": coarse_mode, "activation": activation}
        outputs = all_paths(x, d, y_prev, weight, bias, **attrs)
        for name, y in outputs.items():
            torch.testing.assert_close(y, outputs["reference"], **TOL, msg=f"{name} {attrs}")


def test_stacks_padded_to_a_bucket_size_give_the_same_result():
    # 16 x 16 = 256 tiles; 37 DENSE tiles run as a stack of 40 and 21 COARSE as one of 22 (the
    # extra tiles repeat the last one and their results are dropped)
    x, d, y_prev, weight, bias = make_case(n=1, h=64, w=64, tile=4, decision=REUSE)
    chosen = torch.randperm(256, generator=torch.Generator().manual_seed(0))[:58]
    d.view(-1)[chosen] = torch.tensor([DENSE] * 37 + [COARSE] * 21, dtype=torch.int32)
    attrs = {"tile": 4, "coarse_mode": "bilinear", "activation": "relu"}
    torch.testing.assert_close(tile_sparse_gated_conv2d(x, d, y_prev, weight, bias, **attrs),
                               gated_sparse_conv2d_reference(x, d, y_prev, weight, bias, **attrs), **TOL)


@pytest.mark.parametrize("attrs", [
    {"kernel": 1, "padding": 0, "tile": 8},
    {"groups": 5, "cout": 5, "tile": 4},  # depthwise
    {"dilation": 2, "padding": 2, "tile": 8},
    {"kernel": 5, "padding": 2, "stride": 2, "tile": 4},
])
def test_other_convolution_shapes(attrs):
    shape_keys = ("cout",)
    case = {k: v for k, v in attrs.items()}
    x, d, y_prev, weight, bias = make_case(**case)
    op_attrs = {k: v for k, v in attrs.items() if k not in shape_keys}
    outputs = all_paths(x, d, y_prev, weight, bias, coarse_mode="bilinear", activation="relu", **op_attrs)
    for name, y in outputs.items():
        torch.testing.assert_close(y, outputs["reference"], **TOL, msg=name)


@pytest.mark.parametrize("stride", [1, 2])
def test_all_dense_reproduces_the_plain_convolution_exactly(stride):
    x, d, y_prev, weight, bias = make_case(stride=stride, decision=DENSE)
    expected = F.conv2d(x, weight, bias, stride=stride, padding=1)
    assert torch.equal(tile_sparse_gated_conv2d(x, d, y_prev, weight, bias, stride=stride), expected)
    assert torch.equal(gated_sparse_conv2d(x, d, y_prev, weight, bias, stride=stride), expected)
    assert torch.equal(masked_dense_gated_conv2d(x, decision_to_gate(d), y_prev, weight, bias, stride=stride), expected)


def test_all_reuse_returns_y_prev():
    x, d, y_prev, weight, bias = make_case(stride=2, tile=4, decision=REUSE)
    for name, y in all_paths(x, d, y_prev, weight, bias, stride=2, tile=4, activation="relu").items():
        assert torch.equal(y, y_prev), name


@pytest.mark.parametrize("stride,tile", [(1, 4), (2, 8), (1, 16)])
def test_mostly_dense_maps_take_the_dense_then_patch_route(stride, tile):
    # > 65 % of the dense work: one dense convolution, then REUSE and COARSE tiles patched in
    x, _, y_prev, weight, bias = make_case(h=37, w=45, stride=stride, tile=tile)
    grid = decision_grid_shape(y_prev.shape[2], y_prev.shape[3], tile)
    g = torch.Generator().manual_seed(tile)
    d = torch.multinomial(torch.tensor([0.1, 0.1, 0.8]), 2 * grid[0] * grid[1], replacement=True, generator=g)
    d = d.to(torch.int32).view(2, 1, *grid)
    d[0, 0, -1, -1], d[1, 0, -1, 0] = COARSE, REUSE  # partial tiles at the edges too
    for coarse_mode in ("nearest", "bilinear"):
        attrs = {"stride": stride, "tile": tile, "coarse_mode": coarse_mode, "activation": "relu"}
        torch.testing.assert_close(tile_sparse_gated_conv2d(x, d, y_prev, weight, bias, **attrs),
                                   gated_sparse_conv2d_reference(x, d, y_prev, weight, bias, **attrs), **TOL)


def test_values_other_than_reuse_and_coarse_mean_dense():
    x, d, y_prev, weight, bias = make_case(n=1, h=16, w=16, tile=8)
    d[0, 0] = torch.tensor([[REUSE, 7], [-1, COARSE]], dtype=torch.int32)
    for name, y in all_paths(x, d, y_prev, weight, bias).items():
        torch.testing.assert_close(y, gated_sparse_conv2d_reference(x, d, y_prev, weight, bias), **TOL, msg=name)


def test_coarse_fill_on_a_hand_built_map():
    # samples at even positions of a 5 x 6 map with tile 4 (tiles: rows 0-3 | 4, cols 0-3 | 4-5)
    full = 10 * torch.arange(5.0).view(5, 1) + torch.arange(6.0)
    samples = full[::2, ::2].reshape(1, 1, 3, 3)
    nearest = coarse_fill(samples, 5, 6, 4, "nearest")[0, 0]
    assert torch.equal(nearest[:, 3], torch.tensor([2.0, 2, 22, 22, 42]))
    # bilinear: col 3 is the last of its tile -> repeats col 2; row 3 likewise; row 1 averages
    bilinear = coarse_fill(samples, 5, 6, 4, "bilinear")[0, 0]
    expected = 10 * torch.tensor([0.0, 1, 2, 2, 4]).view(5, 1) + torch.tensor([0.0, 1, 2, 2, 4, 4])
    assert torch.equal(bilinear, expected)


def test_tiles_outside_coarse_and_dense_do_not_read_their_neighbours():
    # Changing x far from the only DENSE tile must leave that tile's output unchanged.
    x, d, y_prev, weight, bias = make_case(n=1, h=32, w=32, tile=8, decision=REUSE)
    d[0, 0, 1, 1] = DENSE
    d[0, 0, 2, 2] = COARSE
    before = tile_sparse_gated_conv2d(x, d, y_prev, weight, bias)
    changed = x.clone()
    changed[..., :7, :] += 50.0  # rows 0-6 are outside the halo of the tiles at rows 8-23
    after = tile_sparse_gated_conv2d(changed, d, y_prev, weight, bias)
    assert torch.equal(before, after)


def test_channels_last_input_and_output():
    x, d, y_prev, weight, bias = make_case()
    y = tile_sparse_gated_conv2d(x.contiguous(memory_format=torch.channels_last), d, y_prev, weight, bias)
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, gated_sparse_conv2d_reference(x, d, y_prev, weight, bias), **TOL)


@settings(max_examples=25, deadline=None)
@given(h=st.integers(3, 40), w=st.integers(3, 40), tile=st.sampled_from([4, 8, 16]), stride=st.sampled_from([1, 2]),
       padding=st.sampled_from([0, 1]), mode=st.sampled_from(["nearest", "bilinear"]), seed=st.integers(0, 1000))
def test_tile_sparse_matches_reference_on_random_shapes(h, w, tile, stride, padding, mode, seed):
    x, d, y_prev, weight, bias = make_case(n=1, cin=3, cout=4, h=h, w=w, stride=stride, padding=padding, tile=tile,
                                           seed=seed)
    attrs = {"stride": stride, "padding": padding, "tile": tile, "coarse_mode": mode}
    torch.testing.assert_close(tile_sparse_gated_conv2d(x, d, y_prev, weight, bias, **attrs),
                               gated_sparse_conv2d_reference(x, d, y_prev, weight, bias, **attrs), **TOL)


# ------------------------------------------------------------------ gradients


def test_masked_dense_gradients_reach_weights_inputs_and_gate():
    x, _, y_prev, weight, bias = make_case(n=1, h=16, w=16, tile=4)
    leaves = [t.clone().requires_grad_(True) for t in (x, y_prev, weight, bias)]
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    soft = torch.softmax(logits, 1)
    gate = decision_to_gate(soft.argmax(1, keepdim=True)) + soft - soft.detach()  # straight-through
    y = masked_dense_gated_conv2d(leaves[0], gate, leaves[1], leaves[2], leaves[3], tile=4, coarse_mode="bilinear")
    y.square().sum().backward()
    for t in (*leaves, logits):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_gate_weight_gradient_is_each_choice_output():
    # d(sum y)/d(gate weight of choice c on a tile) = sum of choice c's output over the tile
    x, d, y_prev, weight, bias = make_case(n=1, h=8, w=8, tile=4)
    gate = decision_to_gate(d).requires_grad_(True)
    y = masked_dense_gated_conv2d(x, gate, y_prev, weight, bias, tile=4)
    y.sum().backward()
    dense = F.conv2d(x, weight, bias, padding=1)
    assert torch.allclose(gate.grad[0, DENSE, 0, 1], dense[0, :, 0:4, 4:8].sum(), rtol=1e-5)
    assert torch.allclose(gate.grad[0, REUSE, 1, 0], y_prev[0, :, 4:8, 0:4].sum(), rtol=1e-5)


def test_op_backward_matches_finite_differences():
    x, d, y_prev, weight, bias = make_case(n=1, cin=2, cout=2, h=7, w=9, tile=4)
    inputs = [t.double().requires_grad_(True) for t in (x, y_prev, weight, bias)]
    assert torch.autograd.gradcheck(
        lambda a, b, c, e: gated_sparse_conv2d(a, d, b, c, e, tile=4, coarse_mode="bilinear", activation="none"),
        inputs, fast_mode=True)


# ------------------------------------------------------------------ the custom op


def test_opcheck_schema_fake_and_autograd_registration():
    x, d, y_prev, weight, bias = make_case(n=1, h=13, w=19, tile=4)
    args = (x, d, y_prev, weight, bias, 3, 1, 1, 1, 1, 4, "bilinear", "relu")
    result = torch.library.opcheck(torch.ops.vseg.gated_sparse_conv2d.default, args)
    assert set(result.values()) == {"SUCCESS"}


def test_op_exports_as_one_node_with_static_shapes():
    x, d, y_prev, weight, bias = make_case(n=1, h=16, w=24, tile=8)

    class Layer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(weight.clone())
            self.bias = torch.nn.Parameter(bias.clone())

        def forward(self, x, decision, y_prev):
            return gated_sparse_conv2d(x, decision, y_prev, self.weight, self.bias, activation="relu")

    exported = torch.export.export(Layer(), (x, d, y_prev))
    targets = [node.target for node in exported.graph.nodes if node.op == "call_function"]
    assert torch.ops.vseg.gated_sparse_conv2d.default in targets
    assert not any("convolution" in str(t) for t in targets)  # not decomposed
    torch.testing.assert_close(exported.module()(x, d, y_prev),
                               gated_sparse_conv2d_reference(x, d, y_prev, weight, bias, activation="relu"), **TOL)


def test_shape_mistakes_are_reported():
    x, d, y_prev, weight, bias = make_case()
    with pytest.raises(ValueError, match="decision"):
        tile_sparse_gated_conv2d(x, d[:, :, :-1], y_prev, weight, bias)
    with pytest.raises(ValueError, match="y_prev"):
        tile_sparse_gated_conv2d(x, d, y_prev[:, :-1], weight, bias)
    with pytest.raises(ValueError, match="tile"):
        gated_sparse_conv2d(x, d, y_prev, weight, bias, tile=6)
