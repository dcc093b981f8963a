"""The content of one synthetic VOS clip: its plan (objects, camera, light) and its frames.

A clip holds 1-5 target objects (ids 1..K, all clearly visible in frame 0) and usually 1-2
distractors: unannotated objects with a perturbed copy of a target's shape and palette, so
colour alone cannot tell them apart. Objects have their own textures and move (translation,
rotation, scale, a smooth non-rigid wobble), cross each other in a fixed depth order (masks
hold only visible pixels) and sometimes leave the frame and come back. The textured
background moves with the camera (pan, slight zoom and roll); global and local lighting
change over time; the frames get a slight blur and sensor noise.

:func:`plan_clip` draws everything from a generator seeded by (seed, index) alone;
:func:`render_frame` turns a plan into frame t. :mod:`vseg.data.synth_vos` writes clips to disk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from vseg.data import synth_common as sc
from vseg.data import textures


@dataclass
class SceneObject:
    """One moving object. Per-frame arrays have length T (frames)."""

    instance: int  # 1.. over all objects; the value in the instance map
    label: int  # annotation id: 1..K for targets, 0 for distractors
    sprite: torch.Tensor  # float32 [4, S, S]: RGB in 0..255, then alpha in 0..1
    radius: float  # screen pixels covered by half the sprite canvas at scale 1
    cx: np.ndarray  # [T] centre column (pixels)
    cy: np.ndarray  # [T] centre row (pixels)
    angle: np.ndarray  # [T] rotation (radians)
    scale: np.ndarray  # [T]
    wobble: float  # non-rigid deformation amplitude, in half-canvas units
    wobble_freq: float
    wobble_phase: np.ndarray  # [T, 2]
    shape_kind: str
    mimics: int = 0  # for a distractor: the label of the target it imitates

    def extent(self, t: int) -> float:
        """Radius (pixels) of a disc that holds the deformed object at frame t."""
        return float(self.scale[t] * self.radius * (0.92 + self.wobble)) + 2.0


@dataclass
class ClipPlan:
    """Everything needed to render any frame of one clip."""

    height: int
    width: int
    frames: int
    background: torch.Tensor  # float32 [3, Hb, Wb]
    cam_offset: np.ndarray  # [T, 2] (x, y) pan in background pixels
    cam_zoom: np.ndarray  # [T]
    cam_roll: np.ndarray  # [T] radians
    objects: list[SceneObject]  # back to front
    light_gain: np.ndarray  # [T, 3] global per-channel gain
    spots: list[tuple[np.ndarray, np.ndarray, float, float]]  # (cx [T], cy [T], sigma, strength)
    blur: float
    noise_sigma: float
    events: dict = field(default_factory=dict)

    @property
    def targets(self) -> list[SceneObject]:
        return sorted((o for o in self.objects if o.label > 0), key=lambda o: o.label)


# ---------------------------------------------------------------- planning

def _make_sprite(rng: np.random.Generator, shape: dict, colours: np.ndarray, kind: str,
                 radius: float) -> torch.Tensor:
    """Textured, shaded sprite float32 [4, S, S] for a shape spec and palette."""
    size = max(16, math.ceil(2 * radius * 1.3))  # room to grow 30% before it blurs
    tex = textures.make_texture(rng, size, size, colours, kind=kind, scale=size * rng.uniform(0.12, 0.6))
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    direction = rng.uniform(0, 2 * math.pi)
    shading = 1.0 + rng.uniform(0.0, 0.5) * (xs * math.cos(direction) + ys * math.sin(direction))
    alpha = sc.shape_alpha(shape, size)
    rgba = np.concatenate([np.clip(tex * shading[None], 0, 255), alpha[None]], 0)
    return torch.from_numpy(rgba.astype(np.float32))


def _walk(rng: np.random.Generator, start: np.ndarray, steps: int, step_len: float,
          lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Random walk with persistent heading: float [steps + 1, 2], clamped to [lo, hi]."""
    pts = [np.asarray(start, np.float64)]
    heading = rng.uniform(0, 2 * math.pi)
    for _ in range(steps):
        heading += rng.normal(0, 0.8)
        step = step_len * rng.uniform(0.4, 1.0) * np.array([math.cos(heading), math.sin(heading)])
        pts.append(np.clip(pts[-1] + step, lo, hi))
    return np.array(pts)


