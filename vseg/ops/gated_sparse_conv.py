"""GatedSparseConv2d in PyTorch: the ``vseg::gated_sparse_conv2d`` custom op and its two paths.

Semantics are those of :func:`vseg.ops.reference.gated_sparse_conv2d_reference` (per output
tile: 0 REUSE copies y_prev, 1 COARSE computes the tile-local even outputs and fills the rest,
2 DENSE computes every output). Attribute names, defaults and allowed values come from
``schema.json`` through :func:`vseg.ops.resolve_attributes`.

- :func:`tile_sparse_gated_conv2d` (inference): compacts the COARSE and DENSE tile lists,
  gathers each active tile's input footprint (halo included) into one stack, runs ONE
  ``F.conv2d`` per stack (DENSE at the layer's stride, COARSE at twice it, so only the even
  outputs are computed), scatters the results into a copy of y_prev. Maps are handled as
  channels-last (NHWC) pixel rows: a gather is one ``index_select`` of input pixel rows, a
  scatter one ``index_copy_`` of output pixel rows, so skipped tiles are skipped work and
  there is no Python loop over tiles. Stack sizes are rounded up to a few buckets so oneDNN
  reuses its compiled convolutions from frame to frame (:func:`_bucket_size`).
- :func:`masked_dense_gated_conv2d` (training): the dense convolution everywhere, blended per
  tile by soft gate weights [N, 3, th, tw] (REUSE, COARSE, DENSE). Differentiable w.r.t. x,
  y_prev, weight, bias and the gate weights; with one-hot weights it equals the hard op.
- ``torch.ops.vseg.gated_sparse_conv2d`` (:func:`gated_sparse_conv2d`): the custom op. Its
  kernel is the tile-sparse path; its fake (meta) kernel gives torch.export / the dynamo ONNX
  exporter the output shape, so the op stays one node (``vseg::GatedSparseConv2d``); its
  backward is the masked-dense path's, so the op is also differentiable.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from vseg.ops import resolve_attributes
from vseg.ops.reference import (
    COARSE,
    DENSE,
    REUSE,
    conv_output_size,
    decision_grid_shape,
)

OP_NAME = "vseg::gated_sparse_conv2d"


def _check_shapes(x: torch.Tensor, decision_or_gate: torch.Tensor, y_prev: torch.Tensor, weight: torch.Tensor,
                  decision_channels: int, attrs: dict) -> tuple[int, int, int, int]:
    """Validate the operand shapes against the attributes; returns (Ho, Wo, th, tw)."""
    n, cin, h, w = x.shape
    k, groups = attrs["kernel"], attrs["groups"]
    if tuple(weight.shape[1:]) != (cin // groups, k, k) or cin % groups or weight.shape[0] % groups:
        raise ValueError(f"weight {tuple(weight.shape)} does not fit x {tuple(x.shape)} with kernel={k}, groups={groups}")
    out_h = conv_output_size(h, k, attrs["stride"], attrs["padding"], attrs["dilation"])
    out_w = conv_output_size(w, k, attrs["stride"], attrs["padding"], attrs["dilation"])
    grid_h, grid_w = decision_grid_shape(out_h, out_w, attrs["tile"])
    if tuple(decision_or_gate.shape) != (n, decision_channels, grid_h, grid_w):
        raise ValueError(f"decision/gate {tuple(decision_or_gate.shape)} should be {(n, decision_channels, grid_h, grid_w)}")
    if tuple(y_prev.shape) != (n, weight.shape[0], out_h, out_w):
        raise ValueError(f"y_prev {tuple(y_prev.shape)} should be {(n, weight.shape[0], out_h, out_w)}")
    return out_h, out_w, grid_h, grid_w


# ------------------------------------------------------------------ COARSE fill


def _fill_axis(samples: torch.Tensor, dim: int, last: torch.Tensor, bilinear: bool) -> torch.Tensor:
    """Upsample ``samples`` x2 along ``dim`` (output 2a = sample a, output 2a+1 = the fill).

    ``last`` (bool, broadcastable to samples) marks samples with no right-hand neighbour in
    their tile (the tile's last sample, or the last one inside the map): odd outputs after
    them repeat them. nearest repeats every sample; bilinear averages a sample and the next.
    """
    if bilinear:
        nxt = torch.cat([samples.narrow(dim, 1, samples.shape[dim] - 1), samples.narrow(dim, -1, 1)], dim)
        odd = 0.5 * (samples + torch.where(last, samples, nxt))
        # 0.5 * (v + v) == v, so even outputs computed the same way would be exact too; taking
        # the samples as they are keeps the pair stacking simple.
        pair = torch.stack([samples, odd], dim + 1)
    else:
        pair = samples.unsqueeze(dim + 1).expand(*samples.shape[:dim + 1], 2, *samples.shape[dim + 1:])
    shape = list(samples.shape)
    shape[dim] *= 2
    return pair.reshape(shape)


def _last_sample_mask(num_samples: int, tile: int, valid_length: torch.Tensor | int,
                      start: torch.Tensor | int, device: torch.device) -> torch.Tensor:
    """bool [..., num_samples]: sample a (at output start + 2a) is the last of its tile inside the map.

    valid_length / start: the map length and each row's first output position (ints, or int64
    tensors of shape [M, 1] for a stack of tiles).
    """
    pos = start + 2 * torch.arange(num_samples, device=device)
    tile_end = (pos // tile + 1) * tile
    return (pos + 2 >= tile_end) | (pos + 2 >= valid_length)


def coarse_fill(samples: torch.Tensor, out_h: int, out_w: int, tile: int, coarse_mode: str) -> torch.Tensor:
    """Fill a whole map from its even samples, tile by tile (the masked-dense path).

    samples [N, C, ceil(Ho/2), ceil(Wo/2)] = the outputs at even positions (tile sizes are
    even, so tile-local even = global even) -> [N, C, Ho, Wo].
    """
    bilinear = coarse_mode == "bilinear"
    dev = samples.device
    last_row = _last_sample_mask(samples.shape[2], tile, out_h, 0, dev).view(-1, 1)
    last_col = _last_sample_mask(samples.shape[3], tile, out_w, 0, dev)
    rows = _fill_axis(samples, 2, last_row, bilinear)[:, :, :out_h]
    return _fill_axis(rows, 3, last_col, bilinear)[:, :, :, :out_w]


def _apply_activation(y: torch.Tensor, activation: str) -> torch.Tensor:
    return torch.relu(y) if activation == "relu" else y


# ------------------------------------------------------------------ masked-dense (training)


def masked_dense_gated_conv2d(x: torch.Tensor, gate: torch.Tensor, y_prev: torch.Tensor, weight: torch.Tensor,
                              bias: torch.Tensor | None, **attributes: int | str) -> torch.Tensor:
    """GatedSparseConv2d with soft per-tile choice weights, computed densely (for training).

    x [N, Cin, H, W]; gate [N, 3, th, tw] float weights of (REUSE, COARSE, DENSE) per tile, e.g.
    a Gumbel-softmax straight-through sample; y_prev [N, Cout, Ho, Wo]; weight [Cout, Cin/groups,
    k, k]; bias [Cout] or None. Returns y [N, Cout, Ho, Wo] = w_reuse * y_prev + w_coarse *
    coarse + w_dense * dense per tile. Gradients reach x, y_prev, weight, bias and gate.
    """
    a = resolve_attributes("GatedSparseConv2d", **attributes)
    out_h, out_w, _, _ = _check_shapes(x, gate, y_prev, weight, 3, a)
    dense = F.conv2d(x, weight, bias, stride=a["stride"], padding=a["padding"], dilation=a["dilation"],
                     groups=a["groups"])
    dense = _apply_activation(dense, a["activation"])
    coarse = coarse_fill(dense[:, :, ::2, ::2], out_h, out_w, a["tile"], a["coarse_mode"])
    tile = a["tile"]
    per_pixel = gate.to(dense.dtype).repeat_interleave(tile, 2).repeat_interleave(tile, 3)[:, :, :out_h, :out_w]
    return (per_pixel[:, REUSE:REUSE + 1] * y_prev.to(dense.dtype) + per_pixel[:, COARSE:COARSE + 1] * coarse
            + per_pixel[:, DENSE:DENSE + 1] * dense)


def decision_to_gate(decision: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Hard decisions int [N, 1, th, tw] (0/1/2; other values count as DENSE, as in the
    reference) -> one-hot gate weights [N, 3, th, tw]."""
    choice = decision.long().clamp(REUSE, DENSE)
    choice = torch.where(choice == decision.long(), choice, torch.full_like(choice, DENSE))
    return (choice == torch.arange(3, device=decision.device).view(1, 3, 1, 1)).to(dtype)


