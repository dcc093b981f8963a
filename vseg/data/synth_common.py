"""Drawing, texture and bookkeeping helpers shared by the synthetic dataset generators.

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


# ---------------------------------------------------------------- colour

def hsv_to_rgb(h, s, v) -> np.ndarray:
    """Hue in degrees, saturation and value in 0..1 (broadcastable) -> float32 [..., 3] in 0..255."""
    h = np.mod(np.asarray(h, np.float32), 360.0) / 60.0
    s = np.asarray(s, np.float32)
    v = np.asarray(v, np.float32)
    k = np.stack([(5.0 + h) % 6.0, (3.0 + h) % 6.0, (1.0 + h) % 6.0], axis=-1)
    ramp = np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    rgb = v[..., None] - (v * s)[..., None] * ramp
    return (rgb * 255.0).astype(np.float32)


def random_palette(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` colours that belong together: float32 [n, 3] in 0..255.

    A base hue plus a harmony scheme (analogous, complementary, triadic or free), with
    saturation and value drawn widely so palettes range from muted to vivid, dark to light.
    """
    base = rng.uniform(0, 360)
    scheme = rng.integers(4)
    if scheme == 0:  # analogous
        hues = base + rng.uniform(-35, 35, n)
    elif scheme == 1:  # complementary
        hues = base + 180.0 * rng.integers(0, 2, n) + rng.uniform(-15, 15, n)
    elif scheme == 2:  # triadic
        hues = base + 120.0 * rng.integers(0, 3, n) + rng.uniform(-12, 12, n)
    else:
        hues = rng.uniform(0, 360, n)
    sat = rng.uniform(0.05, 0.95, n) * rng.uniform(0.4, 1.0)
    val = rng.uniform(0.15, 1.0, n)
    return hsv_to_rgb(hues, sat, val)


