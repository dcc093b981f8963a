"""The PyTorch references of GatedSparseConv2d and MVWarp against hand-worked cases.

Every other implementation (CUDA kernels, TensorRT plugins, ONNX fallbacks) is checked
against these references, so here they are checked against arithmetic done by hand.
"""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F

from vseg.ops import attribute_defaults, resolve_attributes
from vseg.ops.reference import (
    COARSE,
    DENSE,
    REUSE,
    decision_grid_shape,
    gated_sparse_conv2d_reference,
    mv_warp_reference,
)


def _inputs(n=2, cin=4, cout=6, h=13, w=19, k=3, stride=1, padding=1, dilation=1, groups=1, tile=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cin, h, w, generator=g)
    weight = torch.randn(cout, cin // groups, k, k, generator=g)
    bias = torch.randn(cout, generator=g)
    ho = (h + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    wo = (w + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    y_prev = torch.randn(n, cout, ho, wo, generator=g)
    grid = decision_grid_shape(ho, wo, tile)
    return x, weight, bias, y_prev, grid


def _identity_conv(x: torch.Tensor, decision: torch.Tensor, tile: int, mode: str) -> torch.Tensor:
    """1x1 conv with weight 1 and no bias: the dense result is x itself, so fills are visible."""
    weight = torch.ones(1, 1, 1, 1)
    return gated_sparse_conv2d_reference(
        x, decision, torch.full_like(x, -99.0), weight, None, kernel=1, padding=0, tile=tile, coarse_mode=mode
    )


# ---------------------------------------------------------------- GatedSparseConv2d


@pytest.mark.parametrize(
    "cfg",
    [
        dict(),
        dict(stride=2, tile=4),
        dict(k=1, padding=0, tile=16),
        dict(groups=2, dilation=2, padding=2),
        dict(cin=6, cout=6, groups=6, stride=2, padding=0),
    ],
)
@pytest.mark.parametrize("activation", ["none", "relu"])
def test_all_dense_equals_conv_bias_activation(cfg, activation):
    x, weight, bias, y_prev, grid = _inputs(**cfg)
    conv_attrs = {k: cfg.get(k, v) for k, v in dict(stride=1, padding=1, dilation=1, groups=1).items()}
    decision = torch.full((x.shape[0], 1, *grid), DENSE, dtype=torch.int32)
    y = gated_sparse_conv2d_reference(
        x, decision, y_prev, weight, bias, kernel=weight.shape[-1], tile=cfg.get("tile", 8),
        activation=activation, **conv_attrs,
    )
    expected = F.conv2d(x, weight, bias, **conv_attrs)
    if activation == "relu":
        expected = torch.relu(expected)
    assert torch.equal(y, expected)


def test_all_reuse_equals_y_prev():
    x, weight, bias, y_prev, grid = _inputs(stride=2, tile=4)
    decision = torch.full((x.shape[0], 1, *grid), REUSE, dtype=torch.int32)
    y = gated_sparse_conv2d_reference(x, decision, y_prev, weight, bias, stride=2, tile=4, activation="relu")
    assert torch.equal(y, y_prev)


def test_coarse_nearest_on_a_hand_built_map():
    # x(i, j) = 10*i + j on a 5 x 6 map, tile 4: tiles cover rows 0-3 | 4 and cols 0-3 | 4-5.
    # nearest repeats the even sample: rows -> [0, 0, 2, 2, 4], cols -> [0, 0, 2, 2, 4, 4]
    x = (10 * torch.arange(5.0).view(5, 1) + torch.arange(6.0)).view(1, 1, 5, 6)
    decision = torch.full((1, 1, 2, 2), COARSE, dtype=torch.int32)
    expected = torch.tensor(
        [
            [0, 0, 2, 2, 4, 4],
            [0, 0, 2, 2, 4, 4],
            [20, 20, 22, 22, 24, 24],
            [20, 20, 22, 22, 24, 24],
            [40, 40, 42, 42, 44, 44],
        ],
        dtype=torch.float32,
    ).view(1, 1, 5, 6)
    assert torch.equal(_identity_conv(x, decision, 4, "nearest"), expected)


def test_coarse_bilinear_fill_rule():
    # Same map. Odd positions average their neighbours (exact for a linear map), but the
    # neighbour past a tile's last sample is clamped to it: col 3 of tile [0..3] -> sample 2,
    # col 5 of tile [4, 5] -> sample 4; row 3 -> row 2. rows -> [0, 1, 2, 2, 4],
    # cols -> [0, 1, 2, 2, 4, 4].
    x = (10 * torch.arange(5.0).view(5, 1) + torch.arange(6.0)).view(1, 1, 5, 6)
    decision = torch.full((1, 1, 2, 2), COARSE, dtype=torch.int32)
    rows = torch.tensor([0.0, 1, 2, 2, 4])
    cols = torch.tensor([0.0, 1, 2, 2, 4, 4])
    expected = (10 * rows.view(5, 1) + cols).view(1, 1, 5, 6)
    assert torch.equal(_identity_conv(x, decision, 4, "bilinear"), expected)


def test_coarse_bilinear_odd_odd_averages_four_samples_rows_first():
    x = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    decision = torch.full((1, 1, 1, 1), COARSE, dtype=torch.int32)
    y = _identity_conv(x, decision, 8, "bilinear")[0, 0]
    s = x[0, 0]
    left = 0.5 * (s[2, 4] + s[4, 4])
    right = 0.5 * (s[2, 6] + s[4, 6])
    assert y[3, 5] == 0.5 * (left + right)
    assert y[2, 4] == s[2, 4]  # samples stay exact
    assert y[7, 7] == s[6, 6]  # past the last sample in both axes


def test_coarse_tiles_use_only_their_own_samples():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 1, 12, 12, generator=g)
    decision = torch.tensor([[[[COARSE, DENSE, DENSE], [DENSE, DENSE, DENSE], [DENSE, DENSE, DENSE]]]], dtype=torch.int32)
    before = _identity_conv(x, decision, 4, "bilinear")
    changed = x.clone()
    changed[..., 4:, :] += 100.0  # everything outside the COARSE tile [0:4, 0:4]
    changed[..., :, 4:] += 100.0
    after = _identity_conv(changed, decision, 4, "bilinear")
    assert torch.equal(before[..., :4, :4], after[..., :4, :4])


def test_mixed_decisions_pick_per_tile():
    x, weight, bias, y_prev, grid = _inputs(n=1, h=16, w=24, tile=8)
    decision = torch.tensor([[[[REUSE, COARSE, DENSE], [DENSE, REUSE, COARSE]]]], dtype=torch.int32)
    assert tuple(decision.shape[2:]) == grid
    kw = dict(tile=8, coarse_mode="bilinear", activation="relu")
    y = gated_sparse_conv2d_reference(x, decision, y_prev, weight, bias, **kw)
    dense = gated_sparse_conv2d_reference(x, torch.full_like(decision, DENSE), y_prev, weight, bias, **kw)
    coarse = gated_sparse_conv2d_reference(x, torch.full_like(decision, COARSE), y_prev, weight, bias, **kw)
    sources = {REUSE: y_prev, COARSE: coarse, DENSE: dense}
    for ty in range(2):
        for tx in range(3):
            rows, cols = slice(8 * ty, 8 * ty + 8), slice(8 * tx, 8 * tx + 8)
            source = sources[int(decision[0, 0, ty, tx])]
            assert torch.equal(y[..., rows, cols], source[..., rows, cols])


def test_reference_rejects_mismatched_shapes():
    x, weight, bias, y_prev, grid = _inputs()
    decision = torch.zeros(x.shape[0], 1, grid[0] + 1, grid[1], dtype=torch.int32)
    with pytest.raises(ValueError, match="decision"):
        gated_sparse_conv2d_reference(x, decision, y_prev, weight, bias)
    with pytest.raises(ValueError, match="tile"):
        gated_sparse_conv2d_reference(x, decision, y_prev, weight, bias, tile=6)


# ---------------------------------------------------------------- MVWarp


def _ramp(n=1, c=2, h=8, w=8):
    return torch.arange(n * c * h * w, dtype=torch.float32).view(n, c, h, w)


def _uniform_mv(dx: float, dy: float, n=1, hm=2, wm=2) -> torch.Tensor:
    mv = torch.zeros(n, 2, hm, wm)
    mv[:, 0], mv[:, 1] = dx, dy
    return mv


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_zero_field_is_identity(mode, padding):
    feat = torch.randn(2, 3, 7, 9)
    assert torch.equal(mv_warp_reference(feat, torch.zeros(2, 2, 3, 5), mode=mode, padding=padding), feat)


def test_integer_shift_moves_the_map_with_zeros_or_border():
    # feature = frame size (8 = 2 blocks of 4): 1 frame pixel = 1 feature pixel
    feat = _ramp()
    mv = _uniform_mv(dx=2.0, dy=-1.0)  # content comes from 2 to the right, 1 above
    zeros = mv_warp_reference(feat, mv, padding="zeros")
    border = mv_warp_reference(feat, mv, padding="border")
    assert torch.equal(zeros[..., 1:, :6], feat[..., :7, 2:])
    assert torch.equal(zeros[..., 0, :], torch.zeros_like(zeros[..., 0, :]))  # from row -1
    assert torch.equal(zeros[..., :, 6:], torch.zeros_like(zeros[..., :, 6:]))  # from cols 8, 9
    assert torch.equal(border[..., 1:, :6], feat[..., :7, 2:])
    assert torch.equal(border[..., 0, :6], feat[..., 0, 2:])  # row clamped to 0
    assert torch.equal(border[..., 1:, 6], feat[..., :7, 7])  # cols clamped to 7
    assert torch.equal(border[..., 1:, 7], feat[..., :7, 7])


@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_nearest_and_bilinear_agree_on_integer_shifts(padding):
    feat = torch.randn(1, 3, 8, 12)
    mv = torch.randint(-5, 6, (1, 2, 2, 3)).float()
    nearest = mv_warp_reference(feat, mv, mode="nearest", padding=padding)
    bilinear = mv_warp_reference(feat, mv, mode="bilinear", padding=padding)
    assert torch.equal(nearest, bilinear)


def test_vectors_are_scaled_to_feature_pixels_per_block():
    # frame 16 x 16 (2 x 2 blocks of 8), features 8 x 8: 2 frame pixels = 1 feature pixel.
    # Left blocks move by 4 frame px (2 feature px), right blocks stay still.
    feat = _ramp(h=8, w=8)
    mv = torch.zeros(1, 2, 2, 2)
    mv[0, 0, :, 0] = 4.0
    out = mv_warp_reference(feat, mv, block=8)
    assert torch.equal(out[..., :, :4], feat[..., :, 2:6])  # feature cols 0-3 lie in block column 0
    assert torch.equal(out[..., :, 4:], feat[..., :, 4:])


def test_half_pixel_shift_bilinear_and_nearest_rounding():
    feat = _ramp(c=1, h=8, w=8)
    right = _uniform_mv(dx=0.5, dy=0.0)
    left = _uniform_mv(dx=-0.5, dy=0.0)
    bilinear = mv_warp_reference(feat, right, mode="bilinear", padding="zeros")
    assert torch.equal(bilinear[..., :7], 0.5 * (feat[..., :7] + feat[..., 1:]))
    assert torch.equal(bilinear[..., 7], 0.5 * feat[..., 7])  # the tap past the edge reads 0
    # nearest is floor(s + 0.5): +0.5 rounds up to the right neighbour, -0.5 to the pixel itself
    assert torch.equal(mv_warp_reference(feat, right, mode="nearest")[..., :7], feat[..., 1:])
    assert torch.equal(mv_warp_reference(feat, left, mode="nearest"), feat)


# ---------------------------------------------------------------- one schema


def test_reference_defaults_are_the_schema_defaults():
    for fn, op in ((gated_sparse_conv2d_reference, "GatedSparseConv2d"), (mv_warp_reference, "MVWarp")):
        params = inspect.signature(fn).parameters
        for name, default in attribute_defaults(op).items():
            assert params[name].default == default, (op, name)


def test_resolve_attributes_checks_names_types_and_values():
    assert resolve_attributes("MVWarp", mode="nearest") == {"mode": "nearest", "padding": "zeros", "block": 4}
    for bad in (dict(tile=6), dict(groups=0), dict(kernel=True), dict(coarse_mode="cubic"), dict(strides=2)):
        with pytest.raises(ValueError):
            resolve_attributes("GatedSparseConv2d", **bad)
