"""Where segmentation results go, frame by frame.

:class:`PaletteSink` writes one P-mode PNG per frame (``00000.png``...) as soon as the frame is
done, each file atomically (temporary file, then rename), so an interrupted run keeps every
finished frame and never leaves a half-written one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vseg.data.palette import DAVIS_PALETTE, write_mask


class PaletteSink:
    """Write id masks [H, W] uint8 as ``<out_dir>/<index:05d>.png`` with ``palette`` [256, 3]."""

    def __init__(self, out_dir: str | Path, palette: np.ndarray | None = None):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.palette = DAVIS_PALETTE if palette is None else palette
        self.written = 0

    def path(self, index: int) -> Path:
        return self.out_dir / f"{index:05d}.png"

    def write(self, index: int, ids: np.ndarray) -> Path:
        path = write_mask(self.path(index), ids, self.palette)
        self.written += 1
        return path
