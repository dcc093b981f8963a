"""Plain PyTorch references of vseg's custom operators.

They are written the simple way, so that they are obviously right, and every other
implementation (the CUDA kernels, the TensorRT plugins, the portable ONNX fallback) is
checked against them:

- ``gated_sparse_conv2d_reference`` runs the dense convolution over the whole map, then
  picks per output tile: y_prev (REUSE), a fill from the tile's even samples (COARSE), or the
  dense result (DENSE).
- ``mv_warp_reference`` gathers the taps by explicit integer indexing (no grid_sample), so
  the rounding rule of nearest sampling and the border rule are visible in the code.

Attribute names, defaults and allowed values come from ``schema.json`` (checked by
:func:`vseg.ops.resolve_attributes`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vseg.ops import resolve_attributes

REUSE, COARSE, DENSE = 0, 1, 2


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Output length of a standard convolution along one axis."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def decision_grid_shape(out_h: int, out_w: int, tile: int) -> tuple[int, int]:
    """(rows, cols) of the per-tile decision map: ceil(Ho/tile), ceil(Wo/tile)."""
    return -(-out_h // tile), -(-out_w // tile)


def _coarse_neighbours(length: int, tile: int, bilinear: bool, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """For each output index along one axis, the two sample indices the COARSE fill averages.

    Returns ``(lo, hi)``, int64 [length]. Samples sit at tile-local even positions; since the
    tile size is even, those are the global even positions, and a tile's samples never leave
    the tile. nearest: lo = hi = 2*(i//2). bilinear: even i -> lo = hi = i; odd i -> i-1 and
    i+1, the latter clamped to the tile's last sample inside the map.
    """
    i = torch.arange(length, device=device)
    lo = (i // 2) * 2
    if not bilinear:
        return lo, lo
    tile_start = (i // tile) * tile
    rows_in_tile = torch.clamp(length - tile_start, max=tile)
    last_sample = tile_start + ((rows_in_tile - 1) // 2) * 2
    hi = torch.where(i % 2 == 1, torch.minimum(i + 1, last_sample), i)
    return lo, hi


def gated_sparse_conv2d_reference(
    x: torch.Tensor,
    decision: torch.Tensor,
    y_prev: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    kernel: int = 3,
    stride: int = 1,
    padding: int = 1,
    dilation: int = 1,
    groups: int = 1,
    tile: int = 8,
    coarse_mode: str = "nearest",
    activation: str = "none",
) -> torch.Tensor:
    """GatedSparseConv2d, computed densely and then selected per tile.

    Shapes: x [N, Cin, H, W]; decision int [N, 1, ceil(Ho/tile), ceil(Wo/tile)] with values
    0 REUSE, 1 COARSE, anything else DENSE; y_prev [N, Cout, Ho, Wo]; weight
    [Cout, Cin/groups, kernel, kernel]; bias [Cout] or None. Returns y [N, Cout, Ho, Wo] in
    x's dtype. COARSE fill (per tile, on act(conv + bias) at the even positions):
    nearest -> y(i, j) = s(2*(i//2), 2*(j//2)); bilinear -> odd positions average their two
    neighbouring samples, rows first then columns.
    """
    resolve_attributes(
        "GatedSparseConv2d", kernel=kernel, stride=stride, padding=padding, dilation=dilation,
        groups=groups, tile=tile, coarse_mode=coarse_mode, activation=activation,
    )
    n, _, h, w = x.shape
    cout = weight.shape[0]
    if tuple(weight.shape[1:]) != (x.shape[1] // groups, kernel, kernel) or x.shape[1] % groups or cout % groups:
        raise ValueError(f"weight {tuple(weight.shape)} does not fit x {tuple(x.shape)} with kernel={kernel}, groups={groups}")
    out_h = conv_output_size(h, kernel, stride, padding, dilation)
    out_w = conv_output_size(w, kernel, stride, padding, dilation)
    grid_h, grid_w = decision_grid_shape(out_h, out_w, tile)
    if tuple(decision.shape) != (n, 1, grid_h, grid_w):
        raise ValueError(f"decision {tuple(decision.shape)} should be {(n, 1, grid_h, grid_w)}")
    if tuple(y_prev.shape) != (n, cout, out_h, out_w):
        raise ValueError(f"y_prev {tuple(y_prev.shape)} should be {(n, cout, out_h, out_w)}")

    dense = F.conv2d(x, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups)
    if activation == "relu":
        dense = torch.relu(dense)

    bilinear = coarse_mode == "bilinear"
    row_lo, row_hi = _coarse_neighbours(out_h, tile, bilinear, x.device)
    col_lo, col_hi = _coarse_neighbours(out_w, tile, bilinear, x.device)
    # rows first, then columns; even positions stay exact since 0.5 * (v + v) == v
    rows = 0.5 * (dense[:, :, row_lo, :] + dense[:, :, row_hi, :])
    coarse = 0.5 * (rows[:, :, :, col_lo] + rows[:, :, :, col_hi])

    per_pixel = decision.repeat_interleave(tile, dim=2).repeat_interleave(tile, dim=3)[:, :, :out_h, :out_w]
    y = torch.where(per_pixel == COARSE, coarse, dense)
    y = torch.where(per_pixel == REUSE, y_prev.to(y.dtype), y)
    return y.to(x.dtype)


def mv_warp_reference(
    feat: torch.Tensor,
    mv: torch.Tensor,
    *,
    mode: str = "bilinear",
    padding: str = "zeros",
    block: int = 4,
) -> torch.Tensor:
    """MVWarp: warped[n, :, y, x] = feat sampled at (x, y) + the block's motion vector.

    Shapes: feat [N, C, Hf, Wf]; mv float32 [N, 2, Hm, Wm] (channel 0 = dx, 1 = dy, in frame
    pixels; the frame is (Hm*block) x (Wm*block)). Returns [N, C, Hf, Wf] in feat's dtype.
    Block of feature pixel (y, x): (y*Hm // Hf, x*Wm // Wf). Sample position in feature
    pixel-centre coordinates: sx = x + dx * Wf / (Wm*block), sy = y + dy * Hf / (Hm*block).
    bilinear: the usual four taps; nearest: floor(s + 0.5). zeros: taps outside the map
    read 0; border: the sample position is clamped into the map first.
    """
    resolve_attributes("MVWarp", mode=mode, padding=padding, block=block)
    n, c, hf, wf = feat.shape
    if mv.dim() != 4 or mv.shape[0] != n or mv.shape[1] != 2:
        raise ValueError(f"mv {tuple(mv.shape)} should be [{n}, 2, Hm, Wm]")
    hm, wm = mv.shape[2], mv.shape[3]
    dev = feat.device

    ys = torch.arange(hf, device=dev)
    xs = torch.arange(wf, device=dev)
    block_y = (ys * hm) // hf  # ONNX Resize nearest, asymmetric + floor
    block_x = (xs * wm) // wf
    mv32 = mv.to(torch.float32)
    dx = mv32[:, 0][:, block_y][:, :, block_x]  # [N, Hf, Wf]
    dy = mv32[:, 1][:, block_y][:, :, block_x]
    # the scales are rounded to float32 once, as the kernel computes them
    scale_x = torch.tensor(wf, dtype=torch.float32) / torch.tensor(wm * block, dtype=torch.float32)
    scale_y = torch.tensor(hf, dtype=torch.float32) / torch.tensor(hm * block, dtype=torch.float32)
    sx = xs.to(torch.float32).view(1, 1, wf) + dx * scale_x.to(dev)
    sy = ys.to(torch.float32).view(1, hf, 1) + dy * scale_y.to(dev)
    if padding == "border":
        sx = sx.clamp(0, wf - 1)
        sy = sy.clamp(0, hf - 1)

    flat = feat.reshape(n, c, hf * wf).to(torch.float32)

    def tap(iy: torch.Tensor, ix: torch.Tensor) -> torch.Tensor:
        """feat at integer positions [N, Hf, Wf] -> [N, C, Hf, Wf]; 0 outside the map."""
        inside = (iy >= 0) & (iy < hf) & (ix >= 0) & (ix < wf)
        index = (iy.clamp(0, hf - 1) * wf + ix.clamp(0, wf - 1)).reshape(n, 1, hf * wf).expand(n, c, hf * wf)
        values = torch.gather(flat, 2, index).reshape(n, c, hf, wf)
        return torch.where(inside.unsqueeze(1), values, torch.zeros((), dtype=values.dtype, device=dev))

    if mode == "nearest":
        out = tap(torch.floor(sy + 0.5).long(), torch.floor(sx + 0.5).long())
    else:
        x0f, y0f = torch.floor(sx), torch.floor(sy)
        fx = (sx - x0f).unsqueeze(1)
        fy = (sy - y0f).unsqueeze(1)
        x0, y0 = x0f.long(), y0f.long()
        top = (1 - fx) * tap(y0, x0) + fx * tap(y0, x0 + 1)
        bottom = (1 - fx) * tap(y0 + 1, x0) + fx * tap(y0 + 1, x0 + 1)
        out = (1 - fy) * top + fy * bottom
    return out.to(feat.dtype)


__all__ = [
    "COARSE",
    "DENSE",
    "REUSE",
    "conv_output_size",
    "decision_grid_shape",
    "gated_sparse_conv2d_reference",
    "mv_warp_reference",
]
