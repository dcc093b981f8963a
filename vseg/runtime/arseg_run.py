"""``vseg run VIDEO --model arseg``: a compressed video in, one class-map PNG per frame out.

Source: PyAV decoding with motion vectors (streams whose vectors do not compose, with B-frames
or several reference frames, are refused with the ``vseg transcode`` fix). Schedule:
:class:`~vseg.runtime.arseg_motion.KeyframeSchedule` (I-frames, or every L frames, are
keyframes; other frames get the motion accumulated back to the keyframe). Engines:
:class:`~vseg.runtime.arseg_engines.ARSegEngines` (torch wrappers, or an exported folder in
onnxruntime): ``keyframe`` at full resolution caches its feature, ``nonkey`` runs the
low-resolution frame with the cached feature and the motion. Sinks: palette PNGs (atomic, as
produced), an optional overlay MP4 (closed properly on errors and Ctrl-C), a JSON summary.

Frames are padded (edge replicated) to multiples of 8 and the class maps cropped back.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from vseg.data.datasets import CAMVID_COLOURS
from vseg.data.encode import H264Writer
from vseg.data.palette import DAVIS_PALETTE
from vseg.data.video import VideoSource, check_motion_vectors_exact
from vseg.jsonio import write_json
from vseg.models.arseg import ARSeg, arseg_gflops, check_lr_scale, downscale, lr_size
from vseg.runtime.arseg_engines import ARSegEngines, class_map, pad_frames
from vseg.runtime.arseg_motion import KeyframeSchedule, pad_motion
from vseg.runtime.sinks import PaletteSink


def class_palette(num_classes: int) -> np.ndarray:
    """Palette [256, 3] uint8: CamVid's class colours first, the DAVIS palette for the rest."""
    palette = DAVIS_PALETTE.copy()
    count = min(num_classes, len(CAMVID_COLOURS))
    palette[:count] = np.array(CAMVID_COLOURS[:count], np.uint8)
    return palette


class OverlayWriter:
    """Class colours blended half and half over the frames, as an IP-only H.264 mp4 (frames
    cropped to even sizes, which yuv420p needs)."""

    def __init__(self, path: str | os.PathLike, height: int, width: int, palette: np.ndarray, fps: float | None):
        self.height, self.width = height - height % 2, width - width % 2
        self.palette = palette.astype(np.uint16)
        self.writer = H264Writer(path, self.width, self.height, fps=fps or 25.0)

    def write(self, rgb: np.ndarray, ids: np.ndarray) -> None:
        h, w = self.height, self.width
        blended = (rgb[:h, :w].astype(np.uint16) + self.palette[ids[:h, :w]]) // 2
        self.writer.write(blended.astype(np.uint8))

    def close(self) -> None:
        self.writer.close()


def run_arseg(video: str | os.PathLike, model: ARSeg, out_dir: str | os.PathLike, lr_scale: float = 0.5,
              keyframe_interval: int | None = None, overlay: str | os.PathLike | None = None,
              json: str | os.PathLike | None = None, *, engines: str | os.PathLike | None = None,
              providers: list | None = None, max_frames: int | None = None,
              on_frame: Callable[[int, int | None], None] | None = None) -> dict:
    """Segment ``video`` with `arseg`; returns (and with ``json`` writes) a summary dict.

    ``lr_scale``: low resolution of non-keyframes (0.3..0.9); ``keyframe_interval`` L: also key
    every L frames inside long GOPs (I-frames always are keyframes). ``engines``: an exported
    engine folder run by onnxruntime (``providers``); None runs the torch model. ``on_frame(index,
    total)`` is called after each frame is written. Summary: frames, keyframes, GFLOPs per frame
    dense (full resolution every frame) and realized, fps, per-engine time.
    """
    check_lr_scale(lr_scale)
    check_motion_vectors_exact(video)  # B-frames / several references: one line pointing to vseg transcode
    runner = ARSegEngines(model, engines, providers)
    palette = class_palette(model.num_classes)
    sink = PaletteSink(out_dir, palette)
    keyframes, start = 0, time.perf_counter()
    with VideoSource(video, motion_vectors=True) as source:
        height, width = source.height, source.width
        padded = (height + (-height % 8), width + (-width % 8))
        small = lr_size(*padded, lr_scale)
        runner.check_size(padded, small, video)
        schedule = KeyframeSchedule(height, width, keyframe_interval)
        writer = OverlayWriter(overlay, height, width, palette, source.fps) if overlay else None
        total = source.frame_count if max_frames is None else min(max_frames, source.frame_count or max_frames)
        cached = None
        try:
            for frame in source:
                if max_frames is not None and frame.index >= max_frames:
                    break
                motion = schedule.push(frame)
                x = pad_frames(frame.rgb[None])
                if motion.keyframe:
                    logits, cached = runner.keyframe(x)
                    keyframes += 1
                else:
                    mv = torch.from_numpy(pad_motion(motion.acc, *padded))[None]
                    logits = runner.nonkey(downscale(x, small), cached, mv)
                ids = class_map(logits[:, :, :height, :width])[0].numpy()
                sink.write(frame.index, ids)
                if writer is not None:
                    writer.write(frame.rgb, ids)
                if on_frame is not None:
                    on_frame(frame.index, total)
        finally:
            if writer is not None:
                writer.close()
    seconds = time.perf_counter() - start
    frames = sink.written
    cost = arseg_gflops(model.config, *padded, lr_scale)
    realized = (keyframes * cost["keyframe"] + (frames - keyframes) * cost["nonkey"]) / max(frames, 1)
    summary = {
        "video": str(video), "out": str(sink.out_dir), "overlay": str(overlay) if overlay else None,
        "model": "arseg", "backend": runner.backend, "frames": frames, "keyframes": keyframes,
        "size": [height, width], "padded_size": list(padded), "lr_scale": lr_scale, "lr_size": list(small),
        "keyframe_interval": keyframe_interval,
        "gflops_per_frame": {"dense": cost["keyframe"], "realized": realized,
                             "realized_over_dense": realized / cost["keyframe"]},
        "gflops_total": {"dense": cost["keyframe"] * frames, "realized": realized * frames},
        "seconds": seconds, "fps": frames / seconds if seconds > 0 else None,
        "engines": runner.timing_summary(), "threads": torch.get_num_threads(),
    }
    if runner.backend == "ort":
        summary["providers"] = runner.providers
    if json is not None:
        write_json(Path(json), summary)
    return summary


__all__ = ["OverlayWriter", "class_palette", "run_arseg"]
