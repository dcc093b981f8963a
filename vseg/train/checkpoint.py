"""Resumable training checkpoints: one folder per saved step, no pickled weights.

Layout of ``<out>/checkpoints/step_0000500/``:

- ``weights.safetensors``: every trained module's state (``<module>.<tensor>``: the model,
  the teacher, feature adapters) and the torch CPU random state as ``rng.torch_cpu``;
- ``optimizer.pt``: the optimizers' state dicts, the only ``torch.save`` file (Adam moments
  are nested dicts that safetensors cannot hold); loaded with ``weights_only=True``;
- ``state.json``: step, config, loss history, validation history and small counters
  (e.g. the adaptive distillation LR's running ratio).

A folder is written under a temporary name and renamed when complete, so an interrupted save
never leaves a half checkpoint that a resume would pick up.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from torch import nn

from vseg.errors import InputError

STEP_PREFIX = "step_"


def checkpoint_name(step: int) -> str:
    return f"{STEP_PREFIX}{step:07d}"


def save_checkpoint(folder: str | Path, step: int, modules: dict[str, nn.Module],
                    optimizers: dict[str, torch.optim.Optimizer], state: dict, keep: int = 2) -> Path:
    """Write ``folder/step_XXXXXXX`` (see the module docstring); keep the newest ``keep`` folders."""
    from safetensors.torch import save_file

    root = Path(folder)
    final = root / checkpoint_name(step)
    partial = root / (checkpoint_name(step) + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    tensors = {f"{name}.{key}": value.detach().cpu().contiguous()
               for name, module in modules.items() for key, value in module.state_dict().items()}
    tensors["rng.torch_cpu"] = torch.get_rng_state()
    save_file(tensors, str(partial / "weights.safetensors"))
    torch.save({name: opt.state_dict() for name, opt in optimizers.items()}, partial / "optimizer.pt")
    (partial / "state.json").write_text(json.dumps({"step": step, **state}, indent=1) + "\n")
    if final.exists():
        shutil.rmtree(final)
    partial.rename(final)
    for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old)
    return final


def list_checkpoints(folder: str | Path) -> list[Path]:
    """Complete checkpoint folders under ``folder``, oldest first."""
    root = Path(folder)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(STEP_PREFIX)
             and p.name[len(STEP_PREFIX):].isdigit() and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(STEP_PREFIX):]))


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder itself, or the newest one inside a ``checkpoints`` folder or a run
    folder (``<out>``); an InputError when there is none."""
    path = Path(path)
    if (path / "state.json").is_file():
        return path
    for candidate in (path, path / "checkpoints"):
        found = list_checkpoints(candidate)
        if found:
            return found[-1]
    raise InputError(f"{path}: no training checkpoint here (expected {STEP_PREFIX}NNNNNNN/state.json)")


def read_checkpoint_state(path: str | Path) -> dict:
    """state.json of a checkpoint (``path`` as :func:`resolve_checkpoint` takes it)."""
    folder = resolve_checkpoint(path)
    try:
        return json.loads((folder / "state.json").read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{folder}: unreadable checkpoint state ({e})") from None


def load_checkpoint(path: str | Path, modules: dict[str, nn.Module],
                    optimizers: dict[str, torch.optim.Optimizer]) -> dict:
    """Restore modules, optimizers and the torch random state in place; returns state.json."""
    from safetensors.torch import load_file

    folder = resolve_checkpoint(path)
    try:
        tensors = load_file(str(folder / "weights.safetensors"))
        optimizer_states = torch.load(folder / "optimizer.pt", weights_only=True)
        state = json.loads((folder / "state.json").read_text())
    except (OSError, ValueError, RuntimeError) as e:
        raise InputError(f"{folder}: unreadable checkpoint ({e})") from None
    for name, module in modules.items():
        prefix = name + "."
        own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        missing, unexpected = module.load_state_dict(own, strict=False)
        if missing or unexpected:
            raise InputError(f"{folder}: checkpoint does not fit {name!r} "
                             f"({len(missing)} missing, {len(unexpected)} unexpected tensors)")
    for name, opt in optimizers.items():
        if name not in optimizer_states:
            raise InputError(f"{folder}: checkpoint has no optimizer state for {name!r}")
        opt.load_state_dict(optimizer_states[name])
    if "rng.torch_cpu" in tensors:
        torch.set_rng_state(tensors["rng.torch_cpu"])
    return state