# ------------------------------------------------------------------ tile-sparse (inference)


# The per-geometry index tables below are cached across calls, so they are built as normal
# tensors even when the first call runs under torch.inference_mode.


@lru_cache(maxsize=128)
@torch.inference_mode(False)
def _footprint_table(height: int, width: int, grid_h: int, grid_w: int, step: int, pad: int, span: int,
                     device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per tile of the grid, which input pixels its footprint reads (computed once per layer
    geometry): (rows int64 [th*tw, span*span], the flat pixel index within one image, clamped
    into it; outside bool [th*tw, span*span], True where the footprint lies in the zero padding).
    Tile (i, j) reads the span x span pixels starting at (i*step - pad, j*step - pad)."""
    q = torch.arange(span, device=device)
    r = (torch.arange(grid_h, device=device) * step - pad).unsqueeze(1) + q  # [th, span]
    c = (torch.arange(grid_w, device=device) * step - pad).unsqueeze(1) + q  # [tw, span]
    rows = r.clamp(0, height - 1).view(grid_h, 1, span, 1) * width + c.clamp(0, width - 1).view(1, grid_w, 1, span)
    inside = ((r >= 0) & (r < height)).view(grid_h, 1, span, 1) & ((c >= 0) & (c < width)).view(1, grid_w, 1, span)
    return rows.reshape(grid_h * grid_w, span * span), (~inside).reshape(grid_h * grid_w, span * span)


@lru_cache(maxsize=128)
@torch.inference_mode(False)
def _output_table(out_h: int, out_w: int, tile: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per tile, its output pixels (computed once per layer geometry): (rows int64 [th*tw,
    tile*tile], flat pixel index within one image; outside bool [th*tw, tile*tile], True for
    positions past the map's edge in partial tiles)."""
    grid_h, grid_w = decision_grid_shape(out_h, out_w, tile)
    q = torch.arange(tile, device=device)
    r = (torch.arange(grid_h, device=device) * tile).unsqueeze(1) + q
    c = (torch.arange(grid_w, device=device) * tile).unsqueeze(1) + q
    rows = r.view(grid_h, 1, tile, 1) * out_w + c.view(1, grid_w, 1, tile)
    outside = (r >= out_h).view(grid_h, 1, tile, 1) | (c >= out_w).view(1, grid_w, 1, tile)
    return rows.reshape(grid_h * grid_w, tile * tile), outside.reshape(grid_h * grid_w, tile * tile)


def _bucket_size(count: int) -> int:
    """The stack size ``count`` active tiles are padded to: a multiple of 2**(floor(log2(count)) - 3).

    oneDNN builds (JIT-compiles) a convolution primitive per input shape and caches it. The
    number of active tiles changes every frame, so unpadded stacks would keep missing that
    cache and pay the build (about half the convolution's time here). Eight sizes per octave
    bound the extra work to < 12.5 % of the active tiles and keep the shapes a layer uses at
    a steady budget to a handful.
    """
    step = 1 << max(count.bit_length() - 4, 0)
    return -(-count // step) * step


def _run_stack(footprints: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int,
               a: dict) -> torch.Tensor:
    """Gathered tiles [M, span, span, Cin] (NHWC) -> conv + bias + activation, [M, t, t, Cout] (NHWC)."""
    stack = footprints.permute(0, 3, 1, 2)  # NCHW shape, channels-last memory: what oneDNN likes
    y = F.conv2d(stack, weight, bias, stride=stride, dilation=a["dilation"], groups=a["groups"])
    if a["activation"] == "relu":
        y = torch.relu_(y)
    return y.permute(0, 2, 3, 1)


# Above this share of the dense FLOPs, one dense convolution patched with the REUSE and COARSE
# tiles is faster than the tile stacks, whose gathers, scatters and smaller convolutions then
# cost more than the skipped work saves (measured on the project's 2-core CPU).
DENSE_FALLBACK_SHARE = 0.65


def _dense_then_patch(x: torch.Tensor, flat: torch.Tensor, y_prev: torch.Tensor, weight: torch.Tensor,
                      bias: torch.Tensor | None, a: dict, out_h: int, out_w: int) -> torch.Tensor:
    """Mostly-active decisions flat [N, th, tw]: the dense convolution everywhere, then REUSE
    tiles copied from y_prev and COARSE tiles refilled from their own even outputs. Returns
    y [N, Cout, Ho, Wo] in channels-last memory format."""
    tile, cout = a["tile"], weight.shape[0]
    y = F.conv2d(x, weight, bias, stride=a["stride"], padding=a["padding"], dilation=a["dilation"],
                 groups=a["groups"])
    y = (torch.relu_(y) if a["activation"] == "relu" else y).contiguous(memory_format=torch.channels_last)
    y_rows = y.permute(0, 2, 3, 1).view(-1, cout)  # pixel rows of y itself: patches land in y
    table, outside = _output_table(out_h, out_w, tile, x.device)
    for choice in (REUSE, COARSE):
        n_idx, i_idx, j_idx = (flat == choice).nonzero().unbind(1)
        if not n_idx.numel():
            continue
        tile_ids = i_idx * flat.shape[2] + j_idx
        rows = table.index_select(0, tile_ids) + (n_idx * (out_h * out_w)).unsqueeze(1)  # [M, t*t]
        inside = ~outside.index_select(0, tile_ids)
        if choice == REUSE:
            rows = rows[inside]
            y_rows.index_copy_(0, rows, y_prev.permute(0, 2, 3, 1).reshape(-1, cout).index_select(0, rows))
            continue
        half = tile // 2
        # Samples past the map's edge only ever fill positions past it: any valid row will do.
        samples = rows.view(-1, half, 2, half, 2)[:, :, 0, :, 0].reshape(-1).clamp(max=y_rows.shape[0] - 1)
        samples = y_rows.index_select(0, samples).view(-1, half, half, cout)
        if a["coarse_mode"] == "bilinear":
            filled = _fill_tiles(samples, i_idx, j_idx, tile, out_h, out_w)
        else:
            filled = samples.view(-1, half, 1, half, 1, cout).expand(-1, half, 2, half, 2, cout)
        y_rows.index_put_((rows[inside],), filled.reshape(-1, tile * tile, cout)[inside])
    return y


def tile_sparse_gated_conv2d(x: torch.Tensor, decision: torch.Tensor, y_prev: torch.Tensor, weight: torch.Tensor,
                             bias: torch.Tensor | None, **attributes: int | str) -> torch.Tensor:
    """GatedSparseConv2d computing only the COARSE and DENSE tiles (the inference path).

    Shapes as :func:`vseg.ops.reference.gated_sparse_conv2d_reference`: x [N, Cin, H, W],
    decision int [N, 1, th, tw], y_prev [N, Cout, Ho, Wo] -> y [N, Cout, Ho, Wo] in x's dtype,
    returned in channels-last memory format (the layout the gathers and scatters use; an x in
    channels-last is read in place, any other layout costs one transposing copy).
    """
    a = resolve_attributes("GatedSparseConv2d", **attributes)
    out_h, out_w, grid_h, grid_w = _check_shapes(x, decision, y_prev, weight, 1, a)
    n, cin, h, w = x.shape
    cout = weight.shape[0]
    tile, stride, pad = a["tile"], a["stride"], a["padding"]
    reach = a["dilation"] * (a["kernel"] - 1) + 1  # input extent of one output
    step = tile * stride  # input distance between neighbouring tiles
    spans = {DENSE: (tile - 1) * stride + reach, COARSE: (tile // 2 - 1) * 2 * stride + reach}
    flat = decision.reshape(n, grid_h, grid_w)
    # as in the reference, any value other than REUSE and COARSE means DENSE
    active = {DENSE: ((flat != REUSE) & (flat != COARSE)).nonzero().unbind(1),
              COARSE: (flat == COARSE).nonzero().unbind(1)}
    work = (active[DENSE][0].numel() + 0.25 * active[COARSE][0].numel()) / flat.numel()
    if work > DENSE_FALLBACK_SHARE:
        return _dense_then_patch(x, flat, y_prev, weight, bias, a, out_h, out_w)
    weight = weight.contiguous(memory_format=torch.channels_last)
    results = []  # (output pixel rows, values [M * tile * tile, Cout]) per active choice
    pixels = n * out_h * out_w
    if any(idx[0].numel() for idx in active.values()):
        x_rows = x.permute(0, 2, 3, 1).reshape(n * h * w, cin)  # a view when x is channels-last
    for choice, (n_idx, i_idx, j_idx) in active.items():
        count = n_idx.numel()
        if not count:
            continue
        padding_tiles = _bucket_size(count) - count  # copies of the last tile, results discarded
        if padding_tiles:
            n_idx, i_idx, j_idx = (torch.cat([t, t[-1:].expand(padding_tiles)]) for t in (n_idx, i_idx, j_idx))
        tile_ids = i_idx * grid_w + j_idx
        span = spans[choice]
        table, outside = _footprint_table(h, w, grid_h, grid_w, step, pad, span, x.device)
        rows = (table.index_select(0, tile_ids) + (n_idx * (h * w)).unsqueeze(1)).view(-1)
        footprints = x_rows.index_select(0, rows)
        outside = outside.index_select(0, tile_ids).view(-1).nonzero().squeeze(1)
        if outside.numel():
            footprints.index_fill_(0, outside, 0)
        footprints = footprints.view(-1, span, span, cin)
        if choice == DENSE:
            y = _run_stack(footprints, weight, bias, stride, a)
        else:  # only the even outputs, then the fill
            y = _run_stack(footprints, weight, bias, 2 * stride, a)  # [M, t/2, t/2, Cout]
            if a["coarse_mode"] == "bilinear":
                y = _fill_tiles(y, i_idx, j_idx, tile, out_h, out_w)
            else:  # nearest: each sample goes to its 2 x 2 outputs straight from a broadcast view
                half = tile // 2
                y = y.view(-1, half, 1, half, 1, cout).expand(-1, half, 2, half, 2, cout)
        table, outside = _output_table(out_h, out_w, tile, x.device)
        rows = table.index_select(0, tile_ids) + (n_idx * (out_h * out_w)).unsqueeze(1)
        rows.masked_fill_(outside.index_select(0, tile_ids), pixels)  # partial tiles: to the spare row
        rows[count:] = pixels  # padding tiles too
        results.append((rows.view(y.shape[:-1]), y))

    # Output pixels as rows of Cout values, plus one spare row that absorbs the outputs of
    # partial tiles past the map's edge. It starts as y_prev: REUSE tiles need nothing more.
    # (Filled after the convolutions, so their gathers read x while it is still in cache.)
    out = y_prev.new_empty((pixels + 1, cout), dtype=x.dtype)
    out[:pixels].view(n, out_h, out_w, cout).copy_(y_prev.permute(0, 2, 3, 1))
    for rows, values in results:
        out.index_put_((rows,), values)
    return out[:pixels].view(n, out_h, out_w, cout).permute(0, 3, 1, 2)


def _fill_tiles(samples: torch.Tensor, tile_rows: torch.Tensor, tile_cols: torch.Tensor, tile: int,
                out_h: int, out_w: int) -> torch.Tensor:
    """Bilinear COARSE fill of a stack of tiles: samples [M, t/2, t/2, C] (NHWC) -> [M, t, t, C].

    tile_rows / tile_cols [M]: grid position of each tile; tiles cut by the map's edge clamp
    their neighbours to their last sample inside the map.
    """
    half = samples.shape[1]
    dev = samples.device
    last_row = _last_sample_mask(half, tile, out_h, tile_rows.view(-1, 1) * tile, dev).view(-1, half, 1, 1)
    last_col = _last_sample_mask(half, tile, out_w, tile_cols.view(-1, 1) * tile, dev).view(-1, 1, half, 1)
    return _fill_axis(_fill_axis(samples, 1, last_row, True), 2, last_col, True)


# ------------------------------------------------------------------ the custom op


@torch.library.custom_op(OP_NAME, mutates_args=())
def gated_sparse_conv2d_op(x: torch.Tensor, decision: torch.Tensor, y_prev: torch.Tensor, weight: torch.Tensor,
                           bias: torch.Tensor, kernel: int, stride: int, padding: int, dilation: int, groups: int,
                           tile: int, coarse_mode: str, activation: str) -> torch.Tensor:
    """``torch.ops.vseg.gated_sparse_conv2d``: the tile-sparse path on any device."""
    return tile_sparse_gated_conv2d(x, decision, y_prev, weight, bias, kernel=kernel, stride=stride,
                                    padding=padding, dilation=dilation, groups=groups, tile=tile,
                                    coarse_mode=coarse_mode, activation=activation)


@gated_sparse_conv2d_op.register_fake
def _gated_sparse_conv2d_fake(x, decision, y_prev, weight, bias, kernel, stride, padding, dilation, groups,
                              tile, coarse_mode, activation):
    out_h = conv_output_size(x.shape[2], kernel, stride, padding, dilation)
    out_w = conv_output_size(x.shape[3], kernel, stride, padding, dilation)
    # Same shape and memory format as the real kernel's output.
    return x.new_empty((x.shape[0], weight.shape[0], out_h, out_w)).contiguous(memory_format=torch.channels_last)


_ATTRIBUTE_ORDER = ("kernel", "stride", "padding", "dilation", "groups", "tile", "coarse_mode", "activation")


def _setup_context(ctx, inputs, output) -> None:
    x, decision, y_prev, weight, bias, *attrs = inputs
    ctx.save_for_backward(x, decision, y_prev, weight, bias)
    ctx.attributes = dict(zip(_ATTRIBUTE_ORDER, attrs))


def _backward(ctx, grad_out):
    # The op's gradient is the masked-dense path's with one-hot gate weights: recompute it and
    # differentiate (training uses the masked-dense path directly; this serves direct callers).
    x, decision, y_prev, weight, bias = ctx.saved_tensors
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_(True) for t in (x, y_prev, weight, bias)]
        gate = decision_to_gate(decision, x.dtype)
        y = masked_dense_gated_conv2d(leaves[0], gate, leaves[1], leaves[2], leaves[3], **ctx.attributes)
        grads = torch.autograd.grad(y, leaves, grad_out)
    gx, gy, gw, gb = grads
    return gx, None, gy, gw, gb, None, None, None, None, None, None, None, None


gated_sparse_conv2d_op.register_autograd(_backward, setup_context=_setup_context)


def gated_sparse_conv2d(x: torch.Tensor, decision: torch.Tensor, y_prev: torch.Tensor, weight: torch.Tensor,
                        bias: torch.Tensor | None = None, **attributes: int | str) -> torch.Tensor:
    """Call the custom op with schema-checked attributes (defaults filled in from schema.json).

    decision int32 [N, 1, ceil(Ho/tile), ceil(Wo/tile)]; bias None becomes zeros (the ONNX node
    and the plugin always take one).
    """
    a = resolve_attributes("GatedSparseConv2d", **attributes)
    if bias is None:
        bias = weight.new_zeros(weight.shape[0])
    if decision.dtype != torch.int32:  # (no cast node in exported graphs when it already is)
        decision = decision.to(torch.int32)
    return torch.ops.vseg.gated_sparse_conv2d(x, decision, y_prev, weight, bias,
                                              *(a[name] for name in _ATTRIBUTE_ORDER))


__all__ = [
    "COARSE",
    "DENSE",
    "OP_NAME",
    "REUSE",
    "coarse_fill",
    "decision_to_gate",
    "gated_sparse_conv2d",
    "gated_sparse_conv2d_op",
    "masked_dense_gated_conv2d",
    "tile_sparse_gated_conv2d",
]
