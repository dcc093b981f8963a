"""MVWarp in PyTorch: the ``vseg::mv_warp`` custom op.

Semantics are those of :func:`vseg.ops.reference.mv_warp_reference` (DESIGN.md, "Custom
operators"): ``warped(p) = feat(p + mv(block(p)) * feat_size / frame_size)``, mv on a block
grid in frame pixels, nearest (``floor(s + 0.5)``) or bilinear taps, zeros or border padding.
Attribute names, defaults and allowed values come from ``schema.json`` through
:func:`vseg.ops.resolve_attributes`.

The implementation works on pixel rows (channels-last): each tap is one ``index_select`` of
C-float rows, with one extra all-zero row that every out-of-map tap reads. It evaluates the
same float32 expressions in the same order as the reference, so the two agree bit for bit,
and its backward is the exact transpose (``index_add_`` of the weighted output gradient into
the tapped rows). ``F.grid_sample`` was not used: its nearest mode rounds halves to even,
and MVWarp hits exact halves all the time (a 4-pixel vector on a stride-8 feature map).
"""

from __future__ import annotations

import torch

from vseg.ops import resolve_attributes

OP_NAME = "vseg::mv_warp"


def _check_shapes(feat: torch.Tensor, mv: torch.Tensor) -> None:
    if feat.dim() != 4:
        raise ValueError(f"feat {tuple(feat.shape)} should be [N, C, Hf, Wf]")
    if mv.dim() != 4 or mv.shape[0] != feat.shape[0] or mv.shape[1] != 2:
        raise ValueError(f"mv {tuple(mv.shape)} should be [{feat.shape[0]}, 2, Hm, Wm]")


