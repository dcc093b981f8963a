"""onnxruntime sessions for vseg graphs, with the ``vseg`` ONNX domain implemented in Python.

A ``custom``-flavour graph holds ``vseg::GatedSparseConv2d`` (and, for AR-Seg, ``vseg::MVWarp``)
nodes. onnxruntime has no kernel for them; onnxruntime-extensions lets a Python function be
one (its ``onnx_op`` decorator; an op_type of the form ``"<domain>::<op>"`` puts the op in
that domain). The functions here call the PyTorch references in :mod:`vseg.ops.reference`,
so CI runs custom graphs on the CPU and checks them against the same semantics as the CUDA
plugins. They are slow (onnxruntime-extensions passes each output back as a Python list):
meant for tests and parity, not for speed.

How onnxruntime-extensions hands over values (checked in tests/test_export.py): inputs arrive
as numpy arrays of the declared dtype (int32 decisions stay int32); the declared attributes
(``attrs={name: dt_int64 | dt_string}``) arrive as strings and are cast back; node attributes
that are not declared (the TensorRT parser's plugin_namespace / plugin_version) are ignored.

:func:`make_session` is what the runtime and the exporter's parity check open graphs with.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from google.protobuf.message import DecodeError
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state

from vseg.errors import InputError, VsegError
from vseg.export import optional_module
from vseg.ops import DOMAIN, op_spec
from vseg.ops.reference import gated_sparse_conv2d_reference

# What onnxruntime raises when it cannot open a graph (pybind types, not subclasses of RuntimeError)
_ORT_ERRORS = tuple(getattr(_ort_state, name) for name in (
    "Fail", "InvalidArgument", "NoSuchFile", "NoModel", "InvalidProtobuf", "InvalidGraph", "NotImplemented",
    "RuntimeException"))
# What onnx.load raises on a file that is not a model
_READ_ERRORS = (DecodeError, OSError, ValueError)

# numpy dtype names of schema.json's types, for the extensions' declared input/output types
_PYOP_TYPES = {"float32": "dt_float", "int32": "dt_int32", "float16": "dt_float16"}
_PYOP_ATTR_TYPES = {"int": "dt_int64", "string": "dt_string"}


def _extensions():
    """The onnxruntime_extensions module, or a one-line VsegError when it is not installed."""
    try:
        import onnxruntime_extensions
    except ImportError:
        raise VsegError("onnxruntime-extensions is not installed, so graphs with vseg custom ops cannot run in "
                        "onnxruntime: `pip install onnxruntime-extensions`, or export with --flavor portable") from None
    return onnxruntime_extensions


def _declare(op_type: str, function) -> None:
    """Register ``function(*inputs, **attributes)`` as the kernel of ``vseg::<op_type>``.

    Input/output dtypes and attribute types come from schema.json (type constraint T as fp32,
    the dtype these Python kernels serve).
    """
    ext = _extensions()
    spec = op_spec(op_type)
    dtype = {name: "float32" for name in spec["type_constraints"]}

    def types(params: list[dict]) -> list[int]:
        return [getattr(ext.PyCustomOpDef, _PYOP_TYPES[dtype.get(p["type"], p["type"])]) for p in params]

    attrs = {a["name"]: getattr(ext.PyCustomOpDef, _PYOP_ATTR_TYPES[a["type"]]) for a in spec["attributes"]}
    ext.onnx_op(op_type=f"{DOMAIN}::{spec['op_type']}", inputs=types(spec["inputs"]), outputs=types(spec["outputs"]),
                attrs=attrs)(function)


def _gated_sparse_conv2d_kernel(x: np.ndarray, decision: np.ndarray, y_prev: np.ndarray, weight: np.ndarray,
                                bias: np.ndarray, **attributes) -> np.ndarray:
    """vseg::GatedSparseConv2d on numpy arrays (fp32; decision int32) through the reference."""
    with torch.inference_mode():
        y = gated_sparse_conv2d_reference(*(torch.from_numpy(np.ascontiguousarray(a)) for a in
                                            (x, decision, y_prev, weight, bias)), **attributes)
    return y.numpy()


@lru_cache(maxsize=1)
def register_ort_ops() -> tuple[str, ...]:
    """Register the Python kernels of every vseg op that exists (once per process).

    GatedSparseConv2d is ours; MVWarp's comes from ``vseg.ops.mv_warp_onnx.register_ort_op``
    when that module exists. Returns the registered op types.
    """
    _declare("GatedSparseConv2d", _gated_sparse_conv2d_kernel)
    registered = ["GatedSparseConv2d"]
    mv_warp = optional_module("vseg.ops.mv_warp_onnx")
    if mv_warp is not None:
        mv_warp.register_ort_op()
        registered.append("MVWarp")
    return tuple(registered)


def custom_ops_used(model: onnx.ModelProto) -> list[str]:
    """Sorted op types of the graph's ``vseg``-domain nodes (top-level graph and functions)."""
    nodes = list(model.graph.node) + [n for f in model.functions for n in f.node]
    return sorted({n.op_type for n in nodes if n.domain == DOMAIN})


def _providers(providers: list | None) -> list:
    """The requested providers, or every available one in onnxruntime's preference order."""
    return list(providers) if providers is not None else ort.get_available_providers()


def create_session(onnx_path: str | os.PathLike, options: ort.SessionOptions, providers: list | None = None,
                   ) -> ort.InferenceSession:
    """An InferenceSession with the given options; onnxruntime's refusals become one-line errors."""
    path = Path(onnx_path)
    try:
        return ort.InferenceSession(str(path), options, providers=_providers(providers))
    except _ORT_ERRORS as e:
        text = " ".join(str(e).split()) or type(e).__name__
        if "is not a registered function/op" in text or "No Op registered" in text:
            raise VsegError(f"{path}: onnxruntime has no kernel for its vseg custom op(s) "
                            f"({', '.join(_vseg_ops_in(path)) or 'unknown'}); open it with "
                            f"vseg.export.ort_custom_ops.make_session or export with --flavor portable") from None
        raise InputError(f"{path}: onnxruntime cannot load this graph ({text[:300]})") from None


def _vseg_ops_in(path: Path) -> list[str]:
    try:
        return [f"{DOMAIN}::{op}" for op in custom_ops_used(onnx.load(str(path), load_external_data=False))]
    except _READ_ERRORS:  # only for the message: onnxruntime could not use the graph already
        return []


def make_session(onnx_path: str | os.PathLike, providers: list | None = None) -> ort.InferenceSession:
    """Open an ONNX graph in onnxruntime; graphs with vseg custom ops get their Python kernels.

    providers: onnxruntime execution providers in order of preference (default: every
    available one). A missing or unreadable file is an InputError; a vseg op with no kernel
    (onnxruntime-extensions missing, or an op whose module is absent) a one-line VsegError.
    """
    path = Path(onnx_path)
    if not path.is_file():
        raise InputError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except _READ_ERRORS as e:
        raise InputError(f"{path}: not an ONNX model ({type(e).__name__})") from None
    options = ort.SessionOptions()
    used = custom_ops_used(model)
    if used:
        registered = register_ort_ops()
        missing = [op_type for op_type in used if op_type not in registered]
        if missing:
            raise VsegError(f"{path}: uses {', '.join(f'{DOMAIN}::{m}' for m in missing)}, which vseg has no "
                            f"onnxruntime kernel for")
        options.register_custom_ops_library(_extensions().get_library_path())
    return create_session(path, options, providers)


__all__ = ["create_session", "custom_ops_used", "make_session", "register_ort_ops"]
