"""vseg's custom operators: GatedSparseConv2d and MVWarp.

``schema.json`` beside this file is the one machine-readable definition of each operator
(inputs, outputs, attributes with types, defaults and allowed values, ONNX domain, plugin
name, namespace and version). The exporter reads it through this module; the TensorRT plugin
build turns it into a C++ header (``plugins/tools/gen_schema_header.py``), so the ONNX node
and the plugin fields cannot drift apart.

This module stays free of torch so that schema look-ups are cheap; the PyTorch references
live in :mod:`vseg.ops.reference` and the CUDA kernels' loader in :mod:`vseg.ops.kernels`.
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).with_name("schema.json")


@lru_cache(maxsize=1)
def _schema_cached() -> dict[str, Any]:
    with open(SCHEMA_PATH, encoding="utf-8") as f:
        return json.load(f)


def load_schema() -> dict[str, Any]:
    """The parsed ``schema.json`` (a deep copy: callers may modify it freely)."""
    return copy.deepcopy(_schema_cached())


DOMAIN: str = _schema_cached()["domain"]
PLUGIN_NAMESPACE: str = _schema_cached()["plugin_namespace"]
PLUGIN_VERSION: str = _schema_cached()["plugin_version"]
OP_TYPES: tuple[str, ...] = tuple(_schema_cached()["ops"])


def _op(op_type: str) -> dict[str, Any]:
    """The cached (shared, never modified) schema entry of one operator."""
    ops = _schema_cached()["ops"]
    if op_type not in ops:
        raise KeyError(f"unknown vseg operator {op_type!r}; known: {', '.join(ops)}")
    return ops[op_type]


def op_spec(op_type: str) -> dict[str, Any]:
    """The schema entry of one operator (``inputs``, ``outputs``, ``attributes``...), a copy."""
    return copy.deepcopy(_op(op_type))


def attribute_defaults(op_type: str) -> dict[str, int | str]:
    """``{attribute name: default}`` for one operator, in schema order."""
    return {a["name"]: a["default"] for a in _op(op_type)["attributes"]}


def allowed_values(op_type: str, attribute: str) -> list[int | str]:
    """The schema's ``allowed`` list of one attribute (empty when any value >= min is fine).

    For string attributes the index in this list is the value the C ABI and the plugins use.
    """
    for a in _op(op_type)["attributes"]:
        if a["name"] == attribute:
            return list(a.get("allowed", []))
    raise KeyError(f"{op_type} has no attribute {attribute!r}")


def resolve_attributes(op_type: str, **given: int | str) -> dict[str, int | str]:
    """Fill in defaults and check every attribute against the schema.

    Returns ``{name: value}`` for all of the operator's attributes, in schema order.
    Raises ``ValueError`` (a programming error, not a user's file) for an unknown name, a
    value of the wrong type, or a value outside ``allowed`` / below ``min``.
    """
    attrs = _op(op_type)["attributes"]
    known = {a["name"] for a in attrs}
    unknown = sorted(set(given) - known)
    if unknown:
        raise ValueError(f"{op_type}: unknown attribute(s) {unknown}; expected some of {sorted(known)}")
    resolved: dict[str, int | str] = {}
    for a in attrs:
        name = a["name"]
        value = given.get(name, a["default"])
        if a["type"] == "int":
            # bool is an int subclass but never a meaningful attribute value here
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{op_type}.{name} must be an int, got {value!r}")
            if "min" in a and value < a["min"]:
                raise ValueError(f"{op_type}.{name} must be >= {a['min']}, got {value}")
        elif not isinstance(value, str):
            raise ValueError(f"{op_type}.{name} must be a string, got {value!r}")
        if "allowed" in a and value not in a["allowed"]:
            raise ValueError(f"{op_type}.{name} must be one of {a['allowed']}, got {value!r}")
        resolved[name] = value
    return resolved


__all__ = [
    "DOMAIN",
    "OP_TYPES",
    "PLUGIN_NAMESPACE",
    "PLUGIN_VERSION",
    "SCHEMA_PATH",
    "allowed_values",
    "attribute_defaults",
    "load_schema",
    "op_spec",
    "resolve_attributes",
]
