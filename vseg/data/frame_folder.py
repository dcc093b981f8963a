"""A folder of frame images read like a video: DAVIS's ``JPEGImages/480p/<seq>/`` or
YouTube-VOS's ``<split>/JPEGImages/<video>/``, which is how VOS datasets ship their videos.

:class:`FrameFolder` has :class:`~vseg.data.video.VideoSource`'s interface for what the VOS
runtime reads (``width``, ``height``, ``fps``, ``frame_count``, iteration yielding
:class:`~vseg.data.video.DecodedFrame`), plus ``names``: the frames' file stems in order
(YouTube-VOS names its frames by their number in the original 30 fps video, 00000, 00005...,
and its annotations the same way, so masks and outputs go by these names rather than by index).
Frames are read one at a time; there are no motion vectors (AR-Seg needs a compressed video).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from vseg.data.datasets import IMAGE_SUFFIXES, read_frame
from vseg.data.video import DecodedFrame, VideoSource
from vseg.errors import InputError


class FrameFolder:
    """The images of ``path`` (.jpg, .jpeg, .png), in name order, as frames (module docstring)."""

    fps = None  # a folder of images has no frame rate

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise InputError(f"{self.path}: no such folder of frames")
        self.files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.files:
            raise InputError(f"{self.path}: no frame images (.jpg, .jpeg, .png) in the folder")
        self.names = [p.stem for p in self.files]
        if len(set(self.names)) != len(self.names):
            raise InputError(f"{self.path}: two frames share a name ({_first_repeat(self.names)}.*)")
        self.height, self.width = read_frame(self.files[0]).shape[:2]
        self.frame_count = len(self.files)

    def __iter__(self) -> Iterator[DecodedFrame]:
        for index, path in enumerate(self.files):
            rgb = read_frame(path)
            if rgb.shape[:2] != (self.height, self.width):
                raise InputError(f"{path}: frame is {rgb.shape[1]}x{rgb.shape[0]}, the folder's first is "
                                 f"{self.width}x{self.height}")
            yield DecodedFrame(index, rgb, "?", index == 0)

    def close(self) -> None:
        """Nothing is held open between frames (a VideoSource closes its container here)."""

    def __enter__(self) -> FrameFolder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _first_repeat(names: list[str]) -> str:
    seen = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return ""


def open_frames(path: str | Path) -> FrameFolder | VideoSource:
    """What the VOS runtime reads frames from: a folder of images, or a video file (decoded
    without motion vectors)."""
    path = Path(path)
    return FrameFolder(path) if path.is_dir() else VideoSource(path, motion_vectors=False)
