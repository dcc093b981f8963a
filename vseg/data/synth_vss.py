"""Synthetic street-scene clips for video semantic segmentation (CamVid-like).

Layout written under ``out_dir`` (also written to ``<root>/README.txt``)::

    train/<seq>/00000.png ...       RGB frames (PNG)
    trainannot/<seq>/00000.png ...  class ids for EVERY frame: P-mode PNG, 255 = void
    val/<seq>/..., valannot/<seq>/...
    videos/<seq>.mp4                the same frames as IP-only H.264 (keyint 12, 25 fps)
    classes.json                    {"names": [...], "colors": [[r, g, b], ...], "ignore_index": 255}
    synth_vss.json                  generation options and the clips of each split

Classes follow CamVid's 11-class order (sky, building, pole, road, sidewalk, vegetation, sign,
fence, car, pedestrian, bicyclist), so ids match the usual CamVid labels; street clutter
(bins, boxes) is void. Each class keeps one colour family and texture (asphalt, paving,
foliage, facades with windows...) with variation between instances and clips.

Scenes are ray cast: a pinhole camera at driver height moves forward along a straight road
with some panning, sway and vibration; the ground, building and fence planes are textured in
world coordinates, and cars, cyclists, pedestrians, trees, poles, signs and clutter are
upright billboards with a depth test. So near things move faster across the image than far
ones, and cars, cyclists and pedestrians also move on their own. Sequences are named
``synth-<seed>-<index:04d>``; clip ``i`` depends on (seed, i) alone (determinism as in
:mod:`vseg.data.synth_vos`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vseg.data import synth_common as sc
from vseg.data import textures
from vseg.data.datasets import CAMVID_CLASSES, CAMVID_COLOURS
from vseg.data.encode import H264Writer
from vseg.data.palette import atomic_save, write_mask
from vseg.data.street_sprites import (
    BUILDING,
    FAR,
    FENCE,
    IGNORE_INDEX,
    LANE,
    ROAD,
    SHAPES,
    SIDEWALK,
    SKY,
    VEGETATION,
    Sprite,
    make_sprites,
)
from vseg.data.textures import hsv_to_rgb

CLASS_NAMES = CAMVID_CLASSES  # CamVid's 11 classes, in CamVid's order
CLASS_COLOURS = CAMVID_COLOURS
KEYINT = 12
FPS = 25.0


def label_palette() -> np.ndarray:
    """Palette [256, 3] uint8 for label PNGs: class colours, black elsewhere (void included)."""
    pal = np.zeros((256, 3), np.uint8)
    pal[:len(CLASS_COLOURS)] = CLASS_COLOURS
    return pal


@dataclass
class Wall:
    """Segments of a vertical plane X = side * offset, parallel to the road."""

    side: int  # -1 left, +1 right
    offset: float  # metres from the road axis
    z0: np.ndarray  # [n] segment starts along the road (sorted)
    z1: np.ndarray  # [n] segment ends
    top: np.ndarray  # [n] heights
    cls: np.ndarray  # [n] class id of each segment
    colour: np.ndarray  # [n, 3] base colours
    style: np.ndarray  # [n, 4] building: floor height, window pitch, window width, glass tone;
    #                    fence: metal (1) or wood (0), slat pitch, unused, unused


@dataclass
class StreetPlan:
    """Everything needed to render any frame of one clip."""

    height: int
    width: int
    frames: int
    focal: float
    cx: float
    cy: np.ndarray  # [T] principal row (vibration moves it)
    cam_x: np.ndarray  # [T]
    cam_z: np.ndarray  # [T]
    cam_h: float
    yaw: np.ndarray  # [T] radians, positive turns right
    road_edge: tuple[float, float]  # road half-widths (left, right)
    walk_edge: tuple[float, float]  # outer edge of the sidewalk (left, right)
    verge_edge: tuple[float, float]  # outer edge of the grass verge (left, right), == walk_edge if none
    colours: dict  # base colours of the ground and sky
    tiles: dict  # name -> WrappedTexture of 1-channel noise
    walls: list[Wall]
    sprites: list
    exposure: np.ndarray  # [T, 3]
    vignette: float
    blur: float
    noise_sigma: float


# ---------------------------------------------------------------- planning

def _segments(rng: np.random.Generator, z_from: float, z_to: float, length: tuple[float, float],
              gap: tuple[float, float], gap_prob: float) -> tuple[np.ndarray, np.ndarray]:
    starts, ends, z = [], [], z_from
    while z < z_to:
        if rng.random() < gap_prob:
            z += rng.uniform(*gap)
        n = rng.uniform(*length)
        starts.append(z)
        ends.append(z + n)
        z += n
    return np.array(starts), np.array(ends)


def plan_street(seed: int, index: int, frames: int, height: int, width: int) -> StreetPlan:
    """Draw the content of clip ``index`` (deterministic in its arguments)."""
    rng = sc.clip_rng(seed, index)
    focal = width / (2 * math.tan(math.radians(rng.uniform(55, 75)) / 2))
    speed = rng.uniform(0.25, 0.6) * (1 + 0.15 * sc.smooth_curve(rng, frames, (0.1, 0.5)))
    cam_z = np.concatenate([[0.0], np.cumsum(speed[:-1])])
    cam_x = LANE / 2 + rng.uniform(-0.3, 0.3) + 0.25 * sc.smooth_curve(rng, frames)
    yaw = rng.uniform(0.02, 0.12) * sc.smooth_curve(rng, frames, (0.2, 0.8))
    cy = height * rng.uniform(0.4, 0.48) + rng.uniform(0, 2.0) * sc.smooth_curve(rng, frames, (2, 6))
    parking = [2.2 if rng.random() < 0.5 else 0.0 for _ in range(2)]
    road = (LANE + parking[0], LANE + parking[1])
    walk = tuple(r + rng.uniform(1.8, 4.0) for r in road)
    verge = tuple(w + (rng.uniform(1.0, 3.0) if rng.random() < 0.5 else 0.0) for w in walk)
    z_lo, z_hi = -20.0, cam_z[-1] + 320.0

    walls = []
    for side_i, side in enumerate((-1, 1)):
        z0, z1 = _segments(rng, z_lo, z_hi, (8, 30), (2, 10), 0.35)
        n = len(z0)
        family = rng.integers(0, 5, n)  # beige, brick, grey, cream, terracotta
        hues = np.array([35, 12, 30, 45, 20])[family] + rng.uniform(-6, 6, n)
        sats = np.array([0.3, 0.55, 0.05, 0.2, 0.5])[family] * rng.uniform(0.7, 1.2, n)
        vals = np.array([0.7, 0.5, 0.6, 0.85, 0.6])[family] * rng.uniform(0.85, 1.1, n)
        style = np.stack([rng.uniform(3.0, 3.6, n), rng.uniform(2.2, 3.5, n),
                          rng.uniform(0.9, 1.5, n), rng.uniform(0.2, 0.4, n)], 1)
        walls.append(Wall(side, verge[side_i] + rng.uniform(0.0, 2.0), z0, z1, rng.uniform(6, 25, n),
                          np.full(n, BUILDING), hsv_to_rgb(hues, np.clip(sats, 0, 1), np.clip(vals, 0, 1)),
                          style))
        if rng.random() < 0.6:  # fences and hedges at the outer edge of the sidewalk
            f0, f1 = _segments(rng, z_lo, z_hi, (5, 40), (3, 30), 0.6)
            m = len(f0)
            hedge = rng.random(m) < 0.35
            colours = np.where(hedge[:, None], hsv_to_rgb(rng.uniform(85, 120, m), rng.uniform(0.4, 0.7, m),
                                                          rng.uniform(0.3, 0.45, m)),
                               hsv_to_rgb(rng.uniform(15, 35, m), rng.uniform(0.1, 0.5, m),
                                          rng.uniform(0.3, 0.6, m)))
            walls.append(Wall(side, walk[side_i] + 0.05, f0, f1, rng.uniform(0.9, 1.6, m),
                              np.where(hedge, VEGETATION, FENCE), colours.astype(np.float32),
                              np.stack([rng.integers(0, 2, m), rng.uniform(0.1, 0.2, m),
                                        np.zeros(m), np.zeros(m)], 1)))

    overcast = rng.random() < 0.3
    colours = {
        "zenith": hsv_to_rgb(rng.uniform(200, 220), rng.uniform(0.05, 0.12) if overcast else rng.uniform(0.35, 0.6),
                             rng.uniform(0.75, 0.92)),
        "horizon": hsv_to_rgb(rng.uniform(195, 215), rng.uniform(0.03, 0.15), rng.uniform(0.85, 0.97)),
        "clouds": float(rng.uniform(0.0, 0.3 if overcast else 0.7)),
        "road": hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0.0, 0.06), rng.uniform(0.28, 0.4)),
        "marking": hsv_to_rgb(rng.uniform(45, 55), rng.uniform(0.0, 0.7) * (rng.random() < 0.3), 0.85),
        "sidewalk": hsv_to_rgb(rng.uniform(20, 50), rng.uniform(0.0, 0.15), rng.uniform(0.55, 0.7)),
        "grass": hsv_to_rgb(rng.uniform(75, 110), rng.uniform(0.35, 0.6), rng.uniform(0.35, 0.5)),
        "paving": float(rng.uniform(0.3, 0.6)),
    }
    tiles = {name: textures.WrappedTexture(textures.tileable_fractal(rng, 128, cells, octaves=octaves))
             for name, cells, octaves in (("fine", 16, 3), ("coarse", 4, 3), ("leafy", 8, 4))}
    sprites = make_sprites(rng, cam_z, road, walk, verge)
    exposure = (rng.uniform(0.85, 1.15) * (1 + 0.04 * sc.smooth_curve(rng, frames)))[:, None] \
        * (1 + rng.uniform(-0.04, 0.04, 3))[None]
    return StreetPlan(height, width, frames, focal, width / 2, cy, cam_x, cam_z, float(rng.uniform(1.3, 1.7)),
                      yaw, road, walk, verge, colours, tiles, walls, sprites, exposure.astype(np.float32),
                      float(rng.uniform(0.0, 0.25)), float(rng.uniform(0.05, 0.2)), float(rng.uniform(1.0, 3.0)))



def draw_sprite(sp: Sprite, t: int, plan: StreetPlan, rays: tuple, cls: np.ndarray, rgb: np.ndarray,
                depth: np.ndarray) -> None:
    """Draw one billboard into cls [H, W], rgb [H, W, 3] and depth [H, W] where it is nearest."""
    zs = sp.z + sp.vz * t
    rel_x, rel_z = sp.x - plan.cam_x[t], zs - plan.cam_z[t]
    c, s = math.cos(plan.yaw[t]), math.sin(plan.yaw[t])
    corners_x = rel_x + np.array([-1, 1, -1, 1]) * sp.width / 2
    z_c = corners_x * s + rel_z * c
    if z_c.min() < 0.8 or z_c.max() > FAR:
        return
    x_c = corners_x * c - rel_z * s
    y_c = np.array([0, 0, 1, 1]) * sp.height - plan.cam_h
    cols = plan.cx + plan.focal * x_c / z_c
    rows = plan.cy[t] - plan.focal * y_c / z_c
    x0, x1 = max(0, math.floor(cols.min())), min(plan.width, math.ceil(cols.max()) + 1)
    y0, y1 = max(0, math.floor(rows.min())), min(plan.height, math.ceil(rows.max()) + 1)
    if x1 <= x0 or y1 <= y0:
        return
    rx, ry, rz = (r[y0:y1, x0:x1] for r in rays)
    hit_t = rel_z / rz  # ray parameter where it meets the plane z = zs
    u, v = plan.cam_x[t] + hit_t * rx - sp.x, plan.cam_h + hit_t * ry
    inside, label, parts, grain = SHAPES[sp.kind](sp, u, v, t)
    draw = inside & (hit_t < depth[y0:y1, x0:x1])
    if not draw.any():
        return
    dist = hit_t * np.sqrt(rx * rx + ry * ry + rz * rz)
    detail = _detail(plan, "leafy" if sp.kind == "tree" else "fine", u + sp.z, v, 0.04, dist)
    colour = np.broadcast_to(sp.colours[0], u.shape + (3,)).copy()
    for part, part_colour in zip(parts, sp.colours[1:]):
        colour[part] = part_colour
    colour *= (1 + grain * detail)[..., None]
    region_cls, region_rgb, region_depth = cls[y0:y1, x0:x1], rgb[y0:y1, x0:x1], depth[y0:y1, x0:x1]
    region_cls[draw] = label[draw] if isinstance(label, np.ndarray) else label
    region_rgb[draw] = colour[draw]
    region_depth[draw] = hit_t[draw]


# ---------------------------------------------------------------- rendering

def _detail(plan: StreetPlan, name: str, u: np.ndarray, v: np.ndarray, texel: float, dist: np.ndarray) -> np.ndarray:
    """Tile noise at world coordinates (metres), faded where a pixel covers many texels (no shimmer)."""
    noise = plan.tiles[name].sample(u / texel, v / texel)[0]
    footprint = dist / plan.focal  # metres per pixel
    return noise * np.clip(1.5 * texel / np.maximum(footprint, 1e-6) - 0.5, 0.0, 1.0)


def _ground(plan: StreetPlan, x: np.ndarray, z: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class ids [n] and colours [n, 3] of ground points (x, z)."""
    col = plan.colours
    side = (x > 0).astype(np.int64)  # 0 left, 1 right
    ax = np.abs(x)
    road_edge = np.array(plan.road_edge)[side]
    walk_edge = np.array(plan.walk_edge)[side]
    verge_edge = np.array(plan.verge_edge)[side]
    grass = (ax > walk_edge) & (ax <= verge_edge) | ((ax > verge_edge) & (verge_edge > walk_edge))
    cls = np.where(ax <= road_edge, ROAD, np.where(grass, VEGETATION, SIDEWALK))
    rgb = np.empty((len(x), 3), np.float32)
    fine = _detail(plan, "fine", x, z, 0.03, dist)
    coarse = plan.tiles["coarse"].sample(x / 0.5, z / 0.5)[0]
    road = cls == ROAD
    dashes = (np.abs(x) < 0.07) & (np.mod(z, 9.0) < 4.0)
    edges = (np.abs(ax - LANE) < 0.07) & (road_edge > LANE + 0.1)
    paint = road & (dashes | edges)
    rgb[road] = col["road"] * (1 + 0.05 * coarse[road, None] + 0.12 * fine[road, None])
    rgb[paint] = col["marking"] * (1 + 0.05 * fine[paint, None])
    walk = cls == SIDEWALK
    slabs = np.minimum(np.mod(x, 0.6), np.mod(z, 0.6)) < 0.03  # joints between paving slabs
    curb = ax - road_edge < 0.15
    shade = 1 + 0.06 * coarse + 0.08 * fine - col["paving"] * 0.25 * (slabs & (dist < 25)) + 0.15 * curb
    rgb[walk] = col["sidewalk"] * shade[walk, None]
    leafy = _detail(plan, "leafy", x, z, 0.05, dist)
    rgb[grass] = col["grass"] * (1 + 0.1 * coarse[grass, None] + 0.25 * leafy[grass, None])
    return cls, rgb


