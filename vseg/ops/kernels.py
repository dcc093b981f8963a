"""ctypes bindings of libvseg_kernels.so: vseg's CUDA kernels on PyTorch CUDA tensors.

The library is found through ``VSEG_KERNELS_LIB`` (a path to the .so), else in
``plugins/build/`` of the source tree; build it with ``plugins/build.sh``. Each call enqueues
on the current PyTorch CUDA stream and returns at once, like a PyTorch op. The C ABI is
``plugins/common/vseg_kernels.h``.
"""

from __future__ import annotations

import ctypes
import os
from functools import cache
from pathlib import Path

import torch

from vseg.errors import VsegError
from vseg.ops import allowed_values, attribute_defaults, resolve_attributes
from vseg.ops.reference import conv_output_size, decision_grid_shape

LIBRARY_NAME = "libvseg_kernels.so"
ABI_VERSION = 1  # VSEG_KERNELS_ABI_VERSION in vseg_kernels.h
DEFAULT_BUILD_DIR = Path(__file__).resolve().parents[2] / "plugins" / "build"
_DTYPES = {torch.float32: 0, torch.float16: 1}  # enum vseg_dtype
_CONV_DEFAULTS = attribute_defaults("GatedSparseConv2d")
_WARP_DEFAULTS = attribute_defaults("MVWarp")


def library_candidates() -> list[Path]:
    """Where :func:`load_library` looks, in order."""
    env = os.environ.get("VSEG_KERNELS_LIB")
    found = [Path(env)] if env else []
    return found + [DEFAULT_BUILD_DIR / LIBRARY_NAME]


def _enum_index(op_type: str, attribute: str, value: str) -> int:
    """A string attribute as the C enum value: its index in the schema's allowed list."""
    return allowed_values(op_type, attribute).index(value)


@cache
def load_library(path: str | None = None) -> ctypes.CDLL:
    """Load libvseg_kernels.so and declare its C signatures.

    Raises :class:`VsegError` (one line, naming the paths tried) when no library is found
    or when its ABI version differs from this module's.
    """
    tried = [Path(path)] if path else library_candidates()
    existing = [p for p in tried if p.is_file()]
    if not existing:
        raise VsegError(
            f"{LIBRARY_NAME} not found (looked in {', '.join(str(p) for p in tried)}): "
            "build it with plugins/build.sh or set VSEG_KERNELS_LIB"
        )
    lib = ctypes.CDLL(str(existing[0]))
    c_int, c_void_p, c_size_t = ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t
    lib.vseg_kernels_abi_version.restype = c_int
    lib.vseg_last_error.restype = ctypes.c_char_p
    lib.vseg_status_string.restype = ctypes.c_char_p
    lib.vseg_status_string.argtypes = [c_int]
    lib.vseg_gated_sparse_conv2d_workspace_size.restype = c_size_t
    lib.vseg_gated_sparse_conv2d_workspace_size.argtypes = [c_int] * 9
    lib.vseg_gated_sparse_conv2d.restype = c_int
    lib.vseg_gated_sparse_conv2d.argtypes = [c_void_p] * 7 + [c_size_t] + [c_int] * 14 + [c_void_p]
    lib.vseg_mv_warp.restype = c_int
    lib.vseg_mv_warp.argtypes = [c_void_p] * 3 + [c_int] * 10 + [c_void_p]
    version = lib.vseg_kernels_abi_version()
    if version != ABI_VERSION:
        raise VsegError(f"{existing[0]}: kernels ABI version {version}, this vseg expects {ABI_VERSION}; rebuild it")
    return lib


def _check(lib: ctypes.CDLL, status: int) -> None:
    if status != 0:
        detail = lib.vseg_last_error().decode(errors="replace")
        raise RuntimeError(f"{lib.vseg_status_string(status).decode()}: {detail}")


def _require(tensor: torch.Tensor, name: str, dtype: torch.dtype | None, device: torch.device) -> None:
    """Kernel inputs are contiguous tensors on the same CUDA device (programming errors)."""
    if not tensor.is_cuda or tensor.device != device:
        raise ValueError(f"{name} must be on {device}, got {tensor.device}")
    if dtype is not None and tensor.dtype != dtype:
        raise ValueError(f"{name} must be {dtype}, got {tensor.dtype}")
    if not tensor.is_contiguous():
        raise ValueError(f"{name} must be contiguous")


