"""AR-Seg's two engines, run by torch or by onnxruntime from an exported folder.

- ``keyframe``: frame [1, 3, H, W] float32 in [0, 1] -> logits [1, K, H, W], feature
  [1, C, H/8, W/8] (cached by the runtime);
- ``nonkey``: frame_lr [1, 3, H', W'] (the frame downscaled, multiples of 8), cached_feature
  [1, C, H/8, W/8], mv float32 [1, 2, H/4, W/4] (accumulated back to the keyframe) -> logits
  [1, K, H, W].

:class:`KeyframeGraph` / :class:`NonkeyGraph` wrap the model's stage methods with the names the
exported graphs carry (the export's wrapper convention: positional inputs in ``input_names``
order, a tuple in ``output_names`` order). :func:`export_arseg_engines` writes an engine folder
(``keyframe.onnx``, ``nonkey.onnx``, ``manifest.json``) through :mod:`vseg.export`'s exporter
and parity check; :class:`ARSegEngines` runs either the wrappers or such a folder.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vseg.errors import InputError, VsegError
from vseg.models.arseg import (
    MV_BLOCK,
    STRIDE,
    ARSeg,
    check_lr_scale,
    downscale,
    lr_size,
)

ENGINES = ("keyframe", "nonkey")


def pad_frames(frames: np.ndarray) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float32 [T, 3, Hp, Wp] in [0, 1], edges replicated up to multiples of 8."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255)
    h, w = x.shape[-2:]
    return F.pad(x, (0, -w % STRIDE, 0, -h % STRIDE), mode="replicate")


def class_map(logits: torch.Tensor) -> torch.Tensor:
    """logits [N, K, H, W] -> class ids uint8 [N, H, W] (the first class among equal maxima, as
    argmax). A running maximum over the K channels: on a CPU several times faster than
    ``argmax(1)``, whose reduction runs across the channel planes."""
    best = logits[:, 0].clone()
    ids = torch.zeros(best.shape, dtype=torch.uint8, device=logits.device)
    for k in range(1, logits.shape[1]):
        better = logits[:, k] > best
        best = torch.where(better, logits[:, k], best)
        ids.masked_fill_(better, k)
    return ids


class KeyframeGraph(nn.Module):
    """``keyframe`` engine: frame -> (logits, feature)."""

    input_names = ("frame",)
    output_names = ("logits", "feature")

    def __init__(self, model: ARSeg) -> None:
        super().__init__()
        self.model = model

    def forward(self, frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.keyframe(frame)


class NonkeyGraph(nn.Module):
    """``nonkey`` engine: (frame_lr, cached_feature, mv) -> (logits,)."""

    input_names = ("frame_lr", "cached_feature", "mv")
    output_names = ("logits",)

    def __init__(self, model: ARSeg) -> None:
        super().__init__()
        self.model = model

    def forward(self, frame_lr: torch.Tensor, cached_feature: torch.Tensor, mv: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.model.nonkey(frame_lr, cached_feature, mv),)


def engine_graphs(model: ARSeg) -> dict[str, nn.Module]:
    return {"keyframe": KeyframeGraph(model).eval(), "nonkey": NonkeyGraph(model).eval()}


def engine_inputs(model: ARSeg, frame: torch.Tensor, mv: torch.Tensor, lr_scale: float) -> dict[str, dict]:
    """Inputs of both engines for one padded frame [1, 3, H, W] and field [1, 2, H/4, W/4] (the
    cached feature is the frame's own keyframe feature)."""
    with torch.no_grad():
        feature = model.hr_feature(frame)
    small = downscale(frame, lr_size(*frame.shape[-2:], lr_scale))
    return {"keyframe": {"frame": frame}, "nonkey": {"frame_lr": small, "cached_feature": feature, "mv": mv}}


def _parity_cases(model: ARSeg, height: int, width: int, lr_scale: float, seed: int) -> dict[str, list[dict]]:
    """Two cases per engine: smooth random frames and a smooth field of a few pixels (enough to
    exercise interpolation, zeros outside the map and every CReFF tap)."""
    g = torch.Generator().manual_seed(seed)
    cases: dict[str, list[dict]] = {engine: [] for engine in ENGINES}
    for _ in range(2):
        coarse = torch.rand(1, 3, height // 16 + 1, width // 16 + 1, generator=g)
        frame = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
        field = torch.randn(1, 2, height // 64 + 1, width // 64 + 1, generator=g) * 6
        mv = F.interpolate(field, size=(height // MV_BLOCK, width // MV_BLOCK), mode="bilinear", align_corners=False)
        for engine, inputs in engine_inputs(model, frame, mv, lr_scale).items():
            cases[engine].append(inputs)
    return cases


def export_arseg_engines(model: ARSeg, out_dir: str | os.PathLike, *, flavor: str = "custom", height: int = 360,
                         width: int = 480, lr_scale: float | None = None, tolerance: float = 1e-3,
                         weights: str | os.PathLike | None = None, seed: int = 0) -> dict:
    """Export `arseg` to an engine folder (``keyframe.onnx``, ``nonkey.onnx``, ``manifest.json``).

    Static shapes for frames ``height`` x ``width`` (multiples of 8) and the low resolution of
    ``lr_scale`` (default: the model's). ``flavor`` "custom" keeps ``vseg::MVWarp`` nodes,
    "portable" uses GridSample. Parity with the torch wrappers (onnxruntime, CPU) is checked on
    two synthetic cases; past ``tolerance`` it is a one-line VsegError and no manifest is written.
    """
    # imported here: running engines with torch needs none of the ONNX stack
    from vseg.export.export_vos import (
        DEFAULT_OPSET,
        PARITY_PROVIDERS,
        export_graphs,
        open_sessions,
    )
    from vseg.export.manifest import (
        FORMAT,
        FORMAT_VERSION,
        MANIFEST_NAME,
        model_config,
        versions,
        weights_record,
        write_manifest,
    )
    from vseg.export.onnx_ops import FLAVORS
    from vseg.export.parity import check_parity

    scale = check_lr_scale(model.config.lr_scale if lr_scale is None else lr_scale)
    if flavor not in FLAVORS:
        raise VsegError(f"export flavour must be one of {', '.join(FLAVORS)}, got {flavor!r}")
    if height <= 0 or width <= 0 or height % STRIDE or width % STRIDE:
        raise VsegError(f"engine size {height}x{width}: height and width must be positive multiples of {STRIDE}")
    model = copy.deepcopy(model).cpu().float().eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    graphs = engine_graphs(model)
    cases = _parity_cases(model, height, width, scale, seed)
    entries = export_graphs(graphs, {engine: cases[engine][0] for engine in ENGINES}, out, flavor=flavor,
                            metadata={"vseg.model": "arseg", "vseg.flavor": flavor})
    parity = check_parity(graphs, open_sessions(out, entries, PARITY_PROVIDERS), cases, tolerance)
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "model": "arseg", "config": model_config(model), "weights": weights_record(model, weights),
        "flavor": flavor, "opset": DEFAULT_OPSET, "height": height, "width": width, "stride": STRIDE,
        "lr_scale": scale, "lr_size": list(lr_size(height, width, scale)),
        "custom_ops": sorted({op for entry in entries.values() for op in entry["custom_ops"]}),
        "engines": entries, "versions": versions(),
        "parity": {"tolerance": tolerance, "cases": 2, "seed": seed, "providers": PARITY_PROVIDERS, "engines": parity},
    }
    write_manifest(out, manifest)
    return manifest


class ARSegEngines:
    """Runs ``keyframe`` / ``nonkey`` with the torch wrappers (``engines_dir`` None) or with
    onnxruntime sessions of an exported folder, timing every call.

    An engine folder is checked against ``model`` (name, config, weights) and its static frame
    size is ``size`` = (H, W), its low resolution ``lr_size``; torch takes any size.
    """

    def __init__(self, model: ARSeg, engines_dir: str | os.PathLike | None = None, providers: list | None = None):
        self.model = model.eval()
        self.timings: dict[str, list[float]] = {engine: [] for engine in ENGINES}
        self.size = self.lr_size = None
        if engines_dir is None:
            self.backend = "torch"
            self._graphs = engine_graphs(self.model)
            self._sessions = None
            return
        from vseg.export.manifest import check_model_matches, read_manifest
        from vseg.export.ort_custom_ops import make_session

        manifest = read_manifest(engines_dir)
        check_model_matches(manifest, self.model, engines_dir)
        self.backend = "ort"
        self.size, self.lr_size = (manifest["height"], manifest["width"]), tuple(manifest["lr_size"])
        self._sessions = {engine: make_session(Path(engines_dir) / manifest["engines"][engine]["file"], providers)
                          for engine in ENGINES}
        self.providers = self._sessions["keyframe"].get_providers()

    def check_size(self, padded: tuple[int, int], small: tuple[int, int], video: str | os.PathLike) -> None:
        """InputError unless a static engine folder fits the padded frame and LR sizes."""
        if self.size is not None and (tuple(padded) != self.size or tuple(small) != self.lr_size):
            raise InputError(f"{video}: padded frames {padded[0]}x{padded[1]} (low resolution {small[0]}x{small[1]}) "
                             f"do not fit the engines, built for {self.size[0]}x{self.size[1]} "
                             f"({self.lr_size[0]}x{self.lr_size[1]}); export them at this size")

    def _run(self, engine: str, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        start = time.perf_counter()
        if self._sessions is None:
            with torch.inference_mode():
                outputs = list(self._graphs[engine](*inputs.values()))
        else:
            feeds = {name: t.numpy() for name, t in inputs.items()}
            outputs = [torch.from_numpy(a) for a in self._sessions[engine].run(None, feeds)]
        self.timings[engine].append(time.perf_counter() - start)
        return outputs

    def keyframe(self, frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, feature = self._run("keyframe", {"frame": frame})
        return logits, feature

    def nonkey(self, frame_lr: torch.Tensor, cached_feature: torch.Tensor, mv: torch.Tensor) -> torch.Tensor:
        (logits,) = self._run("nonkey", {"frame_lr": frame_lr, "cached_feature": cached_feature, "mv": mv})
        return logits

    def timing_summary(self) -> dict[str, dict]:
        return {engine: {"calls": len(t), "total_ms": round(1000 * sum(t), 3),
                         "mean_ms": round(1000 * sum(t) / len(t), 3) if t else None} for engine, t in self.timings.items()}


__all__ = [
    "ENGINES",
    "ARSegEngines",
    "KeyframeGraph",
    "NonkeyGraph",
    "class_map",
    "engine_graphs",
    "engine_inputs",
    "export_arseg_engines",
    "pad_frames",
]
