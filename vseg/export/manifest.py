"""``manifest.json`` of an engine folder: what was exported, from which weights, how well it matches.

Layout (every key is written by :func:`vseg.export.export_vos.export_engines`)::

    {"format": "vseg-engines", "format_version": 1,
     "model": "spvos", "config": {...the model's config dataclass...},
     "weights": {"source": "w.safetensors" | null, "sha256": <file> | null, "state_sha256": <tensors>},
     "flavor": "custom" | "portable", "opset": 18,
     "height": H, "width": W, "stride": 16, "objects": K, "capacity": T,
     "custom_ops": ["vseg::GatedSparseConv2d"],
     "engines": {"encode_key": {"file": "encode_key.onnx", "sha256": ..., "custom_ops": [...],
                                "inputs": [{"name", "shape", "dtype"}...], "outputs": [...]}, ...},
     "versions": {"torch", "onnx", "onnxruntime", "onnxscript", "vseg"},
     "parity": {"tolerance", "frames", "providers", "decision_shares", "engines": {...}}}

``state_sha256`` hashes the model's tensors (names, dtypes, shapes, bytes), so a runtime can
check that a torch model and an engine folder hold the same weights whatever file they came from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from importlib import metadata
from pathlib import Path

import torch

from vseg.errors import InputError
from vseg.jsonio import write_json

MANIFEST_NAME = "manifest.json"
FORMAT, FORMAT_VERSION = "vseg-engines", 1

_DTYPES = {torch.float32: "float32", torch.float16: "float16", torch.int32: "int32", torch.int64: "int64",
           torch.bool: "bool"}


def tensor_spec(name: str, tensor: torch.Tensor) -> dict:
    """{"name", "shape" (list of ints), "dtype" (numpy-style name)} of one engine input/output."""
    return {"name": name, "shape": list(tensor.shape), "dtype": _DTYPES[tensor.dtype]}


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def state_sha256(model: torch.nn.Module) -> str:
    """sha256 over the model's state dict: each tensor's name, dtype, shape and bytes, by name."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().reshape(-1).contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def weights_record(model: torch.nn.Module, weights: str | os.PathLike | None) -> dict:
    """The manifest's "weights" entry (``weights`` None: a model that was never saved)."""
    return {"source": str(weights) if weights is not None else None,
            "sha256": file_sha256(weights) if weights is not None else None,
            "state_sha256": state_sha256(model)}


def model_config(model: torch.nn.Module) -> dict:
    """The model's config dataclass as JSON-ready fields (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(model.config)))


def versions() -> dict[str, str]:
    """Versions of the packages an engine folder depends on."""
    out = {}
    for package in ("torch", "onnx", "onnxruntime", "onnxscript", "vseg"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = None
    return out


def write_manifest(out_dir: str | os.PathLike, manifest: dict) -> Path:
    """Write ``manifest.json`` into the folder, atomically."""
    return write_json(Path(out_dir) / MANIFEST_NAME, manifest)


def read_manifest(folder: str | os.PathLike) -> dict:
    """The manifest of an engine folder; a missing or foreign file is a one-line InputError."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise InputError(f"{folder}: not an engine folder (no {MANIFEST_NAME}; make one with `vseg export`)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InputError(f"{path}: not a vseg engine manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{path}: manifest format {manifest.get('format_version')} (this vseg reads {FORMAT_VERSION})")
    return manifest


def check_model_matches(manifest: dict, model: torch.nn.Module, folder: str | os.PathLike = "engines") -> None:
    """InputError (one line) unless ``model`` is the model the folder was exported from: same
    name, config and weights (by state_sha256)."""
    from vseg.models.registry import model_name

    name = model_name(model)
    if manifest["model"] != name:
        raise InputError(f"{folder}: engines of a {manifest['model']!r} model, not {name!r}")
    if manifest["config"] != model_config(model):
        raise InputError(f"{folder}: engines exported with another {name} config")
    if manifest["weights"]["state_sha256"] != state_sha256(model):
        raise InputError(f"{folder}: engines exported from other {name} weights "
                         f"({manifest['weights']['source'] or 'an unsaved model'})")


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "check_model_matches",
    "file_sha256",
    "model_config",
    "read_manifest",
    "state_sha256",
    "tensor_spec",
    "versions",
    "weights_record",
    "write_manifest",
]