def _stream(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream


def gated_sparse_conv2d(
    x: torch.Tensor,
    decision: torch.Tensor,
    y_prev: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    kernel: int = _CONV_DEFAULTS["kernel"],
    stride: int = _CONV_DEFAULTS["stride"],
    padding: int = _CONV_DEFAULTS["padding"],
    dilation: int = _CONV_DEFAULTS["dilation"],
    groups: int = _CONV_DEFAULTS["groups"],
    tile: int = _CONV_DEFAULTS["tile"],
    coarse_mode: str = _CONV_DEFAULTS["coarse_mode"],
    activation: str = _CONV_DEFAULTS["activation"],
    out: torch.Tensor | None = None,
    library: ctypes.CDLL | None = None,
) -> torch.Tensor:
    """GatedSparseConv2d on the GPU; same arguments and semantics as
    :func:`vseg.ops.reference.gated_sparse_conv2d_reference`.

    Shapes: x [N, Cin, H, W] float32|float16; decision int32 [N, 1, ceil(Ho/tile),
    ceil(Wo/tile)]; y_prev [N, Cout, Ho, Wo]; weight [Cout, Cin/groups, k, k]; bias [Cout]
    or None (all in x's dtype, contiguous, on one CUDA device). ``out`` (optional, may be
    ``y_prev`` itself for an in-place update) receives y [N, Cout, Ho, Wo]; it is returned.
    """
    resolve_attributes(
        "GatedSparseConv2d", kernel=kernel, stride=stride, padding=padding, dilation=dilation,
        groups=groups, tile=tile, coarse_mode=coarse_mode, activation=activation,
    )
    lib = library or load_library()
    if x.dtype not in _DTYPES:
        raise ValueError(f"x must be float32 or float16, got {x.dtype}")
    n, c_in, h, w = x.shape
    c_out = weight.shape[0]
    out_h = conv_output_size(h, kernel, stride, padding, dilation)
    out_w = conv_output_size(w, kernel, stride, padding, dilation)
    grid = decision_grid_shape(out_h, out_w, tile)
    if tuple(decision.shape) != (n, 1, *grid) or tuple(y_prev.shape) != (n, c_out, out_h, out_w):
        raise ValueError(
            f"decision {tuple(decision.shape)} / y_prev {tuple(y_prev.shape)} should be "
            f"{(n, 1, *grid)} / {(n, c_out, out_h, out_w)}"
        )
    if tuple(weight.shape) != (c_out, c_in // groups, kernel, kernel):
        raise ValueError(f"weight {tuple(weight.shape)} should be {(c_out, c_in // groups, kernel, kernel)}")
    device = x.device
    _require(x, "x", None, device)
    _require(decision, "decision", torch.int32, device)
    for name, t in (("y_prev", y_prev), ("weight", weight)):
        _require(t, name, x.dtype, device)
    if bias is not None:
        _require(bias, "bias", x.dtype, device)
        if tuple(bias.shape) != (c_out,):
            raise ValueError(f"bias {tuple(bias.shape)} should be {(c_out,)}")
    y = torch.empty_like(y_prev) if out is None else out
    _require(y, "out", x.dtype, device)
    if y.shape != y_prev.shape:
        raise ValueError(f"out {tuple(y.shape)} should be {tuple(y_prev.shape)}")

    workspace_bytes = lib.vseg_gated_sparse_conv2d_workspace_size(
        n, c_in, c_out, out_h, out_w, kernel, groups, tile, _DTYPES[x.dtype]
    )
    workspace = torch.empty(workspace_bytes, dtype=torch.uint8, device=device)
    with torch.cuda.device(device):
        status = lib.vseg_gated_sparse_conv2d(
            x.data_ptr(), decision.data_ptr(), y_prev.data_ptr(), weight.data_ptr(),
            None if bias is None else bias.data_ptr(), y.data_ptr(), workspace.data_ptr(), workspace_bytes,
            n, c_in, h, w, c_out, kernel, stride, padding, dilation, groups, tile,
            _enum_index("GatedSparseConv2d", "coarse_mode", coarse_mode),
            _enum_index("GatedSparseConv2d", "activation", activation),
            _DTYPES[x.dtype], _stream(device),
        )
    _check(lib, status)
    return y


def mv_warp(
    feat: torch.Tensor,
    mv: torch.Tensor,
    *,
    mode: str = _WARP_DEFAULTS["mode"],
    padding: str = _WARP_DEFAULTS["padding"],
    block: int = _WARP_DEFAULTS["block"],
    out: torch.Tensor | None = None,
    library: ctypes.CDLL | None = None,
) -> torch.Tensor:
    """MVWarp on the GPU; same semantics as :func:`vseg.ops.reference.mv_warp_reference`.

    Shapes: feat [N, C, Hf, Wf] float32|float16; mv float32 [N, 2, Hm, Wm] (contiguous, same
    CUDA device). Returns (or fills ``out`` with) the warped features [N, C, Hf, Wf].
    """
    resolve_attributes("MVWarp", mode=mode, padding=padding, block=block)
    lib = library or load_library()
    if feat.dtype not in _DTYPES:
        raise ValueError(f"feat must be float32 or float16, got {feat.dtype}")
    n, c, feat_h, feat_w = feat.shape
    if mv.dim() != 4 or mv.shape[0] != n or mv.shape[1] != 2:
        raise ValueError(f"mv {tuple(mv.shape)} should be [{n}, 2, Hm, Wm]")
    device = feat.device
    _require(feat, "feat", None, device)
    _require(mv, "mv", torch.float32, device)
    warped = torch.empty_like(feat) if out is None else out
    _require(warped, "out", feat.dtype, device)
    if warped.shape != feat.shape:
        raise ValueError(f"out {tuple(warped.shape)} should be {tuple(feat.shape)}")
    with torch.cuda.device(device):
        status = lib.vseg_mv_warp(
            feat.data_ptr(), mv.data_ptr(), warped.data_ptr(), n, c, feat_h, feat_w, mv.shape[2], mv.shape[3],
            block, _enum_index("MVWarp", "mode", mode), _enum_index("MVWarp", "padding", padding),
            _DTYPES[feat.dtype], _stream(device),
        )
    _check(lib, status)
    return warped


__all__ = ["DEFAULT_BUILD_DIR", "LIBRARY_NAME", "gated_sparse_conv2d", "library_candidates", "load_library", "mv_warp"]