def _wall_colour(plan: StreetPlan, wall: Wall, idx: np.ndarray, z: np.ndarray, y: np.ndarray,
                 dist: np.ndarray) -> np.ndarray:
    """Colours [n, 3] of wall points: facades with windows, wooden or metal fences, hedges."""
    base = wall.colour[idx]
    cls = wall.cls[idx]
    rgb = base * (1 + 0.08 * plan.tiles["coarse"].sample(z / 1.0, y / 1.0)[0][:, None]
                  + 0.1 * _detail(plan, "fine", z, y, 0.03, dist)[:, None])
    clear = np.clip(2.0 - dist / plan.focal / 0.15, 0.0, 1.0)  # pattern fades once a pixel spans 15 cm
    building = cls == BUILDING
    if building.any():
        floor, pitch, window, glass = wall.style[idx].T
        along = np.mod(z - wall.z0[idx], pitch)
        level = np.mod(y, floor)
        is_window = (along > (pitch - window) / 2) & (along < (pitch + window) / 2) & (level > 0.9) \
            & (level < 2.3) & (y < wall.top[idx] - 0.8) & (y > 0.5)
        glass_rgb = np.stack([glass * 200, glass * 215, glass * 235], 1) \
            * (1 + 0.2 * plan.tiles["coarse"].sample(z / 3.0, y / 3.0)[0])[:, None]
        mix = (is_window & building)[:, None] * clear[:, None]
        rgb = rgb * (1 - mix) + glass_rgb * mix
        cornice = building & (y > wall.top[idx] - 0.35)
        rgb[cornice] *= 0.8
    fence = cls == FENCE
    if fence.any():
        metal, gap = wall.style[idx, 0], wall.style[idx, 1]
        slat = np.where(metal > 0, np.mod(z, gap * 1.5) < gap * 0.5, np.mod(z, gap) < gap * 0.85)
        rail = (np.abs(y - wall.top[idx] * 0.85) < 0.05) | (np.abs(y - wall.top[idx] * 0.2) < 0.05)
        rgb[fence] *= (1 - 0.3 * clear[:, None] * (~(slat | rail))[:, None])[fence]
    hedge = cls == VEGETATION
    if hedge.any():
        rgb[hedge] = (base * (1 + 0.3 * _detail(plan, "leafy", z, y, 0.05, dist)[:, None]))[hedge]
    light = 1.0 + 0.12 * wall.side  # the sun is on the right of the road
    return rgb * light


