"""MVWarp in ONNX: the dynamo exporter's translations and an onnxruntime-extensions Python op.

Two flavours, keyed in :data:`ONNX_TRANSLATIONS` for ``torch.ops.vseg.mv_warp.default``
(:data:`TORCH_OP`); pass ``{TORCH_OP: ONNX_TRANSLATIONS[flavor]}`` (or :func:`translation_table`)
as ``custom_translation_table`` to ``torch.onnx.export(..., dynamo=True)``:

- ``custom``: one node ``vseg::MVWarp`` carrying the schema's attributes plus the TensorRT
  ONNX parser's ``plugin_namespace`` / ``plugin_version`` (schema.json's
  ``onnx_parser_attributes``). TensorRT runs it with the ``MVWarp`` plugin; onnxruntime with
  the Python op that :func:`register_ort_op` registers.
- ``portable``: standard ONNX that any runtime loads. The block of each feature pixel is a
  Gather of the mv grid at ``y*Hm // Hf`` (integer Mul/Div), the sample position is computed
  with the reference's float32 expressions, and one ``GridSample`` (align_corners=0) reads
  the map. GridSample's nearest mode rounds halves to even, MVWarp's rounds them up, so for
  nearest the position is rounded first (``Floor(s + 0.5)``) and GridSample only ever sees
  integer positions.

Every name, default and type comes from ``schema.json`` through :mod:`vseg.ops`.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import onnx
import onnxscript
import torch
from onnxscript import opset18 as op

import vseg.ops.mv_warp  # noqa: F401  (registers torch.ops.vseg.mv_warp)
from vseg.ops import (
    DOMAIN,
    attribute_defaults,
    load_schema,
    op_spec,
    resolve_attributes,
)

OP_TYPE = "MVWarp"
TORCH_OP = torch.ops.vseg.mv_warp.default
_ATTRIBUTE_NAMES = tuple(attribute_defaults(OP_TYPE))  # the torch op's attribute order


def parser_attributes() -> dict[str, str]:
    """The node attributes the TensorRT ONNX parser looks a plugin up by (not plugin fields)."""
    spec = load_schema()["onnx_parser_attributes"]
    return {k: v for k, v in spec.items() if k != "doc"}


def _tensor_type(dtype: str) -> str:
    """schema.json's numpy-style dtype name -> ONNX's type string ("float32" -> "tensor(float)")."""
    code = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    return f"tensor({onnx.TensorProto.DataType.Name(code).lower()})"


def _onnx_type(schema_type: str, type_constraints: dict) -> str:
    return schema_type if schema_type in type_constraints else _tensor_type(schema_type)


@cache
def onnx_op_schema(op_type: str) -> onnx.defs.OpSchema:
    """An ``onnx.defs.OpSchema`` for one vseg operator, built from schema.json.

    The exporter's graph builder needs a schema to record a node of a custom domain; the
    parser attributes are declared too so the node may carry them. Not registered with onnx
    (the checker treats the vseg domain as opaque).
    """
    spec = op_spec(op_type)
    constraints = spec["type_constraints"]
    param = onnx.defs.OpSchema.FormalParameter
    attrs = [onnx.defs.OpSchema.Attribute(a["name"], onnx.helper.make_attribute(a["name"], a["default"]), "")
             for a in spec["attributes"]]
    attrs += [onnx.defs.OpSchema.Attribute(k, onnx.helper.make_attribute(k, v), "")
              for k, v in parser_attributes().items()]
    return onnx.defs.OpSchema(
        spec["op_type"], DOMAIN, load_schema()["domain_version"], spec["doc"],
        inputs=[param(i["name"], _onnx_type(i["type"], constraints)) for i in spec["inputs"]],
        outputs=[param(o["name"], _onnx_type(o["type"], constraints)) for o in spec["outputs"]],
        type_constraints=[(name, [_tensor_type(t) for t in types], "") for name, types in constraints.items()],
        attributes=attrs,
    )


@cache
def _custom_node() -> onnxscript.values.Op:
    opset = onnxscript.values.Opset(DOMAIN, load_schema()["domain_version"])
    return onnxscript.values.Op(opset, OP_TYPE, onnx_op_schema(OP_TYPE))


def mv_warp_custom(feat, mv, *attribute_values):
    """custom flavour: ``vseg::MVWarp(feat, mv)`` with the op's attributes and the parser's."""
    attrs = resolve_attributes(OP_TYPE, **dict(zip(_ATTRIBUTE_NAMES, attribute_values)))
    return _custom_node()(feat, mv, **attrs, **parser_attributes())


def _axis_blocks(feat_len, mv_len):
    """For each feature row (or column) i: (its block floor(i * mv_len / feat_len), int64
    [feat_len]; i itself as float32 [feat_len])."""
    i = op.Range(op.Constant(value_int=0), feat_len, op.Constant(value_int=1))
    return op.Div(op.Mul(i, mv_len), feat_len), op.Cast(i, to=onnx.TensorProto.FLOAT)


def _normalise(pos, size_f):
    """Feature pixel-centre coordinate -> GridSample's [-1, 1] with align_corners=0."""
    two, one = op.Constant(value_float=2.0), op.Constant(value_float=1.0)
    return op.Sub(op.Div(op.Add(op.Mul(pos, two), one), size_f), one)


