"""Where segmentation results go, frame by frame.

:class:`PaletteSink` writes one P-mode PNG per frame (``00000.png``...) as soon as the frame is
done, each file atomically (temporary file, then rename), so an interrupted run keeps every
finished frame and never leaves a half-written one. :class:`OverlaySink` writes the video
with the masks blended on (:func:`blend_masks`) as an mp4, finalized even when a run stops early.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vseg.data.palette import DAVIS_PALETTE, write_mask


def frame_png(out_dir: str | Path, index: int, names: list[str] | None = None) -> Path:
    """DAVIS naming: frame 7 is ``00007.png``; with ``names`` (a frame folder's file stems),
    frame 7 is ``<names[7]>.png``, as its annotations are named."""
    return Path(out_dir) / (f"{names[index]}.png" if names is not None else f"{index:05d}.png")


class PaletteSink:
    """Write id masks [H, W] uint8 as ``<out_dir>/<index:05d>.png`` (or by ``names``, see
    :func:`frame_png`) with ``palette`` [256, 3]."""

    def __init__(self, out_dir: str | Path, palette: np.ndarray | None = None, names: list[str] | None = None):
        self.out_dir = Path(out_dir)
        self.names = names
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.palette = DAVIS_PALETTE if palette is None else palette
        self.written = 0

    def path(self, index: int) -> Path:
        return frame_png(self.out_dir, index, self.names)

    def write(self, index: int, ids: np.ndarray) -> Path:
        path = write_mask(self.path(index), ids, self.palette)
        self.written += 1
        return path


def blend_masks(rgb: np.ndarray, ids: np.ndarray, palette: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Objects drawn over a frame: rgb uint8 [H, W, 3], ids uint8 [H, W] -> uint8 [H, W, 3] where
    object pixels are (1 - alpha) * frame + alpha * palette colour and background is the frame."""
    colours = np.asarray(palette, np.float32)[ids]
    blended = rgb.astype(np.float32) * (1 - alpha) + colours * alpha
    out = np.where((ids > 0)[..., None], blended.round(), rgb)
    return out.astype(np.uint8)


class OverlaySink:
    """The video with its masks blended on, as an IP-only H.264 mp4 (``--overlay out.mp4``).

    Frames go to a hidden temporary file beside ``path``; :meth:`close` finalizes the stream
    and renames it into place, also after an interruption (the frames so far make a valid mp4).
    H.264 needs even sizes: an odd last row or column is repeated.
    """

    def __init__(self, path: str | Path, width: int, height: int, fps: float | None, palette: np.ndarray,
                 alpha: float = 0.5) -> None:
        from vseg.data.encode import H264Writer

        self.path = Path(path)
        self.partial = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix or '.mp4'}")
        self.palette, self.alpha = palette, alpha
        self._even = (-height % 2, -width % 2)
        self._writer = H264Writer(self.partial, width + self._even[1], height + self._even[0], fps=fps or 25.0)
        self.written = 0

    def write(self, rgb: np.ndarray, ids: np.ndarray) -> None:
        frame = blend_masks(rgb, ids, self.palette, self.alpha)
        if any(self._even):
            frame = np.pad(frame, ((0, self._even[0]), (0, self._even[1]), (0, 0)), mode="edge")
        self._writer.write(frame)
        self.written += 1

    def close(self) -> Path:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self.partial.replace(self.path)
        return self.path
