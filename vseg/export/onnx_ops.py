"""ONNX translations of vseg's custom ops for the dynamo exporter, per export flavour.

- ``custom``: one node per op in domain ``vseg`` (op_type, inputs and attributes from
  ``vseg/ops/schema.json``) plus the node attributes the TensorRT ONNX parser looks plugins up
  by (``plugin_namespace``, ``plugin_version``; the schema's ``onnx_parser_attributes``).
- ``portable``: the same computation in standard ONNX, so any runtime loads the graph.

:func:`translation_table` gives ``torch.onnx.export(..., custom_translation_table=...)`` its
dict. Adding an op is one entry: GatedSparseConv2d's translations are defined here; MVWarp's
come from ``vseg.ops.mv_warp_onnx.ONNX_TRANSLATIONS`` when that module exists.

The translation functions get a signature generated from schema.json (inputs first, then the
attributes typed int / str), so attribute names and order are never restated here;
:func:`check_torch_op_signature` checks a torch op's arguments against it (tests do).

:func:`register_onnx_schemas` registers an ONNX OpSchema per vseg op (process-wide, once):
onnxscript needs one to build a node, and ``onnx.checker`` (full check) then validates vseg
nodes' inputs and attributes like any standard node.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np
import onnx
import onnxscript
import torch
from onnx.defs import OpSchema
from onnxscript import opset18 as op

from vseg.export import optional_module
from vseg.ops import DOMAIN, OP_TYPES, load_schema, op_spec, resolve_attributes
from vseg.ops.reference import COARSE, REUSE, _coarse_neighbours, conv_output_size

FLAVORS = ("custom", "portable")

_ONNX_TYPES = {"float32": "tensor(float)", "float16": "tensor(float16)", "int32": "tensor(int32)"}
_ATTR_TYPES = {"int": int, "string": str}  # schema.json attribute type -> Python annotation


def parser_attributes() -> dict[str, str]:
    """The node attributes the TensorRT ONNX parser needs on every vseg node."""
    spec = load_schema()["onnx_parser_attributes"]
    return {k: v for k, v in spec.items() if k != "doc"}


def _op_schema(op_type: str) -> OpSchema:
    """An ONNX OpSchema of one vseg op, from schema.json (parser attributes included)."""
    spec = op_spec(op_type)
    version = load_schema()["domain_version"]

    def formal(p: dict) -> OpSchema.FormalParameter:
        return OpSchema.FormalParameter(p["name"], p["type"] if p["type"] in spec["type_constraints"]
                                        else _ONNX_TYPES[p["type"]])

    constraints = [(name, [_ONNX_TYPES[t] for t in types], "") for name, types in spec["type_constraints"].items()]
    attributes = [OpSchema.Attribute(a["name"], _default_attribute(a), a.get("doc", "")) for a in spec["attributes"]]
    attributes += [OpSchema.Attribute(name, onnx.helper.make_attribute(name, value), "TensorRT parser plugin lookup")
                   for name, value in parser_attributes().items()]
    return OpSchema(spec["op_type"], DOMAIN, version, spec.get("doc", ""), inputs=[formal(p) for p in spec["inputs"]],
                    outputs=[formal(p) for p in spec["outputs"]], type_constraints=constraints, attributes=attributes)


def _default_attribute(attribute: dict) -> onnx.AttributeProto:
    """A schema.json attribute's default as an AttributeProto (what OpSchema takes)."""
    return onnx.helper.make_attribute(attribute["name"], attribute["default"])


@lru_cache(maxsize=1)
def register_onnx_schemas() -> tuple[str, ...]:
    """Register every vseg op's OpSchema with onnx (once per process); returns the op types."""
    version = load_schema()["domain_version"]
    for op_type in OP_TYPES:
        if not onnx.defs.has(op_type, version, DOMAIN):
            onnx.defs.register_schema(_op_schema(op_type))
    return OP_TYPES


def vseg_opset() -> onnxscript.values.Opset:
    """The onnxscript opset of domain ``vseg`` (schemas registered first)."""
    register_onnx_schemas()
    return onnxscript.values.Opset(DOMAIN, load_schema()["domain_version"])


