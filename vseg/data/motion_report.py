"""`vseg probe`: what a video holds and whether its motion vectors can drive AR-Seg.

Decodes the first frames with motion vectors and summarises the GOP structure (picture
types, keyframe positions), the motion (mean |mv| per frame, mean |accumulated mv| back to
the keyframe, share of intra cells) and the problems that make accumulation ambiguous.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from vseg.data.motion import MotionAccumulator
from vseg.data.video import VideoSource


def motion_report(path: str | Path, max_frames: int | None = 48) -> dict:
    """Summarise up to ``max_frames`` frames of ``path`` (None: all). Returns a JSON-able dict."""
    frames = []
    with VideoSource(path, motion_vectors=True) as src:
        acc = MotionAccumulator(src.height, src.width)
        for frame in src:
            if max_frames is not None and frame.index >= max_frames:
                break
            field, _ = acc.push(frame)
            frames.append({
                "index": frame.index,
                "pict_type": frame.pict_type,
                "keyframe": frame.is_keyframe,
                "mean_abs_mv": float(np.abs(frame.mv).mean()),
                "mean_abs_acc": float(np.hypot(field[0], field[1]).mean()),
                "intra_share": float(frame.intra.mean()),
                "forward_vectors": frame.future_reference,
            })
        info = src.info
        meta = {"path": str(src.path), "width": src.width, "height": src.height, "fps": src.fps,
                "frame_count": src.frame_count, "codec": src.codec}
    if any(f["pict_type"] == "B" or f["forward_vectors"] for f in frames):
        info = dataclasses.replace(info, has_b_frames=True)  # seen in the frames, not only the header
    keyframes = [f["index"] for f in frames if f["keyframe"] or f["pict_type"] == "I"]
    gaps = sorted({b - a for a, b in zip(keyframes, keyframes[1:])})
    return {
        **meta,
        "has_b_frames": info.has_b_frames,
        "max_ref_frames": info.max_ref_frames,
        "problems": info.problems(),
        "motion_vectors_exact": not info.problems(),
        "frames_scanned": len(frames),
        "gop": "".join(f["pict_type"] for f in frames),
        "keyframes": keyframes,
        "keyframe_intervals": gaps,
        "frames": frames,
    }