def sampling_positions(feat_hw: tuple[int, int], mv: torch.Tensor, block: int,
                       padding: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each feature pixel samples, in feature pixel-centre coordinates.

    feat_hw: (Hf, Wf); mv float [N, 2, Hm, Wm]. Returns (sx, sy), float32 [N, Hf, Wf]:
    sx = x + dx(block) * Wf / (Wm*block), block (y*Hm // Hf, x*Wm // Wf); clamped into the map
    for border padding. The scale is rounded to float32 once, as the reference and the kernel do.
    """
    hf, wf = feat_hw
    hm, wm = mv.shape[2], mv.shape[3]
    dev = mv.device
    ys = torch.arange(hf, device=dev)
    xs = torch.arange(wf, device=dev)
    mv32 = mv.to(torch.float32)
    rows = mv32.index_select(2, (ys * hm) // hf)
    cells = rows.index_select(3, (xs * wm) // wf)  # [N, 2, Hf, Wf]
    scale_x = torch.tensor(wf, dtype=torch.float32) / torch.tensor(wm * block, dtype=torch.float32)
    scale_y = torch.tensor(hf, dtype=torch.float32) / torch.tensor(hm * block, dtype=torch.float32)
    sx = xs.to(torch.float32).view(1, 1, wf) + cells[:, 0] * scale_x.to(dev)
    sy = ys.to(torch.float32).view(1, hf, 1) + cells[:, 1] * scale_y.to(dev)
    if padding == "border":
        sx = sx.clamp(0, wf - 1)
        sy = sy.clamp(0, hf - 1)
    return sx, sy


class _Taps:
    """The rows a warp reads: per tap, flat row indices into [N*Hf*Wf + 1, C] (the last row is
    the zero row that out-of-map taps read), plus the bilinear fractions.

    nearest: one tap; bilinear: four (y0x0, y0x1, y1x0, y1x1) with fractions fx, fy [N*Hf*Wf, 1].
    """

    def __init__(self, n: int, hf: int, wf: int, sx: torch.Tensor, sy: torch.Tensor, mode: str) -> None:
        self.zero_row = n * hf * wf
        base = (torch.arange(n, device=sx.device) * (hf * wf)).view(n, 1, 1)

        def rows(iy: torch.Tensor, ix: torch.Tensor) -> torch.Tensor:
            inside = (iy >= 0) & (iy < hf) & (ix >= 0) & (ix < wf)
            flat = base + iy.clamp(0, hf - 1) * wf + ix.clamp(0, wf - 1)
            return torch.where(inside, flat, self.zero_row).reshape(-1)

        if mode == "nearest":
            self.rows = [rows(torch.floor(sy + 0.5).long(), torch.floor(sx + 0.5).long())]
            self.fx = self.fy = None
        else:
            x0f, y0f = torch.floor(sx), torch.floor(sy)
            self.fx = (sx - x0f).reshape(-1, 1)
            self.fy = (sy - y0f).reshape(-1, 1)
            x0, y0 = x0f.long(), y0f.long()
            self.rows = [rows(y0, x0), rows(y0, x0 + 1), rows(y0 + 1, x0), rows(y0 + 1, x0 + 1)]

    def gather(self, table: torch.Tensor) -> torch.Tensor:
        """table [N*Hf*Wf + 1, C] float32 -> sampled rows [N*Hf*Wf, C] float32."""
        if self.fx is None:
            return table.index_select(0, self.rows[0])
        t00, t01, t10, t11 = (table.index_select(0, r) for r in self.rows)
        fx, fy = self.fx, self.fy
        # the reference's expression order: rows first, then the vertical blend
        top = (1 - fx) * t00 + fx * t01
        bottom = (1 - fx) * t10 + fx * t11
        return (1 - fy) * top + fy * bottom

    def scatter(self, grad_rows: torch.Tensor) -> torch.Tensor:
        """The transpose of :meth:`gather`: grad [N*Hf*Wf, C] -> grad of the table [N*Hf*Wf + 1, C]."""
        out = grad_rows.new_zeros((self.zero_row + 1, grad_rows.shape[1]))
        if self.fx is None:
            return out.index_add_(0, self.rows[0], grad_rows)
        fx, fy = self.fx, self.fy
        top, bottom = (1 - fy) * grad_rows, fy * grad_rows
        for rows, g in zip(self.rows, ((1 - fx) * top, fx * top, (1 - fx) * bottom, fx * bottom)):
            out.index_add_(0, rows, g)
        return out


def _taps(feat_shape: torch.Size, mv: torch.Tensor, mode: str, padding: str, block: int) -> _Taps:
    n, _, hf, wf = feat_shape
    sx, sy = sampling_positions((hf, wf), mv, block, padding)
    return _Taps(n, hf, wf, sx, sy, mode)


def _to_rows(x: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> float32 rows [N*H*W + 1, C], the last one zero."""
    n, c, h, w = x.shape
    rows = x.to(torch.float32).permute(0, 2, 3, 1).reshape(n * h * w, c)
    return torch.cat([rows, rows.new_zeros((1, c))])


def _from_rows(rows: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """float32 rows [N*H*W, C] -> [N, C, H, W] (a channels-last view)."""
    n, c, h, w = shape
    return rows.view(n, h, w, c).permute(0, 3, 1, 2)


def mv_warp_forward(feat: torch.Tensor, mv: torch.Tensor, *, mode: str = "bilinear", padding: str = "zeros",
                    block: int = 4) -> torch.Tensor:
    """MVWarp by row gathers (plain function, no custom op): feat [N, C, Hf, Wf] (float32 or
    float16), mv float [N, 2, Hm, Wm] -> warped [N, C, Hf, Wf] in feat's dtype, contiguous."""
    resolve_attributes("MVWarp", mode=mode, padding=padding, block=block)
    _check_shapes(feat, mv)
    taps = _taps(feat.shape, mv, mode, padding, block)
    return _from_rows(taps.gather(_to_rows(feat)), feat.shape).to(feat.dtype).contiguous()


@torch.library.custom_op(OP_NAME, mutates_args=())
def mv_warp_op(feat: torch.Tensor, mv: torch.Tensor, mode: str, padding: str, block: int) -> torch.Tensor:
    """``torch.ops.vseg.mv_warp``: :func:`mv_warp_forward` on any device."""
    return mv_warp_forward(feat, mv, mode=mode, padding=padding, block=block)


@mv_warp_op.register_fake
def _mv_warp_fake(feat, mv, mode, padding, block):
    return torch.empty_like(feat, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output) -> None:
    feat, mv, mode, padding, block = inputs
    ctx.save_for_backward(mv)
    ctx.feat_shape, ctx.feat_dtype = feat.shape, feat.dtype
    ctx.attributes = (mode, padding, block)


def _backward(ctx, grad_out):
    # Gradient to feat only: the sampling positions come from codec motion vectors, which are
    # data, not something a network predicts.
    (mv,) = ctx.saved_tensors
    taps = _taps(ctx.feat_shape, mv, *ctx.attributes)
    grad_rows = grad_out.to(torch.float32).permute(0, 2, 3, 1).reshape(-1, grad_out.shape[1])
    grad_feat = _from_rows(taps.scatter(grad_rows)[:-1], ctx.feat_shape)
    return grad_feat.to(ctx.feat_dtype).contiguous(), None, None, None, None


mv_warp_op.register_autograd(_backward, setup_context=_setup_context)


def mv_warp(feat: torch.Tensor, mv: torch.Tensor, **attributes: int | str) -> torch.Tensor:
    """Call ``torch.ops.vseg.mv_warp`` with schema-checked attributes (defaults from schema.json).

    feat [N, C, Hf, Wf]; mv float32 [N, 2, Hm, Wm] (dx, dy in frame pixels on a ``block`` grid,
    pointing from the current pixel to where it was in the keyframe) -> [N, C, Hf, Wf].
    """
    a = resolve_attributes("MVWarp", **attributes)
    _check_shapes(feat, mv)
    if mv.dtype != torch.float32:  # (no cast node in exported graphs when it already is)
        mv = mv.to(torch.float32)
    return torch.ops.vseg.mv_warp(feat, mv, a["mode"], a["padding"], a["block"])


__all__ = ["OP_NAME", "mv_warp", "mv_warp_forward", "mv_warp_op", "sampling_positions"]