def schema_translation(op_type: str, body: Callable[[list, dict[str, Any]], Any]) -> Callable:
    """A translation function whose signature is the op's schema: inputs, then typed attributes.

    ``body(inputs, attributes)`` builds the ONNX node(s): inputs in schema order, attributes as
    ``{name: value}`` (checked by :func:`vseg.ops.resolve_attributes`).
    """
    spec = op_spec(op_type)
    names_in = [p["name"] for p in spec["inputs"]]
    attr_types = {a["name"]: _ATTR_TYPES[a["type"]] for a in spec["attributes"]}

    def translation(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        attrs = resolve_attributes(op_type, **{k: bound.arguments[k] for k in attr_types})
        return body([bound.arguments[k] for k in names_in], attrs)

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    signature = inspect.Signature([inspect.Parameter(n, kind) for n in names_in]
                                  + [inspect.Parameter(n, kind, annotation=t) for n, t in attr_types.items()])
    translation.__signature__ = signature
    translation.__annotations__ = dict(attr_types)
    translation.__name__ = translation.__qualname__ = f"{op_type}_translation"
    return translation


def custom_node_translation(op_type: str) -> Callable:
    """The ``custom`` flavour of any schema op: one ``vseg::<op_type>`` node."""
    def body(inputs: list, attrs: dict[str, Any]):
        node = getattr(vseg_opset(), op_spec(op_type)["op_type"])
        return node(*inputs, **attrs, **parser_attributes())
    return schema_translation(op_type, body)


# -- GatedSparseConv2d, portable --------------------------------------------------------------------


def _constant(array: np.ndarray):
    return op.Constant(value=onnx.numpy_helper.from_array(array))


def _gated_sparse_conv2d_portable(inputs: list, a: dict[str, Any]):
    """Standard ONNX: the dense conv everywhere, the COARSE fill from its even outputs (static
    Gathers, the reference's fill rule), and a per-pixel select by the decision map (REUSE
    takes y_prev). Computes the dense conv for every tile: portable, not fast."""
    x, decision, y_prev, weight, bias = inputs
    height, width = int(x.shape[2]), int(x.shape[3])
    out_h, out_w = (conv_output_size(n, a["kernel"], a["stride"], a["padding"], a["dilation"]) for n in (height, width))
    y = op.Conv(x, weight, bias, kernel_shape=[a["kernel"]] * 2, strides=[a["stride"]] * 2, pads=[a["padding"]] * 4,
                dilations=[a["dilation"]] * 2, group=a["groups"])
    if a["activation"] == "relu":
        y = op.Relu(y)
    tile, bilinear = a["tile"], a["coarse_mode"] == "bilinear"
    cpu = torch.device("cpu")
    rows_lo, rows_hi = (t.numpy() for t in _coarse_neighbours(out_h, tile, bilinear, cpu))
    cols_lo, cols_hi = (t.numpy() for t in _coarse_neighbours(out_w, tile, bilinear, cpu))
    half = _constant(np.array(0.5, dtype=np.float32))
    if bilinear:  # rows first, then columns, as the reference
        rows = op.Mul(half, op.Add(op.Gather(y, _constant(rows_lo), axis=2), op.Gather(y, _constant(rows_hi), axis=2)))
        coarse = op.Mul(half, op.Add(op.Gather(rows, _constant(cols_lo), axis=3),
                                     op.Gather(rows, _constant(cols_hi), axis=3)))
    else:
        coarse = op.Gather(op.Gather(y, _constant(rows_lo), axis=2), _constant(cols_lo), axis=3)
    # decision [N, 1, th, tw] -> per output pixel [N, 1, Ho, Wo]
    tile_rows = _constant((np.arange(out_h) // tile).astype(np.int64))
    tile_cols = _constant((np.arange(out_w) // tile).astype(np.int64))
    per_pixel = op.Gather(op.Gather(decision, tile_rows, axis=2), tile_cols, axis=3)
    y = op.Where(op.Equal(per_pixel, _constant(np.array(COARSE, dtype=np.int32))), coarse, y)
    return op.Where(op.Equal(per_pixel, _constant(np.array(REUSE, dtype=np.int32))), y_prev, y)


# One entry per op: {flavour: translation}; the torch op is looked up lazily (it may not exist).
ONNX_TRANSLATIONS: dict[str, Callable] = {
    "custom": custom_node_translation("GatedSparseConv2d"),
    "portable": schema_translation("GatedSparseConv2d", _gated_sparse_conv2d_portable),
}

# (torch op path, module providing ONNX_TRANSLATIONS, module defining the torch op)
_OP_SOURCES = (
    ("vseg.gated_sparse_conv2d.default", __name__, "vseg.ops.gated_sparse_conv"),
    ("vseg.mv_warp.default", "vseg.ops.mv_warp_onnx", "vseg.ops.mv_warp"),
)


def _torch_op(path: str):
    """torch.ops.<namespace>.<name>.<overload>, or None when it is not defined."""
    namespace, name, overload = path.split(".")
    packet = getattr(getattr(torch.ops, namespace), name, None) if hasattr(torch.ops, namespace) else None
    return getattr(packet, overload, None) if packet is not None else None


def translation_table(flavor: str) -> dict[Any, Callable]:
    """{torch op overload: ONNX translation} of every vseg op that exists, for ``flavor``."""
    if flavor not in FLAVORS:
        raise ValueError(f"export flavour must be one of {FLAVORS}, got {flavor!r}")
    register_onnx_schemas()
    table = {}
    for path, translations_module, op_module in _OP_SOURCES:
        if optional_module(op_module) is None:
            continue
        module = optional_module(translations_module)
        target = _torch_op(path)
        if module is None or target is None:
            continue
        table[target] = module.ONNX_TRANSLATIONS[flavor]
    return table


def check_torch_op_signature(target, op_type: str) -> None:
    """AssertionError if a torch op's argument names differ from the schema's (inputs, attributes)."""
    spec = op_spec(op_type)
    expected = [p["name"] for p in spec["inputs"]] + [a["name"] for a in spec["attributes"]]
    actual = [arg.name for arg in target._schema.arguments]
    assert actual == expected, f"{target} takes {actual}, schema.json says {expected}"


__all__ = [
    "FLAVORS",
    "ONNX_TRANSLATIONS",
    "check_torch_op_signature",
    "custom_node_translation",
    "parser_attributes",
    "register_onnx_schemas",
    "schema_translation",
    "translation_table",
    "vseg_opset",
]
