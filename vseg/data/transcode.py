"""Re-encode any readable video as IP-only H.264, so its motion vectors compose exactly.

B-frames and several reference frames make vectors accumulated back to a keyframe
ambiguous (see :func:`vseg.data.video.check_motion_vectors_exact`); the output of
:func:`transcode` has neither, and a keyframe exactly every ``keyint`` frames.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vseg.data.encode import H264Writer
from vseg.data.video import VideoSource
from vseg.errors import InputError, VsegError

_OUTPUT_SUFFIXES = (".mp4", ".mov", ".mkv")
_DEFAULT_FPS = 25.0  # for sources whose container gives no frame rate


@dataclass(frozen=True)
class TranscodeStats:
    """What :func:`transcode` wrote. ``padded`` is (rows, cols) added to reach even sizes."""

    src: Path
    dst: Path
    frames: int
    width: int
    height: int
    fps: float
    keyint: int
    source_codec: str
    padded: tuple[int, int]


def pad_to_even(rgb: np.ndarray) -> np.ndarray:
    """Repeat the last row and/or column of an RGB frame [H, W, 3] so H and W are even."""
    pad_rows, pad_cols = rgb.shape[0] % 2, rgb.shape[1] % 2
    if not pad_rows and not pad_cols:
        return rgb
    return np.pad(rgb, ((0, pad_rows), (0, pad_cols), (0, 0)), mode="edge")


def transcode(src: str | Path, dst: str | Path, keyint: int = 12, crf: int = 18,
              max_frames: int | None = None,
              on_frame: Callable[[int, int | None], None] | None = None) -> TranscodeStats:
    """Re-encode ``src`` to IP-only H.264 at ``dst`` (.mp4, .mov or .mkv).

    The output has no B-frames, one reference frame and a keyframe every ``keyint`` frames
    (no scene-cut keyframes); ``crf`` sets libx264's quality. The frame rate is kept
    (25 fps when the source does not give one); frames are written at a constant rate in
    decode order, so a variable-rate source becomes constant-rate. yuv420p needs even
    sizes: an odd width or height is padded by one column/row repeating the edge, so every
    source pixel keeps its coordinates (``stats.padded`` says what was added).
    ``max_frames`` stops early; ``on_frame(i, total)`` is called after frame i (0-based)
    is written, with ``total`` the source's frame count (capped by ``max_frames``) or None.
    The output is written beside ``dst`` and renamed into place when complete, so a failed
    run leaves no partial file. Unreadable input raises :class:`InputError`.
    """
    src, dst = Path(src), Path(dst)
    if keyint < 1:
        raise VsegError(f"--keyint must be at least 1, got {keyint}")
    if dst.suffix.lower() not in _OUTPUT_SUFFIXES:
        raise VsegError(f"{dst}: output must end in {', '.join(_OUTPUT_SUFFIXES)}")
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise VsegError(f"{dst}: output would overwrite the input")
    with VideoSource(src, motion_vectors=False) as source:
        fps = source.fps or _DEFAULT_FPS
        total = source.frame_count
        if max_frames is not None:
            total = max_frames if total is None else min(total, max_frames)
        padded = (source.height % 2, source.width % 2)
        width, height = source.width + padded[1], source.height + padded[0]
        dst.parent.mkdir(parents=True, exist_ok=True)
        # Same suffix so the muxer is chosen by extension; a leading dot hides it.
        partial = dst.with_name(f".{dst.stem}.partial{dst.suffix}")
        frames = 0
        try:
            with H264Writer(partial, width, height, fps=fps, keyint=keyint, crf=crf) as writer:
                for frame in source:
                    if max_frames is not None and frames >= max_frames:
                        break
                    rgb = frame.rgb
                    if rgb.shape[:2] != (source.height, source.width):
                        raise InputError(f"{src}: frame {frame.index} is {rgb.shape[1]}x"
                                         f"{rgb.shape[0]}, the stream said {source.width}x"
                                         f"{source.height} (size changes are not supported)")
                    writer.write(pad_to_even(rgb))
                    frames += 1
                    if on_frame is not None:
                        on_frame(frame.index, total)
            if frames == 0:
                raise InputError(f"{src}: no frames could be decoded")
            os.replace(partial, dst)
        finally:
            if partial.exists():
                partial.unlink()
    return TranscodeStats(src, dst, frames, width, height, fps, keyint, source.codec, padded)