def render_street(plan: StreetPlan, t: int, noise_rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Frame t: (rgb uint8 [H, W, 3], labels uint8 [H, W] with class ids and 255 = void)."""
    h, w = plan.height, plan.width
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    dx, dy = (xs - plan.cx) / plan.focal, -(ys - plan.cy[t]) / plan.focal
    c, s = math.cos(plan.yaw[t]), math.sin(plan.yaw[t])
    rx, ry, rz = (c * dx + s).ravel(), dy.ravel(), (-s * dx + c).ravel()  # world ray (unnormalised)
    norm = np.sqrt(rx * rx + ry * ry + rz * rz)
    cx, cz, ch = plan.cam_x[t], plan.cam_z[t], plan.cam_h
    depth = np.full(h * w, np.inf, np.float32)  # ray parameter of the nearest surface so far
    cls = np.full(h * w, SKY, np.int64)
    rgb = np.empty((h * w, 3), np.float32)
    # Sky above the horizon: gradient by elevation plus drifting clouds.
    up = np.flatnonzero(ry >= -1e-6)
    elev = ry[up] / norm[up]
    ramp = np.clip(elev * 3.0, 0, 1)[:, None]
    cloud = plan.tiles["coarse"].sample(np.arctan2(rx[up], rz[up]) * 40 + t * 0.05, elev * 120)[0]
    amount = (np.clip(cloud - 0.3, 0, 1) * plan.colours["clouds"])[:, None]
    sky = plan.colours["horizon"] * (1 - ramp) + plan.colours["zenith"] * ramp
    rgb[up] = sky * (1 - amount) + 245.0 * amount
    # Ground plane y = 0 below the horizon.
    down = np.flatnonzero(ry < -1e-6)
    tg = ch / -ry[down]
    cls[down], rgb[down] = _ground(plan, cx + tg * rx[down], cz + tg * rz[down], tg * norm[down])
    depth[down] = tg
    # Walls parallel to the road (the camera is always between them, so facing rays hit at t > 0).
    facing = {side: np.flatnonzero(rx * side > 1e-6) for side in (-1, 1)}
    for wall in plan.walls:
        cand = facing[wall.side]
        tw = (wall.side * wall.offset - cx) / rx[cand]
        keep = tw < depth[cand]
        cand, tw = cand[keep], tw[keep]
        wz, wy = cz + tw * rz[cand], ch + tw * ry[cand]
        idx = np.clip(np.searchsorted(wall.z0, wz, side="right") - 1, 0, len(wall.z0) - 1)
        hit = (wz >= wall.z0[idx]) & (wz < wall.z1[idx]) & (wy >= 0) & (wy <= wall.top[idx])
        sel = cand[hit]
        cls[sel] = wall.cls[idx[hit]]
        rgb[sel] = _wall_colour(plan, wall, idx[hit], wz[hit], wy[hit], tw[hit] * norm[sel])
        depth[sel] = tw[hit]
    # Upright billboards, with a depth test against everything drawn so far.
    cls2, rgb2, depth2 = cls.reshape(h, w), rgb.reshape(h, w, 3), depth.reshape(h, w)
    rays = (rx.reshape(h, w), ry.reshape(h, w), rz.reshape(h, w))
    if plan.sprites:  # cheap cull by distance along the view before the exact per-sprite test
        where = np.array([(sp.x, sp.z + sp.vz * t) for sp in plan.sprites])
        ahead = (where[:, 0] - cx) * s + (where[:, 1] - cz) * c
        for i in np.flatnonzero((ahead > 0.5) & (ahead < FAR + 5)):
            draw_sprite(plan.sprites[i], t, plan, rays, cls2, rgb2, depth2)
    # Camera: exposure, vignetting, blur, sensor noise.
    vig = 1 - plan.vignette * (((xs - w / 2) / (w / 2)) ** 2 + ((ys - h / 2) / (w / 2)) ** 2) / 2
    img = rgb2.transpose(2, 0, 1) * (vig[None] * plan.exposure[t][:, None, None])
    img = sc.blur3(img, plan.blur)
    img = img + noise_rng.standard_normal(img.shape, dtype=np.float32) * np.float32(plan.noise_sigma)
    return sc.to_uint8(img), cls2.astype(np.uint8)


# ---------------------------------------------------------------- writing

README = """Synthetic street-scene clips for video semantic segmentation (vseg data synth-vss).

train/<seq>/00000.png ...       RGB frames (PNG)
trainannot/<seq>/00000.png ...  class ids for every frame: P-mode PNG, 255 = void
val/<seq>/..., valannot/<seq>/...
videos/<seq>.mp4                the same frames as IP-only H.264 (keyint 12, 25 fps)
classes.json                    class names, palette colours, ignore index
synth_vss.json                  generation options and the clips of each split

Class ids: """ + ", ".join(f"{i} {n}" for i, n in enumerate(CLASS_NAMES)) + f", {IGNORE_INDEX} void.\n"


def generate_vss(out_dir: str | Path, clips: int, seed: int, frames: int = 48, height: int = 360,
                 width: int = 480, val_fraction: float = 0.2,
                 on_clip: Callable[[int, str], None] | None = None) -> dict:
    """Write ``clips`` synthetic street clips in the CamVid-like layout of the module docstring.

    frames: per clip (48 = four GOPs of 12). Sizes must be even (H.264). ``val_fraction`` of
    the clips (chosen by index, stable as clips are added) go to val. ``on_clip(index, name)``
    is called after each clip. Returns a summary dict (also written to ``synth_vss.json``).
    """
    sc.check_generation_args(clips, seed, frames, height, width, val_fraction)
    root = Path(out_dir)
    pal = label_palette()
    summary: dict = {"layout": "camvid", "seed": seed, "frames": frames, "height": height, "width": width,
                     "val_fraction": val_fraction, "keyint": KEYINT, "fps": FPS, "train": [], "val": []}
    for index in range(clips):
        name = f"synth-{seed}-{index:04d}"
        split = "val" if sc.is_val_clip(index, val_fraction) else "train"
        plan = plan_street(seed, index, frames, height, width)
        noise_rng = sc.clip_rng(seed, index, stream=1)
        frame_dir, label_dir = root / split / name, root / f"{split}annot" / name
        for stale in ("train", "val"):  # a clip changes split only when val_fraction changes
            for folder in (root / stale / name, root / f"{stale}annot" / name):
                sc.clear_folder(folder, "*.png")
                if stale != split and folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
        with H264Writer(root / "videos" / f"{name}.mp4", width, height, fps=FPS, keyint=KEYINT) as video:
            for t in range(frames):
                rgb, labels = render_street(plan, t, noise_rng)
                sc.save_png_rgb(frame_dir / f"{t:05d}.png", rgb)
                write_mask(label_dir / f"{t:05d}.png", labels, pal)
                video.write(rgb)
        summary[split].append(name)
        if on_clip is not None:
            on_clip(index, name)
    classes = {"names": CLASS_NAMES, "colors": [list(c) for c in CLASS_COLOURS], "ignore_index": IGNORE_INDEX}
    for name, payload in (("classes.json", json.dumps(classes, indent=2) + "\n"),
                          ("synth_vss.json", json.dumps(summary, indent=2) + "\n"), ("README.txt", README)):
        atomic_save(root / name, lambda f, payload=payload: f.write(payload.encode()))
    summary["root"] = str(root)
    return summary
