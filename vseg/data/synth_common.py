"""Seeds, file writing, shapes and motion curves shared by the synthetic dataset generators.

Colours, noise and textures live in :mod:`vseg.data.textures`.

Everything here is deterministic given a :class:`numpy.random.Generator`: no global random
state, no time or hash dependent values. Images are float32 in 0..255, channel-first
[3, H, W] while being composed, and turned into uint8 [H, W, 3] only when written.
Sampling (warps, texture look-ups) goes through ``torch.nn.functional.grid_sample`` on the
CPU, whose forward pass computes every output pixel independently, so results do not
depend on the number of threads.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from vseg.data.palette import atomic_save
from vseg.errors import VsegError

JPEG_QUALITY = 92  # fixed so the same seed gives the same JPEG bytes
PNG_COMPRESS_LEVEL = 3  # fixed for the same reason; PNG is lossless at any level


# ---------------------------------------------------------------- seeds, splits, checks

def clip_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    """Random generator of one clip, derived from (seed, clip index, stream) only.

    Clip ``i`` never depends on how many clips are generated, so N clips are a prefix of N+1.
    """
    return np.random.default_rng(np.random.SeedSequence([seed, index, stream]))


def is_val_clip(index: int, val_fraction: float) -> bool:
    """Whether clip ``index`` goes to the validation split.

    The split depends on the index alone (a rounded running count of ``index * fraction``),
    so it is stable when more clips are added and gives the requested fraction overall.
    """
    def count(n: int) -> int:
        return math.floor(n * val_fraction + 0.5)

    return count(index + 1) > count(index)


def check_generation_args(clips: int, seed: int, frames: int, height: int, width: int,
                          val_fraction: float, min_frames: int = 2) -> None:
    """Raise VsegError (one line) for options a user could get wrong."""
    if clips < 1:
        raise VsegError(f"--clips must be at least 1, got {clips}")
    if seed < 0:
        raise VsegError(f"--seed must be a non-negative integer, got {seed}")
    if frames < min_frames:
        raise VsegError(f"--frames must be at least {min_frames}, got {frames}")
    if height % 2 or width % 2:
        raise VsegError(f"--height and --width must be even (H.264 needs it), got {height}x{width}")
    if height < 48 or width < 48:
        raise VsegError(f"frames must be at least 48x48, got {height}x{width}")
    if not 0.0 <= val_fraction <= 1.0:
        raise VsegError(f"--val-fraction must lie in 0..1, got {val_fraction}")


def clear_folder(folder: Path, pattern: str) -> None:
    """Remove files matching ``pattern`` left by an earlier run, so no stale frame survives."""
    if folder.is_dir():
        for old in folder.glob(pattern):
            old.unlink()


# ---------------------------------------------------------------- image files

def to_uint8(img_chw: np.ndarray) -> np.ndarray:
    """float [3, H, W] in 0..255 -> uint8 [H, W, 3] (rounded, clipped)."""
    return np.clip(np.rint(img_chw), 0, 255).astype(np.uint8).transpose(1, 2, 0).copy()


def save_jpeg(path: Path, rgb: np.ndarray) -> None:
    """Write uint8 [H, W, 3] as a JPEG with fixed quality and 4:2:0 chroma, atomically."""
    img = Image.fromarray(rgb, mode="RGB")
    atomic_save(path, lambda f: img.save(f, format="JPEG", quality=JPEG_QUALITY, subsampling=2))


def save_png_rgb(path: Path, rgb: np.ndarray) -> None:
    """Write uint8 [H, W, 3] as an RGB PNG atomically."""
    img = Image.fromarray(rgb, mode="RGB")
    atomic_save(path, lambda f: img.save(f, format="PNG", compress_level=PNG_COMPRESS_LEVEL))


# ---------------------------------------------------------------- shapes

SHAPE_KINDS = ("ellipse", "polygon", "star", "fourier", "metaballs")


def random_shape(rng: np.random.Generator, kind: str | None = None) -> dict:
    """Parameters of a random shape that fits in the unit disc (drawn by :func:`shape_alpha`)."""
    if kind is None:
        kind = SHAPE_KINDS[int(rng.integers(len(SHAPE_KINDS)))]
    spec: dict = {"kind": kind, "rotation": float(rng.uniform(0, 2 * math.pi))}
    if kind == "ellipse":
        spec["aspect"] = float(rng.uniform(0.4, 1.0))
    elif kind == "polygon":
        n = int(rng.integers(3, 9))
        # Evenly spread angles, jittered by less than half a step, keep the outline simple.
        spec["angles"] = (np.arange(n) + rng.uniform(-0.4, 0.4, n)) * 2 * math.pi / n
        spec["radii"] = rng.uniform(0.55, 1.0, n)
    elif kind == "star":
        spec["points"] = int(rng.integers(4, 9))
        spec["inner"] = float(rng.uniform(0.35, 0.7))
    elif kind == "fourier":
        k = np.arange(2, 8)
        spec["amps"] = rng.uniform(0.0, 0.3, len(k)) / k ** 0.8
        spec["phases"] = rng.uniform(0, 2 * math.pi, len(k))
    elif kind == "metaballs":
        n = int(rng.integers(3, 7))
        centres = [np.zeros(2)]
        for _ in range(n - 1):  # each ball starts inside an earlier one, so the blob is connected
            step = rng.normal(size=2)
            centres.append(centres[int(rng.integers(len(centres)))] + 0.3 * step / np.linalg.norm(step))
        spec["centres"] = np.array(centres)
        spec["radii"] = rng.uniform(0.22, 0.4, n)
    else:
        raise ValueError(f"unknown shape kind {kind!r}")
    return spec


def perturb_shape(rng: np.random.Generator, spec: dict, amount: float = 0.15) -> dict:
    """A similar shape: the same kind with every parameter jittered by about ``amount``."""
    out = dict(spec)
    out["rotation"] = float(spec["rotation"] + rng.normal(0, amount * 2))

    def jitter(a):
        return a * (1.0 + rng.normal(0, amount, np.shape(a)))

    if spec["kind"] == "ellipse":
        out["aspect"] = float(np.clip(jitter(spec["aspect"]), 0.3, 1.0))
    elif spec["kind"] == "polygon":
        out["radii"] = np.clip(jitter(spec["radii"]), 0.4, 1.0)
    elif spec["kind"] == "star":
        out["inner"] = float(np.clip(jitter(spec["inner"]), 0.3, 0.8))
    elif spec["kind"] == "fourier":
        out["amps"] = np.abs(jitter(spec["amps"]))
    elif spec["kind"] == "metaballs":
        out["centres"] = spec["centres"] + rng.normal(0, amount * 0.3, spec["centres"].shape)
        out["radii"] = np.clip(jitter(spec["radii"]), 0.15, 0.45)
    return out


def shape_alpha(spec: dict, size: int, fill: float = 0.92) -> np.ndarray:
    """Rasterise a shape spec into an anti-aliased alpha map float32 [size, size] in 0..1.

    The shape is scaled to fit a disc of radius ``fill`` (in units of the half canvas).
    """
    kind = spec["kind"]
    if kind == "metaballs":
        ys, xs = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size * 2.0 - 1.0
        # Canvas coordinates scaled by the blob's extent so the blob fits the disc.
        extent = max(float(np.max(np.linalg.norm(spec["centres"], axis=1) + 1.6 * spec["radii"])), 1e-3)
        xs, ys = xs * extent / fill, ys * extent / fill
        c, s = math.cos(spec["rotation"]), math.sin(spec["rotation"])
        xr, yr = c * xs + s * ys, -s * xs + c * ys
        field = np.zeros((size, size), np.float32)
        for (cx, cy), r in zip(spec["centres"], spec["radii"]):
            field += np.exp(-((xr - cx) ** 2 + (yr - cy) ** 2) / (r * r))
        softness = 4.0 * extent / (fill * size)  # about one pixel of edge ramp
        return np.clip((field - 0.5) / softness + 0.5, 0.0, 1.0).astype(np.float32)
    theta = np.linspace(0, 2 * math.pi, 256, endpoint=False)
    if kind == "ellipse":
        pts = np.stack([np.cos(theta), spec["aspect"] * np.sin(theta)], 1)
    elif kind == "polygon":
        pts = np.stack([np.cos(spec["angles"]), np.sin(spec["angles"])], 1) * spec["radii"][:, None]
    elif kind == "star":
        n = spec["points"]
        ang = np.arange(2 * n) * math.pi / n
        rad = np.where(np.arange(2 * n) % 2 == 0, 1.0, spec["inner"])
        pts = np.stack([np.cos(ang), np.sin(ang)], 1) * rad[:, None]
    elif kind == "fourier":
        k = np.arange(2, 2 + len(spec["amps"]))
        r = 1.0 + (spec["amps"][:, None] * np.cos(k[:, None] * theta[None] + spec["phases"][:, None])).sum(0)
        r = np.maximum(r, 0.2)
        pts = np.stack([np.cos(theta), np.sin(theta)], 1) * r[:, None]
    else:
        raise ValueError(f"unknown shape kind {kind!r}")
    c, s = math.cos(spec["rotation"]), math.sin(spec["rotation"])
    pts = pts @ np.array([[c, s], [-s, c]])
    pts = pts / max(float(np.linalg.norm(pts, axis=1).max()), 1e-6) * fill
    return polygon_alpha(pts, size)


def polygon_alpha(points: np.ndarray, size: int, supersample: int = 4) -> np.ndarray:
    """Anti-aliased fill of a polygon given in -1..1 canvas units: float32 [size, size]."""
    big = size * supersample
    canvas = Image.new("L", (big, big), 0)
    xy = [((float(x) + 1.0) * 0.5 * big, (float(y) + 1.0) * 0.5 * big) for x, y in points]
    ImageDraw.Draw(canvas).polygon(xy, fill=255)
    arr = np.asarray(canvas, np.float32).reshape(size, supersample, size, supersample).mean((1, 3))
    return arr / 255.0


# ---------------------------------------------------------------- sampling and filtering

def warp_sample(image: torch.Tensor, grid: np.ndarray, padding: str = "zeros") -> np.ndarray:
    """Bilinear sampling of image [C, h, w] at normalised coordinates grid [H, W, 2] (x, y in -1..1,
    align_corners=False) -> float32 [C, H, W]."""
    out = F.grid_sample(image[None], torch.from_numpy(np.ascontiguousarray(grid, np.float32))[None],
                        mode="bilinear", padding_mode=padding, align_corners=False)
    return out[0].numpy()


def smooth_curve(rng: np.random.Generator, frames: int, cycles: tuple[float, float] = (0.2, 1.2),
                 terms: int = 2) -> np.ndarray:
    """A smooth random signal over ``frames`` steps with values in about -1..1: float64 [frames]."""
    t = np.arange(frames) / max(frames - 1, 1)
    out = np.zeros(frames)
    for _ in range(terms):
        out += np.sin(2 * math.pi * rng.uniform(*cycles) * t + rng.uniform(0, 2 * math.pi))
    return out / terms


def hermite_path(times: np.ndarray, values: np.ndarray, frames: int) -> np.ndarray:
    """Smooth path through key values at key times (Catmull-Rom tangents), sampled at 0..frames-1.

    times: [K] increasing, first 0 and last frames-1; values: [K, D]. Returns float64 [frames, D].
    """
    times = np.asarray(times, np.float64)
    values = np.asarray(values, np.float64)
    k = len(times)
    tangents = np.zeros_like(values)
    for i in range(k):
        lo, hi = max(i - 1, 0), min(i + 1, k - 1)
        tangents[i] = (values[hi] - values[lo]) / max(times[hi] - times[lo], 1e-9)
    t = np.arange(frames, dtype=np.float64)
    seg = np.clip(np.searchsorted(times, t, side="right") - 1, 0, k - 2)
    dt = times[seg + 1] - times[seg]
    u = ((t - times[seg]) / dt)[:, None]
    h00, h10 = 2 * u ** 3 - 3 * u ** 2 + 1, u ** 3 - 2 * u ** 2 + u
    h01, h11 = -2 * u ** 3 + 3 * u ** 2, u ** 3 - u ** 2
    return (h00 * values[seg] + h10 * dt[:, None] * tangents[seg]
            + h01 * values[seg + 1] + h11 * dt[:, None] * tangents[seg + 1])


def blur3(img: np.ndarray, amount: float) -> np.ndarray:
    """Separable [a, 1-2a, a] blur of img [C, H, W] (edges replicated); amount a in 0..1/3."""
    if amount <= 0:
        return img
    a = np.float32(amount)
    p = np.pad(img, ((0, 0), (1, 1), (0, 0)), mode="edge")
    img = a * p[:, :-2] + (1 - 2 * a) * p[:, 1:-1] + a * p[:, 2:]
    p = np.pad(img, ((0, 0), (0, 0), (1, 1)), mode="edge")
    return a * p[:, :, :-2] + (1 - 2 * a) * p[:, :, 1:-1] + a * p[:, :, 2:]
