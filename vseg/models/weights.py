"""Weights shipped inside the package, found by model name (``--model lite``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from vseg.errors import InputError, VsegError
from vseg.models.registry import build_model, load_model, model_name
from vseg.models.spvos import SpVOS, spvos_from_stm

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def shipped_weights(name: str) -> Path:
    """Path of the shipped safetensors for model ``name``; VsegError when none is shipped."""
    path = WEIGHTS_DIR / f"{name}.safetensors"
    if not path.is_file():
        shipped = sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors"))
        raise VsegError(f"no shipped weights for model {name!r} (shipped: {', '.join(shipped) or 'none'}); "
                        f"pass --weights FILE.safetensors or train with `vseg train --model {name}`")
    return path


def load_named_model(name: str, weights: str | Path | None = None):
    """Model ``name`` from ``weights`` (default: the shipped file), as fp32 in eval mode."""
    path = Path(weights) if weights is not None else shipped_weights(name)
    model = load_model(path)
    if model_name(model) != name:
        raise VsegError(f"{path}: holds a {model_name(model)!r} model, not {name!r}")
    return model.float().eval()


def load_spvos(weights: str | Path, **gating) -> SpVOS:
    """spvos from trained spvos weights, or from stm weights given fresh (untrained) gates, the
    start of spvos training and the baseline trained gates are measured against; fp32 in eval mode.
    gating: SpVOSConfig gating fields for the fresh gates (spvos weights keep their own)."""
    model = load_model(weights)
    if model_name(model) == "stm":
        model = spvos_from_stm(model, **gating)
    if model_name(model) != "spvos":
        raise InputError(f"{weights}: holds a {model_name(model)!r} model, not spvos or stm")
    return model.float().eval()


def interpolate_weights(start: str | Path, end: str | Path, t: float, min_side: int | None = None):
    """The model whose every float tensor is ``(1 - t) * start + t * end`` (integer buffers such
    as BatchNorm's batch counts come from ``end``), fp32 in eval mode.

    Both files must hold the same model (name and config): interpolating a fine-tuned network
    with the weights it started from (WiSE-FT, Wortsman et al., CVPR 2022) can keep what each
    end is good at; see the stm model card. min_side: the mix's working size, where the two
    files' own may differ (a fine-tune at another scale than its start's); None: they must agree."""
    if not 0.0 <= t <= 1.0:
        raise VsegError(f"interpolation weight must be in [0, 1], got {t}")
    a, b = load_model(start), load_model(end)
    if min_side is not None:
        a, b = (_set_min_side(model, min_side, path) for model, path in ((a, start), (b, end)))
    if model_name(a) != model_name(b) or a.config != b.config:
        raise InputError(f"{start} and {end} hold different models ({model_name(a)!r}, {model_name(b)!r} or "
                         "their configs differ): only weights of one architecture interpolate")
    ends = b.state_dict()
    mixed = {name: (tensor.float() * (1 - t) + ends[name].float() * t) if tensor.is_floating_point() else ends[name]
             for name, tensor in a.state_dict().items()}
    a.float().load_state_dict(mixed)
    return a.eval()


def with_min_side(weights: str | Path, min_side: int):
    """The model of ``weights`` with ``min_side`` (the working size's shorter side, see
    vseg.runtime.framing) set in its config and every tensor unchanged; fp32, eval mode.

    For weights trained at a scale (``vseg train --scale-range``) without ``--min-side``."""
    return _set_min_side(load_model(weights), min_side, weights).float().eval()


def _set_min_side(model, min_side: int, source: str | Path):
    """``model`` rebuilt with ``min_side`` in its config, its tensors unchanged (``source`` names it in errors)."""
    if min_side < 0:
        raise VsegError(f"min_side must be 0 or more, got {min_side}")
    if not hasattr(model.config, "min_side"):
        raise InputError(f"{source}: a {model_name(model)!r} model has no working size (VOS models only)")
    rebuilt = build_model(model_name(model), config=dataclasses.replace(model.config, min_side=min_side))
    rebuilt.load_state_dict(model.state_dict())
    return rebuilt
