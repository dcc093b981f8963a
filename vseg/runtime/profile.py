"""`vseg profile`: speed, cost and memory of one backend on one video.

:func:`profile_vos` warms the backend up, then runs the video twice through a fresh
:class:`~vseg.runtime.inference_core.InferenceCore` each time:

- end to end: decoding (PyAV) included, frames as the decoder hands them over;
- without decoding: the same frames decoded beforehand, so only the runtime is timed; this
  pass gives the per-frame latencies (p50/p90/p99, keyframes vs the others), the time per
  engine call and the per-frame GFLOPs (dense and realized).

Peak memory: the process's peak resident set (``resource.getrusage``, no psutil) and, when the
backend runs torch on a GPU, ``torch.cuda.max_memory_allocated``. Without a video, a synthetic
clip is rendered (at the engine folder's size when the backend has a fixed one) and its first
ground-truth mask used; a user's video without a mask gets one centred box as its object.
:func:`plot_latency` draws the per-frame latencies coloured by frame kind (matplotlib, Agg).
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vseg.data.frame_folder import open_frames
from vseg.data.palette import atomic_save, read_mask
from vseg.errors import InputError, VsegError
from vseg.runtime.backends import Backend
from vseg.runtime.inference_core import InferenceCore
from vseg.runtime.mirrored import MirroredCore, make_core
from vseg.runtime.policies import KEYFRAME_KINDS

KIND_COLOURS = {"first": "black", "memory": "tab:red", "refresh": "tab:orange", "sparse": "tab:green",
                "plain": "tab:blue"}


def _percentiles(values_ms: list[float]) -> dict[str, float | None]:
    if not values_ms:
        return {"p50": None, "p90": None, "p99": None, "mean": None}
    p50, p90, p99 = np.percentile(values_ms, [50, 90, 99])
    return {"p50": round(float(p50), 3), "p90": round(float(p90), 3), "p99": round(float(p99), 3),
            "mean": round(float(np.mean(values_ms)), 3)}


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20  # Linux: KiB, macOS: bytes


def _centred_box(height: int, width: int) -> np.ndarray:
    ids = np.zeros((height, width), np.uint8)
    ids[height // 4: height - height // 4, width // 4: width - width // 4] = 1
    return ids


class _Clip:
    """The video to profile and its first-frame id mask (a synthetic clip in a temp folder)."""

    def __init__(self, backend: Backend, video, mask, frames: int, height: int, width: int, seed: int) -> None:
        self._tmp = None
        if video is None:
            from vseg.data.synth_vos import generate_vos

            height, width = backend.static_size or (height, width)
            self._tmp = tempfile.TemporaryDirectory(prefix="vseg-profile-")
            made = generate_vos(self._tmp.name, clips=1, seed=seed, frames=frames, height=height, width=width,
                                val_fraction=0.0)
            name = made["train"][0]
            video = Path(self._tmp.name) / "videos" / f"{name}.mp4"
            mask = Path(self._tmp.name) / "Annotations" / "480p" / name / "00000.png"
        self.video = Path(video)
        with open_frames(self.video) as source:
            self.height, self.width = source.height, source.width
        if mask is None:
            self.ids = _centred_box(self.height, self.width)
        else:
            self.ids, _ = read_mask(mask)
            if self.ids.shape != (self.height, self.width):
                raise InputError(f"{mask}: mask is {self.ids.shape[0]}x{self.ids.shape[1]} but {self.video} is "
                                 f"{self.height}x{self.width}")
        self.synthetic = self._tmp is not None

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


def profile_vos(backend: Backend, *, video: str | Path | None = None, mask: str | Path | None = None,
                frames: int = 60, warmup: int = 5, height: int = 240, width: int = 432, mem_every: int = 5,
                keep_previous: bool = True, budget: float | None = None, dense_every: int | None = None,
                max_objects: int | None = None, seed: int = 0, skip_absent: bool = True,
                min_side: int | None = None, flip: bool = False) -> dict:
    """Profile ``backend`` (active) on ``video`` or a synthetic clip; returns a JSON-ready dict.

    frames: frames measured per pass (at most the video's length); warmup: frames run first and
    not measured; height/width: size of the synthetic clip. The tracked objects are the mask's,
    smallest ids first, at most ``max_objects`` and as many as the engines have object slots.
    flip: profile test-time flip augmentation (:class:`~vseg.runtime.mirrored.MirroredCore`).
    """
    if frames < 2 or warmup < 0:
        raise VsegError(f"profile needs --frames >= 2 and --warmup >= 0, got {frames} and {warmup}")
    clip = _Clip(backend, video, mask, max(frames, warmup), height, width, seed)
    try:
        present = [int(v) for v in np.unique(clip.ids) if v]
        if not present:
            raise InputError(f"{mask}: the mask has no objects (all background)")
        options = {"mem_every": mem_every, "keep_previous": keep_previous, "budget": budget,
                   "dense_every": dense_every, "skip_absent": skip_absent, "min_side": min_side}
        limits = [n for n in (max_objects, backend.static_objects) if n is not None]
        tracked = present[:min(limits, default=len(present))]

        def new_core() -> InferenceCore | MirroredCore:
            return make_core(backend, flip, **options)

        decoded = []
        with open_frames(clip.video) as source:
            for frame in source:
                decoded.append(frame.rgb)
                if len(decoded) >= max(frames, warmup):
                    break
        frames = min(frames, len(decoded))
        if warmup:
            core = new_core()
            for t in range(warmup):
                core.step(decoded[t], clip.ids if t == 0 else None, object_ids=tracked)
        if backend.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(backend.device)

        core, start = new_core(), time.perf_counter()
        with open_frames(clip.video) as source:
            for frame in source:
                if frame.index >= frames:
                    break
                core.step(frame.rgb, clip.ids if frame.index == 0 else None, object_ids=tracked)
        end_to_end = time.perf_counter() - start

        backend.reset_timings()
        core, results, start = new_core(), [], time.perf_counter()
        for t in range(frames):
            results.append(core.step(decoded[t], clip.ids if t == 0 else None, object_ids=tracked))
        runtime_only = time.perf_counter() - start
    finally:
        clip.close()

    latencies = [1000 * r.seconds for r in results]
    summary = core.summary()
    memory = {"peak_rss_mib": round(_peak_rss_mib(), 1)}
    if backend.device.type == "cuda":
        memory["cuda_max_allocated_mib"] = round(torch.cuda.max_memory_allocated(backend.device) / 2**20, 1)
    return {
        "backend": backend.describe(),
        "video": None if clip.synthetic else str(clip.video), "synthetic_clip": clip.synthetic,
        "size": [clip.height, clip.width], "engine_size": summary["engine_size"], "objects": len(tracked),
        "frames": frames, "warmup": warmup, "policy": summary["policy"], "skip_absent": summary["skip_absent"],
        "flip": summary["flip"],
        "fps_end_to_end": round(frames / end_to_end, 3), "fps_without_decoding": round(frames / runtime_only, 3),
        "latency_ms": _percentiles(latencies),
        "keyframe_latency_ms": _percentiles([x for x, r in zip(latencies, results) if r.kind in KEYFRAME_KINDS]),
        "other_latency_ms": _percentiles([x for x, r in zip(latencies, results) if r.kind not in KEYFRAME_KINDS]),
        "engine_ms": summary["engine_ms"],
        "gflops": {k: v for k, v in summary["gflops"].items() if k != "per_frame"},
        "frame_kinds": summary["frame_kinds"],
        "memory": memory,
        "per_frame": [{"index": r.frame_index, "kind": r.kind, "ms": round(x, 3), "dense_gflops": round(r.gflops.dense, 4),
                       "realized_gflops": round(r.gflops.realized, 4)} for x, r in zip(latencies, results)],
        **{k: summary[k] for k in ("sparse",) if k in summary},
    }


def plot_latency(result: dict, path: str | Path) -> Path:
    """Per-frame latency (ms) over the frame index, one colour per frame kind, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["per_frame"]
    fig, ax = plt.subplots(figsize=(8, 3.5), dpi=120)
    ax.plot([r["index"] for r in rows], [r["ms"] for r in rows], color="lightgray", linewidth=1, zorder=1)
    for kind in dict.fromkeys(r["kind"] for r in rows):
        picked = [r for r in rows if r["kind"] == kind]
        ax.scatter([r["index"] for r in picked], [r["ms"] for r in picked], s=14, zorder=2,
                   color=KIND_COLOURS.get(kind, "tab:gray"), label=f"{kind} ({len(picked)})")
    described = result["backend"]
    ax.set_title(f"{described['model']} on {described['backend']} ({', '.join(described['providers'])}), "
                 f"{result['engine_size'][0]}x{result['engine_size'][1]}", fontsize=9)
    ax.set_xlabel("frame")
    ax.set_ylabel("latency (ms, without decoding)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    atomic_save(path, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)
    return path