def colour_ramp(t: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Map t [H, W] in 0..1 through a piecewise-linear ramp of colours [n, 3] -> [3, H, W]."""
    knots = np.linspace(0.0, 1.0, len(colours)) if len(colours) > 1 else np.zeros(1)
    return np.stack([np.interp(t, knots, colours[:, c]) for c in range(3)]).astype(np.float32)


# ---------------------------------------------------------------- noise

def value_noise(rng: np.random.Generator, height: int, width: int, cell: float,
                channels: int = 1) -> np.ndarray:
    """Smooth noise with features about ``cell`` pixels wide: float32 [channels, H, W], std ~1.

    Random values on a coarse grid (one cell of margin each side), upsampled bicubically by
    an integer factor, then cropped at a random offset.
    """
    factor = max(math.ceil(cell), 1)
    gh, gw = height // factor + 2, width // factor + 2
    grid = rng.standard_normal((1, channels, gh, gw), dtype=np.float32)
    if factor == 1:
        up = torch.from_numpy(grid[0])
    else:
        up = F.interpolate(torch.from_numpy(grid), scale_factor=factor, mode="bicubic", align_corners=False)[0]
    oy = int(rng.integers(0, gh * factor - height + 1))
    ox = int(rng.integers(0, gw * factor - width + 1))
    out = up[:, oy:oy + height, ox:ox + width].numpy()
    return out / max(float(out.std()), 1e-6)


def fractal_noise(rng: np.random.Generator, height: int, width: int, base_cell: float,
                  octaves: int = 4, gain: float = 0.5, channels: int = 1) -> np.ndarray:
    """Sum of value-noise octaves (cell halves, amplitude x ``gain``): float32 [C, H, W], std 1."""
    total = np.zeros((channels, height, width), np.float32)
    amp, cell = 1.0, float(base_cell)
    for _ in range(octaves):
        total += amp * value_noise(rng, height, width, cell, channels)
        amp *= gain
        cell = max(cell / 2.0, 1.0)
    return total / max(float(total.std()), 1e-6)


def tileable_noise(rng: np.random.Generator, size: int, cells: int, channels: int = 1) -> np.ndarray:
    """Noise that wraps around at ``size`` pixels, ``cells`` features across: float32 [C, size, size].

    The coarse random grid is padded circularly before upsampling, so the left and right
    (top and bottom) edges continue each other and look-ups may take coordinates modulo size.
    """
    grid = rng.standard_normal((1, channels, cells, cells), dtype=np.float32)
    pad = 2
    wrapped = np.pad(grid, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="wrap")
    scale = size / cells
    full = round((cells + 2 * pad) * scale)
    up = F.interpolate(torch.from_numpy(wrapped), size=(full, full), mode="bicubic", align_corners=False)[0]
    start = round(pad * scale)
    out = up[:, start:start + size, start:start + size].numpy()
    out = out - out.mean()
    return out / max(float(out.std()), 1e-6)


def tileable_fractal(rng: np.random.Generator, size: int, cells: int, octaves: int = 4,
                     gain: float = 0.55, channels: int = 1) -> np.ndarray:
    """Octaves of :func:`tileable_noise` (cells doubling): float32 [C, size, size], std 1."""
    total = np.zeros((channels, size, size), np.float32)
    amp = 1.0
    for _ in range(octaves):
        total += amp * tileable_noise(rng, size, min(cells, size), channels)
        amp *= gain
        cells *= 2
    return total / max(float(total.std()), 1e-6)


class WrappedTexture:
    """A tileable texture [C, N, N] looked up bilinearly at real texel coordinates, wrapping around."""

    def __init__(self, tile: np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(tile, np.float32))
        t = torch.cat([t, t[:, :1]], 1)
        self.padded = torch.cat([t, t[:, :, :1]], 2)[None]  # [1, C, N+1, N+1]: texel N repeats texel 0
        self.size = tile.shape[-1]

    def sample(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """u (column) and v (row) float arrays of one shape, in texels -> float32 [C, *u.shape]."""
        n = self.size
        shape = np.shape(u)
        grid = np.empty((1, 1, int(np.prod(shape)), 2), np.float32)
        grid[0, 0, :, 0] = np.mod(np.ravel(u), n) * (2.0 / n) - 1.0  # align_corners: -1..1 spans 0..N
        grid[0, 0, :, 1] = np.mod(np.ravel(v), n) * (2.0 / n) - 1.0
        out = F.grid_sample(self.padded, torch.from_numpy(grid), mode="bilinear",
                            padding_mode="border", align_corners=True)
        return out[0, :, 0].numpy().reshape((-1,) + shape)


# ---------------------------------------------------------------- textures

TEXTURE_KINDS = ("noise", "stripes", "blobs", "checker")


def make_texture(rng: np.random.Generator, height: int, width: int, colours: np.ndarray | None = None,
                 kind: str | None = None, scale: float | None = None) -> np.ndarray:
    """A random texture: float32 [3, H, W] in 0..255.

    kind: noise (fractal noise through a colour ramp), stripes (warped sinusoidal bands),
    blobs (spots of one colour on another), checker (warped checkerboard). ``scale`` is the
    feature size in pixels (random when None). Every kind gets a fine luminance grain.
    """
    if colours is None:
        colours = random_palette(rng, int(rng.integers(2, 5)))
    if kind is None:
        kind = TEXTURE_KINDS[int(rng.integers(len(TEXTURE_KINDS)))]
    if scale is None:
        scale = float(rng.uniform(0.08, 0.5)) * min(height, width)
    scale = max(scale, 3.0)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == "noise":
        n = fractal_noise(rng, height, width, scale, octaves=4, gain=float(rng.uniform(0.35, 0.65)))[0]
        tex = colour_ramp(0.5 + 0.3 * n, colours)
    elif kind == "stripes":
        angle = rng.uniform(0, math.pi)
        period = scale * rng.uniform(0.3, 1.0)
        warp = fractal_noise(rng, height, width, scale * 2, octaves=2)[0] * rng.uniform(0.0, 2.5)
        phase = (xs * math.cos(angle) + ys * math.sin(angle)) * (2 * math.pi / period) + warp
        band = 0.5 + 0.5 * np.tanh(rng.uniform(1.0, 6.0) * np.sin(phase))
        tex = colour_ramp(band, colours[:2] if len(colours) >= 2 else colours)
    elif kind == "blobs":
        n = fractal_noise(rng, height, width, scale * 0.5, octaves=3)[0]
        level = rng.uniform(-0.4, 0.8)
        spots = 0.5 + 0.5 * np.tanh((n - level) * 4.0)
        tex = colour_ramp(spots, colours[:2] if len(colours) >= 2 else colours)
        if len(colours) > 2:  # a third colour as soft shading inside the spots
            shade = fractal_noise(rng, height, width, scale, octaves=2)[0]
            tex = tex * (1.0 - 0.25 * spots * (0.5 + 0.5 * np.tanh(shade)))[None] \
                + (0.25 * spots * (0.5 + 0.5 * np.tanh(shade)))[None] * colours[2][:, None, None]
    elif kind == "checker":
        period = scale * rng.uniform(0.3, 0.9)
        warp = fractal_noise(rng, height, width, scale * 2, octaves=2, channels=2) * period * rng.uniform(0.0, 0.3)
        cx = np.sin((xs + warp[0]) * math.pi / period)
        cy = np.sin((ys + warp[1]) * math.pi / period)
        tex = colour_ramp(0.5 + 0.5 * np.tanh(3.0 * cx * cy), colours[:2] if len(colours) >= 2 else colours)
    else:
        raise ValueError(f"unknown texture kind {kind!r}")
    grain = value_noise(rng, height, width, rng.uniform(1.0, 3.0))[0] * rng.uniform(2.0, 10.0)
    return np.clip(tex + grain[None], 0.0, 255.0).astype(np.float32)


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
