"""H.264 writing with settings that keep motion vectors exact.

AR-Seg composes motion vectors back to the keyframe, which is only well defined when every
inter frame predicts from the frame just before it. :class:`H264Writer` therefore encodes
IP-only: no B-frames, one reference frame, a fixed keyframe interval and no scene-cut
keyframes (``x264`` options ``bframes=0:ref=1:keyint=L:min-keyint=L:scenecut=0``).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def ip_only_options(keyint: int, crf: int) -> dict[str, str]:
    """libx264 options for an IP-only stream with a keyframe every ``keyint`` frames."""
    if keyint < 1:
        raise ValueError("keyint must be at least 1")
    return {
        "crf": str(crf),
        "preset": "veryfast",
        "tune": "zerolatency",  # no lookahead, no B-frames, frames out as they go in
        "x264-params": f"bframes=0:ref=1:keyint={keyint}:min-keyint={keyint}:scenecut=0:open-gop=0",
        "bf": "0",
        "refs": "1",
        "g": str(keyint),
    }


class H264Writer:
    """Write RGB uint8 frames [H, W, 3] to an IP-only H.264 mp4.

    Width and height must be even (yuv420p); frames of another size are an error.
    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, path: str | Path, width: int, height: int, fps: float = 25.0,
                 keyint: int = 12, crf: int = 18):
        if width % 2 or height % 2:
            raise ValueError(f"H.264 needs even frame sizes, got {width}x{height}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.width, self.height = width, height
        self._container = av.open(str(self.path), mode="w")
        rate = Fraction(fps).limit_denominator(1001)
        self._stream = self._container.add_stream("libx264", rate=rate)
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = ip_only_options(keyint, crf)
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        if rgb.shape != (self.height, self.width, 3) or rgb.dtype != np.uint8:
            raise ValueError(f"expected uint8 [{self.height}, {self.width}, 3], got {rgb.dtype} {rgb.shape}")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.frames
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self._container is None:
            return
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None

    def __enter__(self) -> "H264Writer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
