"""Index-mask PNGs with a palette (DAVIS style).

Masks are ``uint8`` arrays [H, W] of object (or class) ids, stored as P-mode PNGs. An RGB
mask is accepted on input when every colour it uses is in the palette, so a mask painted
with the DAVIS colours reads back as ids. Writes are atomic (temporary file, then rename):
an interrupted run never leaves a half-written PNG behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from vseg.errors import InputError


def davis_palette() -> np.ndarray:
    """The DAVIS / PASCAL VOC palette: [256, 3] uint8, id 0 black, 1 red, 2 green..."""
    pal = np.zeros((256, 3), np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


DAVIS_PALETTE = davis_palette()


def read_mask(path: str | os.PathLike, palette: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read an id mask.

    Returns ``(ids [H, W] uint8, palette [256, 3] uint8)``. P and L images give their indices
    directly (the P image's own palette is returned so it can be kept on write). RGB(A)
    images map each colour to its id in ``palette`` (DAVIS by default); a colour that is
    not in the palette is an error, since it names no object.
    """
    path = Path(path)
    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"{path}: not a readable image ({e})") from None
    pal = DAVIS_PALETTE if palette is None else np.asarray(palette, np.uint8)
    if img.mode == "P":
        ids = np.array(img, dtype=np.uint8)
        raw = img.getpalette() or []
        own = np.zeros((256, 3), np.uint8)
        raw = np.asarray(raw[: 256 * 3], np.uint8).reshape(-1, 3)
        own[: len(raw)] = raw
        return ids, own
    if img.mode in ("L", "1", "I", "I;16"):
        arr = np.array(img)
        if img.mode == "1":
            arr = arr.astype(np.uint8)
        if arr.max(initial=0) > 255:
            raise InputError(f"{path}: grey mask has values above 255, not object ids")
        return arr.astype(np.uint8), pal.copy()
    rgb = np.array(img.convert("RGBA"))
    if (rgb[..., 3] < 255).any() and img.mode in ("RGBA", "LA", "PA"):
        rgb[rgb[..., 3] == 0, :3] = 0  # fully transparent pixels are background
    rgb = rgb[..., :3]
    return rgb_to_ids(rgb, pal, path), pal.copy()


def rgb_to_ids(rgb: np.ndarray, palette: np.ndarray, path: str | os.PathLike = "mask") -> np.ndarray:
    """Map an RGB mask [H, W, 3] to ids through ``palette``; unknown colours are an error."""
    key = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    pal_key = (palette[:, 0].astype(np.int64) << 16) | (palette[:, 1].astype(np.int64) << 8) | palette[:, 2]
    lut: dict[int, int] = {}
    for i in range(len(pal_key) - 1, -1, -1):  # first index wins for duplicated colours
        lut[int(pal_key[i])] = i
    colours, inverse = np.unique(key.ravel(), return_inverse=True)
    unknown = [int(c) for c in colours if int(c) not in lut]
    if unknown:
        shown = ", ".join(f"#{c:06x}" for c in unknown[:4])
        more = f" and {len(unknown) - 4} more" if len(unknown) > 4 else ""
        raise InputError(
            f"{path}: RGB mask uses colours that are not objects of the palette ({shown}{more}); "
            "paint objects with the DAVIS palette or save the mask as an indexed (P-mode) PNG"
        )
    ids = np.array([lut[int(c)] for c in colours], np.uint8)[inverse]
    return ids.reshape(rgb.shape[:2])


def write_mask(path: str | os.PathLike, ids: np.ndarray, palette: np.ndarray | None = None) -> Path:
    """Write ids [H, W] as a P-mode PNG atomically; the palette defaults to DAVIS's."""
    path = Path(path)
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"mask must be [H, W], got shape {ids.shape}")
    if ids.dtype != np.uint8:
        if ids.min(initial=0) < 0 or ids.max(initial=0) > 255:
            raise ValueError("mask ids must lie in 0..255")
        ids = ids.astype(np.uint8)
    pal = DAVIS_PALETTE if palette is None else np.asarray(palette, np.uint8)
    img = Image.fromarray(ids, mode="P")
    img.putpalette(pal.reshape(-1).tolist())
    atomic_save(path, lambda f: img.save(f, format="PNG"))
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_save(path: Path, write) -> None:
    """Call ``write(fileobj)`` on a temporary file beside ``path``, then rename it into place.

    An existing ``path`` that is not a regular file (a device such as /dev/null, a folder, a
    fifo) is refused: renaming over it would replace it."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise InputError(f"{path}: exists and is not a regular file; give a file path to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
