"""``export_engines``: a VOS model -> an engine folder (ONNX graphs + manifest.json).

Steps: wrap the model's stages (:mod:`vseg.export.graphs`), export each wrapper with the dynamo
exporter and the custom-op translations of the chosen flavour (:mod:`vseg.export.onnx_ops`),
check each graph with ``onnx.checker`` (full check), run each engine in onnxruntime on the CPU
on real inputs and compare with the torch wrappers (:mod:`vseg.export.parity`), then write
``manifest.json`` (:mod:`vseg.export.manifest`). The manifest is written last and any old one
is removed first, so a folder whose export failed is never mistaken for a good one.

:func:`export_graphs` and :func:`open_sessions` take any {engine: wrapper} dict with example
inputs, so other model families (AR-Seg's ``keyframe`` / ``nonkey``) reuse them.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from pathlib import Path

import onnx
import torch

from vseg.data.palette import atomic_save
from vseg.errors import VsegError
from vseg.export.graphs import engine_graphs, example_inputs
from vseg.export.manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_NAME,
    file_sha256,
    model_config,
    tensor_spec,
    versions,
    weights_record,
    write_manifest,
)
from vseg.export.onnx_ops import FLAVORS, translation_table
from vseg.export.ort_custom_ops import custom_ops_used, make_session
from vseg.export.parity import (
    check_parity,
    decision_shares,
    first_frame_masks,
    record_vos_cases,
    synthetic_clip,
)
from vseg.ops import DOMAIN

DEFAULT_OPSET = 18  # the opset torch.onnx's function library is written for
PARITY_PROVIDERS = ["CPUExecutionProvider"]
VOS_MODELS = ("stm", "lite", "spvos")


def export_graph(graph: torch.nn.Module, inputs: dict[str, torch.Tensor], path: str | os.PathLike, *,
                 flavor: str, opset: int = DEFAULT_OPSET, metadata: dict[str, str] | None = None) -> onnx.ModelProto:
    """Export one wrapper (inputs by name, in its input order) to ``path``, atomically.

    The graph's inputs and outputs carry the wrapper's names; ``metadata`` goes into the
    model's metadata_props. The model passes ``onnx.checker.check_model(full_check=True)``
    (anything else is a bug, raised as such).
    """
    registry_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registry_log.level
    # The exporter's deprecation warnings and "torchvision is not installed" notes are not the user's business.
    registry_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(graph, tuple(inputs.values()), dynamo=True, verbose=False,
                                        custom_translation_table=translation_table(flavor), opset_version=opset,
                                        input_names=list(graph.input_names), output_names=list(graph.output_names))
    finally:
        registry_log.setLevel(level)
    model = program.model_proto
    names_in = [v.name for v in model.graph.input]
    names_out = [v.name for v in model.graph.output]
    if names_in != list(graph.input_names) or names_out != list(graph.output_names):
        raise RuntimeError(f"{path}: exported I/O {names_in} -> {names_out} differ from the wrapper's "
                           f"{list(graph.input_names)} -> {list(graph.output_names)}")
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model, full_check=True)
    blob = model.SerializeToString()
    atomic_save(Path(path), lambda f: f.write(blob))
    return model


def export_graphs(graphs: dict[str, torch.nn.Module], inputs: dict[str, dict[str, torch.Tensor]],
                  out_dir: str | os.PathLike, *, flavor: str, opset: int = DEFAULT_OPSET,
                  metadata: dict[str, str] | None = None) -> dict[str, dict]:
    """Export every engine to ``<out_dir>/<engine>.onnx``; returns the manifest's "engines" entry
    (file, sha256, vseg ops used, inputs and outputs with shapes and dtypes)."""
    entries = {}
    for engine, graph in graphs.items():
        path = Path(out_dir) / f"{engine}.onnx"
        model = export_graph(graph, inputs[engine], path, flavor=flavor, opset=opset,
                             metadata={**(metadata or {}), "vseg.engine": engine})
        with torch.inference_mode():
            outputs = graph(*inputs[engine].values())
        entries[engine] = {
            "file": path.name,
            "sha256": file_sha256(path),
            "custom_ops": [f"{DOMAIN}::{op}" for op in custom_ops_used(model)],
            "inputs": [tensor_spec(n, t) for n, t in inputs[engine].items()],
            "outputs": [tensor_spec(n, t) for n, t in zip(graph.output_names, outputs)],
        }
    return entries


def open_sessions(out_dir: str | os.PathLike, entries: dict[str, dict], providers: list | None = None) -> dict:
    """{engine: onnxruntime session} for the engines of a folder (see :func:`make_session`)."""
    return {engine: make_session(Path(out_dir) / entry["file"], providers) for engine, entry in entries.items()}


def _check_options(model: torch.nn.Module, flavor: str, height: int, width: int, objects: int, capacity: int,
                   parity_frames: int, tolerance: float) -> None:
    """One-line VsegErrors for options a user can get wrong."""
    if flavor not in FLAVORS:
        raise VsegError(f"export flavour must be one of {', '.join(FLAVORS)}, got {flavor!r}")
    stride = model.stride
    if height <= 0 or width <= 0 or height % stride or width % stride:
        raise VsegError(f"engine size {height}x{width}: height and width must be positive multiples of {stride}")
    if objects < 1 or capacity < 1:
        raise VsegError(f"engines need at least 1 object and 1 memory slot, got objects={objects}, capacity={capacity}")
    if parity_frames < 2:
        raise VsegError(f"parity needs at least 2 frames (a keyframe and a decoded frame), got {parity_frames}")
    if not tolerance > 0:
        raise VsegError(f"the parity tolerance must be > 0, got {tolerance}")


def model_for_export(name: str, weights: str | os.PathLike | None = None, random_init: bool = False,
                     ) -> tuple[torch.nn.Module, Path | None]:
    """(model in eval mode, the weights file it came from) for ``vseg export``.

    ``weights`` None: the shipped weights of ``name`` (a one-line VsegError when none ship).
    ``random_init``: a freshly initialised model with the default config, for testing the
    export path only (its engines segment nothing useful); exclusive with ``weights``.
    """
    from vseg.models.registry import build_model
    from vseg.models.weights import load_named_model, shipped_weights

    if name not in (*VOS_MODELS, "arseg"):
        raise VsegError(f"vseg export --model takes {', '.join(VOS_MODELS)} or arseg, not {name!r}")
    if random_init:
        if weights is not None:
            raise VsegError("--random-init and --weights exclude each other")
        return build_model(name).eval(), None
    path = Path(weights) if weights is not None else shipped_weights(name)
    return load_named_model(name, path), path


def export_engines(model: torch.nn.Module, out_dir: str | os.PathLike, *, flavor: str = "custom",
                   height: int = 480, width: int = 864, objects: int = 4, capacity: int = 8,
                   opset: int = DEFAULT_OPSET, parity_frames: int = 3, tolerance: float = 1e-3,
                   weights: str | os.PathLike | None = None, seed: int = 0) -> dict:
    """Export a stm / lite / spvos model to an engine folder and return its manifest.

    Static engines for batch 1, frames ``height`` x ``width`` (multiples of 16), ``objects``
    object slots and ``capacity`` memory slots, in fp32. ``flavor``: "custom" (vseg custom-op
    nodes, for the TensorRT plugins) or "portable" (standard ONNX only). ``weights``: the file
    the model was loaded from (recorded with its sha256), None for an unsaved model. Parity is
    measured on ``parity_frames`` frames of synthetic clip ``seed``; an output past
    ``tolerance`` (see :mod:`vseg.export.parity`) is a one-line VsegError and no manifest is
    written. The model itself is not changed (a CPU fp32 copy is exported).
    """
    from vseg.models.registry import model_name

    name = model_name(model)
    model = copy.deepcopy(model).cpu().float().eval()
    _check_options(model, flavor, height, width, objects, capacity, parity_frames, tolerance)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise VsegError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_NAME).unlink(missing_ok=True)

    graphs = engine_graphs(model)
    inputs = example_inputs(model, height, width, objects, capacity, seed=seed)
    entries = export_graphs(graphs, inputs, out, flavor=flavor, opset=opset,
                            metadata={"vseg.model": name, "vseg.flavor": flavor})

    frames, first_ids = synthetic_clip(height, width, parity_frames, seed)
    masks, object_valid = first_frame_masks(first_ids, objects)
    cases = record_vos_cases(graphs, model, frames, masks, object_valid, capacity)
    parity = check_parity(graphs, open_sessions(out, entries, PARITY_PROVIDERS), cases, tolerance)

    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "model": name, "config": model_config(model), "weights": weights_record(model, weights),
        "flavor": flavor, "opset": opset,
        "height": height, "width": width, "stride": model.stride, "objects": objects, "capacity": capacity,
        "custom_ops": sorted({op for entry in entries.values() for op in entry["custom_ops"]}),
        "engines": entries,
        "versions": versions(),
        "parity": {"tolerance": tolerance, "frames": parity_frames, "clip_seed": seed,
                   "providers": PARITY_PROVIDERS, "decision_shares": decision_shares(cases, graphs),
                   "engines": parity},
    }
    write_manifest(out, manifest)
    return manifest


__all__ = ["DEFAULT_OPSET", "export_engines", "export_graph", "export_graphs", "model_for_export", "open_sessions"]