def _exit_window(rng: np.random.Generator, frames: int) -> tuple[int, int, int, int] | None:
    """Frames (t1, t2, t3, t4): leave during t1..t2, stay out t2..t3, back by t4 <= T-2."""
    if frames < 10:
        return None
    ramp = max(2, frames // 8)
    hold = max(1, int(rng.integers(max(1, frames // 10), max(2, frames // 5) + 1)))
    t1 = int(rng.integers(max(1, frames // 5), max(2, frames // 3) + 1))
    while t1 + 2 * ramp + hold > frames - 2 and hold > 1:
        hold -= 1
    while t1 + 2 * ramp + hold > frames - 2 and t1 > 1:
        t1 -= 1
    if t1 + 2 * ramp + hold > frames - 2:
        return None
    return t1, t1 + ramp, t1 + ramp + hold, t1 + 2 * ramp + hold


def _apply_exit(obj: SceneObject, window: tuple[int, int, int, int], height: int, width: int) -> None:
    """Push the object fully out of the frame over ``window`` (towards its nearest edge) and back."""
    t1, t2, t3, t4 = window
    mid = (t2 + t3) // 2
    x, y = obj.cx[mid], obj.cy[mid]
    edge = int(np.argmin([x, width - x, y, height - y]))
    for t in range(t1 + 1, t4):
        if t < t2:
            env = (t - t1) / (t2 - t1)
        elif t <= t3:
            env = 1.0
        else:
            env = (t4 - t) / (t4 - t3)
        env = env * env * (3 - 2 * env)  # smoothstep: no jolt when leaving or coming back
        reach = obj.extent(t) + 1.0
        if edge == 0:
            obj.cx[t] -= env * (obj.cx[t] + reach)
        elif edge == 1:
            obj.cx[t] += env * (width - obj.cx[t] + reach)
        elif edge == 2:
            obj.cy[t] -= env * (obj.cy[t] + reach)
        else:
            obj.cy[t] += env * (height - obj.cy[t] + reach)


def _plan_objects(rng: np.random.Generator, frames: int, height: int, width: int) -> tuple[list[SceneObject], dict]:
    """Targets (labels 1..K) and distractors with their paths, back to front, and the events
    (crossings, exits) that were planned."""
    short = min(height, width)
    n_targets = int(rng.choice([1, 2, 3, 4, 5], p=[0.15, 0.25, 0.25, 0.2, 0.15]))
    n_distractors = int(rng.choice([0, 1, 2], p=[0.15, 0.55, 0.3]))
    size_factor = 1.0 if n_targets + n_distractors <= 4 else 0.85
    looks = []  # (shape, colours, texture kind, radius, label, mimics)
    for label in range(1, n_targets + 1):
        looks.append((sc.random_shape(rng), textures.random_palette(rng, int(rng.integers(2, 5))),
                      textures.TEXTURE_KINDS[int(rng.integers(len(textures.TEXTURE_KINDS)))],
                      short * rng.uniform(0.1, 0.26) * size_factor, label, 0))
    for _ in range(n_distractors):
        shape, colours, kind, radius, label, _ = looks[int(rng.integers(n_targets))]
        twin_colours = np.clip(colours + rng.normal(0, 8, colours.shape), 0, 255).astype(np.float32)
        looks.append((sc.perturb_shape(rng, shape, 0.12), twin_colours, kind,
                      radius * rng.uniform(0.8, 1.2), 0, label))

    n_keys = max(3, 1 + round(frames / 8))
    key_t = np.unique(np.round(np.linspace(0, frames - 1, n_keys)).astype(int))
    n_keys = len(key_t)
    step_t = float(np.mean(np.diff(key_t)))
    objects, keys = [], []
    for instance, (shape, colours, kind, radius, label, mimics) in enumerate(looks, start=1):
        margin = radius * 0.95 + 2
        lo0, hi0 = np.array([margin, margin]), np.array([width - margin, height - margin])
        start = rng.uniform(lo0, np.maximum(hi0, lo0 + 1))
        step_len = short * rng.uniform(0.005, 0.03) * step_t
        keys.append(_walk(rng, start, n_keys - 1, step_len, np.array([-0.2 * radius] * 2),
                          np.array([width + 0.2 * radius, height + 0.2 * radius])))
        angle0, spin = rng.uniform(0, 2 * math.pi), rng.normal(0, 0.03)
        t = np.arange(frames)
        objects.append(SceneObject(
            instance=instance, label=label, sprite=_make_sprite(rng, shape, colours, kind, radius),
            radius=radius, cx=np.zeros(frames), cy=np.zeros(frames),
            angle=angle0 + spin * t + rng.uniform(0, 0.2) * sc.smooth_curve(rng, frames),
            scale=np.exp(rng.uniform(0.0, 0.3) * sc.smooth_curve(rng, frames)),
            wobble=float(rng.uniform(0.02, 0.1)) if rng.random() < 0.7 else 0.0,
            wobble_freq=float(rng.uniform(1.0, 3.0)),
            wobble_phase=rng.uniform(0, 2 * math.pi, 2)[None] + np.outer(t, rng.uniform(0.05, 0.3, 2)),
            shape_kind=shape["kind"], mimics=mimics))

    events: dict = {"crossings": [], "exits": []}
    if len(objects) >= 2 and n_keys >= 3 and rng.random() < 0.85:
        # Two objects meet at an interior key: one passes in front of the other.
        a = int(rng.integers(n_targets))
        b = int(rng.choice([i for i in range(len(objects)) if i != a]))
        k = int(rng.integers(1, n_keys - 1))
        meet = keys[a][k] + rng.normal(0, 0.3 * objects[b].radius, 2)
        lo, hi = np.array([-0.2 * objects[b].radius] * 2), np.array([width, height]) + 0.2 * objects[b].radius
        step_len = float(np.linalg.norm(np.diff(keys[b], axis=0), axis=1).max()) + 1.0
        back = _walk(rng, meet, k, step_len, lo, hi)[::-1]
        ahead = _walk(rng, meet, n_keys - 1 - k, step_len, lo, hi)
        keys[b] = np.concatenate([back, ahead[1:]])
        margin = objects[b].radius * 0.95 + 2  # frame 0 must still show the whole object
        keys[b][0] = np.clip(keys[b][0], margin, np.maximum([width - margin, height - margin], margin + 1))
        events["crossings"].append({"instances": [a + 1, b + 1], "frame": int(key_t[k])})
    for obj, key in zip(objects, keys):
        path = sc.hermite_path(key_t, key, frames)
        obj.cx, obj.cy = path[:, 0].copy(), path[:, 1].copy()
    window = _exit_window(rng, frames)
    if window is not None and rng.random() < 0.55:
        pool = [o for o in objects if o.label > 0] if rng.random() < 0.8 or n_distractors == 0 else \
            [o for o in objects if o.label == 0]
        leaver = pool[int(rng.integers(len(pool)))]
        _apply_exit(leaver, window, height, width)
        events["exits"].append({"instance": leaver.instance, "label": leaver.label,
                                "gone_from": window[1], "gone_until": window[2]})
    depth = rng.permutation(len(objects))
    return [objects[i] for i in depth], events


def _plan_background(rng: np.random.Generator, height: int, width: int) -> torch.Tensor:
    """Background texture float32 [3, 1.5 H, 1.5 W]: base texture, optional second region, patches."""
    bh, bw = int(height * 1.5), int(width * 1.5)
    short = min(bh, bw)
    colours = textures.random_palette(rng, int(rng.integers(2, 5)))
    bg = textures.make_texture(rng, bh, bw, colours, scale=short * rng.uniform(0.05, 0.4))
    if rng.random() < 0.5:  # a second region (floor / wall) behind a wavy boundary
        other = textures.make_texture(rng, bh, bw, scale=short * rng.uniform(0.05, 0.3))
        rows = np.arange(bh, dtype=np.float32)[:, None]
        edge = bh * rng.uniform(0.3, 0.7) + textures.fractal_noise(rng, 1, bw, bw * 0.3, octaves=3)[0] * bh * 0.05
        w = np.clip((rows - edge) / 2.0 + 0.5, 0, 1)[None]
        bg = bg * (1 - w) + other * w
    for _ in range(int(rng.integers(3, 11))):  # static clutter shapes painted into the scene
        size = int(short * rng.uniform(0.07, 0.35)) + 8
        alpha = sc.shape_alpha(sc.random_shape(rng), size)
        patch_colours = colours if rng.random() < 0.7 else None
        patch = textures.make_texture(rng, size, size, patch_colours)
        y, x = int(rng.integers(0, bh - size)), int(rng.integers(0, bw - size))
        region = bg[:, y:y + size, x:x + size]
        bg[:, y:y + size, x:x + size] = region * (1 - alpha) + patch * alpha
    shade = 1.0 + rng.uniform(0.05, 0.25) * textures.fractal_noise(rng, bh, bw, short * 0.5, octaves=2)[0]
    return torch.from_numpy(np.clip(bg * shade[None], 0, 255).astype(np.float32))


def plan_clip(seed: int, index: int, frames: int, height: int, width: int) -> ClipPlan:
    """Draw the content of clip ``index`` (deterministic in its arguments); frames >= 2."""
    rng = sc.clip_rng(seed, index)
    short = min(height, width)
    t = np.arange(frames)
    background = _plan_background(rng, height, width)
    bound = np.array([0.2 * width, 0.15 * height])
    key_t = np.unique(np.round(np.linspace(0, frames - 1, max(2, 1 + round(frames / 10)))).astype(int))
    step = short * rng.uniform(0.0, 0.02) * float(np.mean(np.diff(key_t)))  # pan up to 2% of the short side a frame
    start = rng.uniform(-bound * 0.5, bound * 0.5)
    cam_offset = sc.hermite_path(key_t, _walk(rng, start, len(key_t) - 1, step, -bound, bound), frames)
    cam_zoom = 1.0 + rng.uniform(0.0, 0.1) * (0.5 + 0.5 * sc.smooth_curve(rng, frames))
    cam_roll = rng.uniform(0.0, 0.05) * sc.smooth_curve(rng, frames)
    light_gain = (1.0 + rng.uniform(0.03, 0.2) * sc.smooth_curve(rng, frames))[:, None] \
        * (1.0 + rng.uniform(0.0, 0.05) * np.stack([sc.smooth_curve(rng, frames) for _ in range(3)], 1))
    spots = []
    for _ in range(int(rng.integers(0, 3))):
        a, b = rng.uniform([0, 0], [width, height]), rng.uniform([0, 0], [width, height])
        path = a[None] + (b - a)[None] * (t / max(frames - 1, 1))[:, None]
        spots.append((path[:, 0], path[:, 1], float(short * rng.uniform(0.2, 0.6)),
                      float(rng.uniform(-0.35, 0.3))))
    blur = float(rng.uniform(0.0, 0.22))
    noise_sigma = float(rng.uniform(0.5, 3.5))
    for _attempt in range(50):  # redraw the objects until every target is clear in frame 0
        objects, events = _plan_objects(rng, frames, height, width)
        plan = ClipPlan(height, width, frames, background, cam_offset, cam_zoom, cam_roll, objects,
                        light_gain, spots, blur, noise_sigma, events)
        if _first_frame_ok(plan):
            return plan
    raise RuntimeError(f"could not place the objects of clip {index} (seed {seed}) at {height}x{width}")


def _first_frame_ok(plan: ClipPlan) -> bool:
    """Every target is inside frame 0 with at least 55% of its area visible and a non-trivial size."""
    labels, _ = render_masks(plan, 0)
    min_pixels = max(30, int(0.002 * plan.height * plan.width))
    for obj in plan.targets:
        patch = object_patch(obj, 0, plan.height, plan.width)
        if patch is None:
            return False
        y0, x0, rgba = patch
        full = int((rgba[3] >= 0.5).sum())
        touches = y0 == 0 or x0 == 0 or y0 + rgba.shape[1] >= plan.height or x0 + rgba.shape[2] >= plan.width
        visible = int((labels == obj.label).sum())
        if touches or full < min_pixels or visible < 0.55 * full:
            return False
    return True


# ---------------------------------------------------------------- rendering

def object_patch(obj: SceneObject, t: int, height: int, width: int) -> tuple[int, int, np.ndarray] | None:
    """The object at frame t over its on-screen box: (row, col, rgba float32 [4, h, w]) or None
    when it is entirely outside the frame."""
    reach = obj.extent(t)
    x0, x1 = max(0, int(obj.cx[t] - reach)), min(width, math.ceil(obj.cx[t] + reach))
    y0, y1 = max(0, int(obj.cy[t] - reach)), min(height, math.ceil(obj.cy[t] + reach))
    if x1 <= x0 or y1 <= y0:
        return None
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64) + 0.5
    dx, dy = xs - obj.cx[t], ys - obj.cy[t]
    c, s = math.cos(obj.angle[t]), math.sin(obj.angle[t])
    unit = obj.scale[t] * obj.radius
    u, v = (c * dx + s * dy) / unit, (-s * dx + c * dy) / unit  # sprite canvas units, -1..1
    if obj.wobble:
        k = obj.wobble_freq * math.pi
        u, v = (u + obj.wobble * np.sin(k * v + obj.wobble_phase[t, 0]),
                v + obj.wobble * np.sin(k * u + obj.wobble_phase[t, 1]))
    rgba = sc.warp_sample(obj.sprite, np.stack([u, v], -1))
    return y0, x0, rgba


def render_masks(plan: ClipPlan, t: int) -> tuple[np.ndarray, np.ndarray]:
    """Visible-pixel maps at frame t: (labels uint8 [H, W] with target ids, instances uint8 [H, W]
    with every object, distractors included)."""
    labels = np.zeros((plan.height, plan.width), np.uint8)
    instances = np.zeros_like(labels)
    for obj in plan.objects:
        patch = object_patch(obj, t, plan.height, plan.width)
        if patch is None:
            continue
        y0, x0, rgba = patch
        hard = rgba[3] >= 0.5
        h, w = hard.shape
        labels[y0:y0 + h, x0:x0 + w][hard] = obj.label
        instances[y0:y0 + h, x0:x0 + w][hard] = obj.instance
    return labels, instances


def render_frame(plan: ClipPlan, t: int, noise_rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame t: (rgb uint8 [H, W, 3], labels uint8 [H, W], instances uint8 [H, W])."""
    h, w = plan.height, plan.width
    bh, bw = plan.background.shape[1:]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    dx, dy = (xs - w / 2) / plan.cam_zoom[t], (ys - h / 2) / plan.cam_zoom[t]
    c, s = math.cos(plan.cam_roll[t]), math.sin(plan.cam_roll[t])
    bx = bw / 2 + plan.cam_offset[t, 0] + c * dx - s * dy
    by = bh / 2 + plan.cam_offset[t, 1] + s * dx + c * dy
    img = sc.warp_sample(plan.background, np.stack([bx / bw * 2 - 1, by / bh * 2 - 1], -1), padding="border")
    labels = np.zeros((h, w), np.uint8)
    instances = np.zeros_like(labels)
    for obj in plan.objects:
        patch = object_patch(obj, t, h, w)
        if patch is None:
            continue
        y0, x0, rgba = patch
        ph, pw = rgba.shape[1:]
        alpha = rgba[3:4]
        region = img[:, y0:y0 + ph, x0:x0 + pw]
        img[:, y0:y0 + ph, x0:x0 + pw] = region * (1 - alpha) + rgba[:3] * alpha
        hard = rgba[3] >= 0.5
        labels[y0:y0 + ph, x0:x0 + pw][hard] = obj.label
        instances[y0:y0 + ph, x0:x0 + pw][hard] = obj.instance
    light = np.ones((h, w), np.float32)
    rows, cols = np.arange(h, dtype=np.float32) + 0.5, np.arange(w, dtype=np.float32) + 0.5
    for cx, cy, sigma, strength in plan.spots:
        gy = np.exp(-((rows - cy[t]) ** 2) / (2 * sigma * sigma))
        gx = np.exp(-((cols - cx[t]) ** 2) / (2 * sigma * sigma))
        light += np.float32(strength) * np.outer(gy, gx)
    img = img * light[None] * plan.light_gain[t].astype(np.float32)[:, None, None]
    img = sc.blur3(img, plan.blur)
    img = img + noise_rng.standard_normal(img.shape, dtype=np.float32) * np.float32(plan.noise_sigma)
    return sc.to_uint8(img), labels, instances
