"""AR-Seg's frame schedule: which frames are keyframes, and the motion back to the keyframe.

:class:`KeyframeSchedule` follows a decoded stream (:class:`vseg.data.video.DecodedFrame` with
motion vectors). A frame is a keyframe when it is an I-frame (the codec gives no vectors across
one, so the cached feature cannot be carried over it) or, with ``keyframe_interval`` L, when L
frames have passed since the last keyframe (long GOPs). Every other frame gets the field
accumulated back to its keyframe by :class:`vseg.data.motion.MotionAccumulator`:
``keyframe_pos = p + acc(p)``, float32 [2, ceil(H/4), ceil(W/4)] in frame pixels.

:func:`decode_with_motion` runs a whole video through the schedule (training, evaluation);
the runtime pushes frames one at a time. :func:`pad_motion` extends a field to a padded frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vseg.data.motion import MotionAccumulator, grid_shape
from vseg.data.video import DecodedFrame, VideoSource, check_motion_vectors_exact
from vseg.errors import VsegError

BLOCK = 4  # vseg.data.video's motion-vector cells


@dataclass
class FrameMotion:
    """One frame's place in the schedule: ``keyframe``, ``distance`` (frames since the keyframe,
    0 on it) and ``acc`` float32 [2, Hb, Wb] (zeros on keyframes)."""

    keyframe: bool
    distance: int
    acc: np.ndarray


class KeyframeSchedule:
    """Keyframe decisions and accumulated motion for one stream of ``height`` x ``width`` frames."""

    def __init__(self, height: int, width: int, keyframe_interval: int | None = None) -> None:
        if keyframe_interval is not None and keyframe_interval < 1:
            raise VsegError(f"keyframe interval must be >= 1, got {keyframe_interval}")
        self.interval = keyframe_interval
        self.accumulator = MotionAccumulator(height, width, block=BLOCK)
        self.distance: int | None = None  # None until the first frame

    def push(self, frame: DecodedFrame) -> FrameMotion:
        """The next frame in display order (decoded with motion vectors)."""
        if frame.mv is None:
            raise ValueError("AR-Seg needs frames decoded with motion vectors")
        intra_frame = frame.is_keyframe or frame.pict_type == "I"
        due = self.interval is not None and self.distance is not None and self.distance + 1 >= self.interval
        if self.distance is None or intra_frame or due:
            self.accumulator.reset()
            self.distance = 0
            return FrameMotion(True, 0, self.accumulator.acc)
        acc, _ = self.accumulator.update(frame.mv, frame.intra)
        self.distance += 1
        return FrameMotion(False, self.distance, acc)


@dataclass
class VideoMotion:
    """A decoded video with its schedule: ``frames`` uint8 [T, H, W, 3], ``keyframe`` bool [T],
    ``distance`` int64 [T], ``acc`` float32 [T, 2, Hb, Wb]."""

    frames: np.ndarray
    keyframe: np.ndarray
    distance: np.ndarray
    acc: np.ndarray


def decode_with_motion(video: str | Path, keyframe_interval: int | None = None) -> VideoMotion:
    """Decode a whole video through a :class:`KeyframeSchedule`.

    Streams whose vectors do not compose (B-frames, several references) raise
    :class:`~vseg.errors.AmbiguousMotionError` pointing to ``vseg transcode``.
    """
    check_motion_vectors_exact(video)
    frames, keys, distances, fields = [], [], [], []
    with VideoSource(video, motion_vectors=True, block=BLOCK) as source:
        schedule = KeyframeSchedule(source.height, source.width, keyframe_interval)
        for frame in source:
            motion = schedule.push(frame)
            frames.append(frame.rgb)
            keys.append(motion.keyframe)
            distances.append(motion.distance)
            fields.append(motion.acc)
    if not frames:
        raise VsegError(f"{video}: the video has no frames")
    return VideoMotion(np.stack(frames), np.array(keys), np.array(distances, np.int64), np.stack(fields))


def pad_motion(acc: np.ndarray, height: int, width: int) -> np.ndarray:
    """Extend a field [..., 2, Hb, Wb] to a frame padded to ``height`` x ``width`` (edge cells
    repeated: padding replicates the frame's edge, and its vectors with it)."""
    hb, wb = grid_shape(height, width, BLOCK)
    extra = [(0, 0)] * (acc.ndim - 2) + [(0, hb - acc.shape[-2]), (0, wb - acc.shape[-1])]
    return np.pad(acc, extra, mode="edge") if any(e[1] for e in extra) else acc


__all__ = ["BLOCK", "FrameMotion", "KeyframeSchedule", "VideoMotion", "decode_with_motion", "pad_motion"]
