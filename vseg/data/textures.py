"""Colours, noise and textures for the synthetic dataset generators.

Deterministic given a :class:`numpy.random.Generator`, like the rest of the generators'
helpers (:mod:`vseg.data.synth_common`). Images are float32 in 0..255, channel-first
[3, H, W]. Resampling goes through ``torch.nn.functional`` on the CPU, whose forward pass
computes every output pixel independently, so textures do not depend on the thread count.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

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