def mv_warp_portable(feat, mv, *attribute_values):
    """portable flavour: Gather the block vectors, build the sampling grid, one GridSample."""
    attrs = resolve_attributes(OP_TYPE, **dict(zip(_ATTRIBUTE_NAMES, attribute_values)))
    float32 = onnx.TensorProto.FLOAT
    feat_shape, mv_shape = op.Shape(feat), op.Shape(mv)

    def dim(shape, axis):
        return op.Squeeze(op.Slice(shape, op.Constant(value_ints=[axis]), op.Constant(value_ints=[axis + 1])))

    hf, wf, hm, wm = dim(feat_shape, 2), dim(feat_shape, 3), dim(mv_shape, 2), dim(mv_shape, 3)
    block_y, ys = _axis_blocks(hf, hm)
    block_x, xs = _axis_blocks(wf, wm)
    cells = op.Gather(op.Gather(mv, block_y, axis=2), block_x, axis=3)  # [N, 2, Hf, Wf]
    dx = op.Gather(cells, op.Constant(value_int=0), axis=1)  # [N, Hf, Wf]
    dy = op.Gather(cells, op.Constant(value_int=1), axis=1)
    block = op.Constant(value_int=attrs["block"])
    wf_f, hf_f = op.Cast(wf, to=float32), op.Cast(hf, to=float32)
    # float32 scale then one multiply-add, exactly as the reference computes the position
    scale_x = op.Div(wf_f, op.Cast(op.Mul(wm, block), to=float32))
    scale_y = op.Div(hf_f, op.Cast(op.Mul(hm, block), to=float32))
    sx = op.Add(op.Unsqueeze(xs, op.Constant(value_ints=[0, 1])), op.Mul(dx, scale_x))
    sy = op.Add(op.Unsqueeze(ys, op.Constant(value_ints=[0, 2])), op.Mul(dy, scale_y))
    if attrs["padding"] == "border":
        zero, one = op.Constant(value_float=0.0), op.Constant(value_float=1.0)
        sx = op.Clip(sx, zero, op.Sub(wf_f, one))
        sy = op.Clip(sy, zero, op.Sub(hf_f, one))
    if attrs["mode"] == "nearest":
        half = op.Constant(value_float=0.5)
        sx, sy = op.Floor(op.Add(sx, half)), op.Floor(op.Add(sy, half))
    last = op.Constant(value_ints=[-1])
    grid = op.Concat(op.Unsqueeze(_normalise(sx, wf_f), last), op.Unsqueeze(_normalise(sy, hf_f), last), axis=-1)
    # GridSample-16 names its modes as the schema does; the grid stays float32 for fp16 features
    return op.GridSample(feat, grid, align_corners=0, mode=attrs["mode"], padding_mode=attrs["padding"])


ONNX_TRANSLATIONS = {"custom": mv_warp_custom, "portable": mv_warp_portable}


def translation_table(flavor: str) -> dict:
    """``{torch.ops.vseg.mv_warp.default: translation}`` for ``custom_translation_table``."""
    if flavor not in ONNX_TRANSLATIONS:
        raise ValueError(f"unknown ONNX flavour {flavor!r} (one of {', '.join(ONNX_TRANSLATIONS)})")
    return {TORCH_OP: ONNX_TRANSLATIONS[flavor]}


_registered = False


def register_ort_op() -> None:
    """Register ``vseg::MVWarp`` as an onnxruntime-extensions Python op (idempotent).

    Sessions that load ``onnxruntime_extensions.get_library_path()`` as a custom-op library
    then run the custom flavour on the CPU; the op calls :func:`vseg.ops.reference.mv_warp_reference`
    on float32 inputs. The parser attributes on the node are ignored.
    """
    global _registered
    if _registered:
        return
    from onnxruntime_extensions import PyCustomOpDef, onnx_op

    from vseg.ops.reference import mv_warp_reference

    kinds = {"int": PyCustomOpDef.dt_int64, "string": PyCustomOpDef.dt_string}
    spec = op_spec(OP_TYPE)

    @onnx_op(op_type=f"{DOMAIN}::{OP_TYPE}", inputs=[PyCustomOpDef.dt_float, PyCustomOpDef.dt_float],
             outputs=[PyCustomOpDef.dt_float], attrs={a["name"]: kinds[a["type"]] for a in spec["attributes"]})
    def _mv_warp_ort(feat: np.ndarray, mv: np.ndarray, **attributes) -> np.ndarray:
        with torch.inference_mode():
            out = mv_warp_reference(torch.from_numpy(np.ascontiguousarray(feat)),
                                    torch.from_numpy(np.ascontiguousarray(mv)), **attributes)
        return out.numpy()

    _registered = True


__all__ = [
    "ONNX_TRANSLATIONS",
    "OP_TYPE",
    "TORCH_OP",
    "mv_warp_custom",
    "mv_warp_portable",
    "onnx_op_schema",
    "parser_attributes",
    "register_ort_op",
    "translation_table",
]
