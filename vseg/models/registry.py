"""Build VOS models by name, save/load them as safetensors, and count their cost.

``build_model("stm")`` / ``build_model("lite", use_stff=False)``: the name picks the model class
and its config dataclass; keyword overrides replace config fields. Weight files are safetensors
whose metadata carry the model name and config, so ``load_model(path)`` needs nothing else.

Cost follows the project's measuring rules: parameters of the deployed model (training-only
KD modules excluded unless asked), and GFLOPs from ``torch.utils.flop_counter.FlopCounterMode``
for one non-keyframe step (encode_key + memory read + decode) at a fixed memory capacity, run on
the meta device so no real arithmetic is done.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from vseg.errors import InputError, VsegError
from vseg.models.arseg import ARSeg, ARSegConfig
from vseg.models.lite import LiteConfig, LiteVOS
from vseg.models.spvos import SpVOS, SpVOSConfig
from vseg.models.stm import STM, MemoryNetwork, STMConfig

# arseg (video semantic segmentation) is not a MemoryNetwork; save/load treat it the same way.
MODELS: dict[str, tuple[type, type[nn.Module]]] = {
    "stm": (STMConfig, STM),
    "lite": (LiteConfig, LiteVOS),
    "spvos": (SpVOSConfig, SpVOS),
    "arseg": (ARSegConfig, ARSeg),
}


def model_names() -> list[str]:
    return sorted(MODELS)


def _lookup(name: str) -> tuple[type, type[MemoryNetwork]]:
    if name not in MODELS:
        raise VsegError(f"unknown model {name!r} (known: {', '.join(model_names())})")
    return MODELS[name]


def make_config(name: str, **overrides: Any):
    """The config dataclass of model ``name`` with ``overrides`` applied (lists become tuples)."""
    config_cls, _ = _lookup(name)
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise VsegError(f"model {name!r} has no option {', '.join(unknown)} (options: {', '.join(sorted(fields))})")
    return config_cls(**_lists_to_tuples(overrides))


def _lists_to_tuples(options: dict[str, Any]) -> dict[str, Any]:
    # JSON and command lines give lists; the frozen configs hold tuples (hashable, comparable).
    return {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}


def build_model(name: str, config=None, **overrides: Any) -> MemoryNetwork:
    """A freshly initialised model; ``config`` (the model's dataclass) or field overrides."""
    config_cls, model_cls = _lookup(name)
    if config is None:
        config = make_config(name, **overrides)
    elif overrides:
        config = dataclasses.replace(config, **_lists_to_tuples(overrides))
    if not isinstance(config, config_cls):
        raise TypeError(f"model {name!r} takes a {config_cls.__name__}, got {type(config).__name__}")
    return model_cls(config)


def model_name(model: MemoryNetwork) -> str:
    for name, (_, model_cls) in MODELS.items():
        if type(model) is model_cls:
            return name
    raise TypeError(f"{type(model).__name__} is not a registered model")


def save_model(model: MemoryNetwork, path: str | os.PathLike) -> Path:
    """Write the weights as safetensors (atomically) with the name and config in the metadata."""
    from safetensors.torch import save

    from vseg.data.palette import atomic_save

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"model": model_name(model), "config": json.dumps(dataclasses.asdict(model.config))}
    blob = save(tensors, metadata=metadata)
    atomic_save(Path(path), lambda f: f.write(blob))
    return Path(path)


def load_model(path: str | os.PathLike) -> MemoryNetwork:
    """Rebuild a model written by :func:`save_model`; a bad file is an InputError."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such weights file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, OSError, ValueError) as e:
        raise InputError(f"{path}: not a safetensors weights file ({e})") from None
    if "model" not in metadata or "config" not in metadata:
        raise InputError(f"{path}: no model name/config in the safetensors metadata (not written by vseg?)")
    try:
        config_cls, _ = _lookup(metadata["model"])
        # fields added after the file was written take the value such files had (not the new default)
        config = {**getattr(config_cls, "LEGACY_DEFAULTS", {}), **json.loads(metadata["config"])}
        model = build_model(metadata["model"], **config)
    except (VsegError, TypeError, ValueError) as e:
        raise InputError(f"{path}: cannot rebuild the model from its metadata ({e})") from None
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise InputError(f"{path}: weights do not fit {metadata['model']} "
                         f"({len(missing)} missing, {len(unexpected)} unexpected tensors)")
    return model


def count_parameters(model: nn.Module, include_training_only: bool = False) -> int:
    """Number of parameters; training-only submodules (``model.training_only``, e.g. lite's
    Smooth Blocks and discriminator) are left out unless asked for."""
    skip = set()
    if not include_training_only:
        for name in getattr(model, "training_only", ()):
            sub = getattr(model, name, None)
            if sub is not None:
                skip |= {id(p) for p in sub.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def step_gflops(model: MemoryNetwork, height: int = 480, width: int = 854, num_objects: int = 1,
                capacity: int = 8) -> dict[str, float]:
    """GFLOPs of one frame, counted by FlopCounterMode on a meta-device copy of the model.

    The frame is padded up to multiples of the stride, as the inference core does. Returns
    {"encode_key", "segment" (memory read + decode over ``capacity`` memory slots, all of which
    a static engine computes), "encode_value" (one memory write), "step" (encode_key + segment:
    a non-keyframe step)}.
    """
    s = model.stride
    hp, wp = -(-height // s) * s, -(-width // s) * s
    meta = _meta_copy(model)
    with torch.device("meta"):
        frame = torch.rand(1, 3, hp, wp)
        masks = torch.rand(1, num_objects, hp, wp)
        mem_keys = torch.rand(1, model.key_dim, capacity, hp // s, wp // s)
        mem_values = torch.rand(1, num_objects, model.value_dim, capacity, hp // s, wp // s)
        mem_valid = torch.ones(1, capacity, dtype=torch.bool)
    flops = {}
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            feats = meta.encode_key(frame)
        flops["encode_key"] = counter.get_total_flops()
        with FlopCounterMode(display=False) as counter:
            meta.segment(feats.key, feats.feat16, feats.skip8, feats.skip4, mem_keys, mem_values, mem_valid)
        flops["segment"] = counter.get_total_flops()
        with FlopCounterMode(display=False) as counter:
            meta.encode_value(frame, masks, feats.feat16)
        flops["encode_value"] = counter.get_total_flops()
    flops["step"] = flops["encode_key"] + flops["segment"]
    return {k: v / 1e9 for k, v in flops.items()}


def _meta_copy(model: MemoryNetwork) -> MemoryNetwork:
    """The same architecture with meta tensors (no memory, no arithmetic), in eval mode."""
    with torch.device("meta"):
        meta = type(model)(model.config)
    return meta.eval()
