"""The contents of a synthetic street (:mod:`vseg.data.synth_vss`): its class ids and scale, and the
upright billboards standing in it (cars, cyclists, pedestrians, trees, poles and signs, clutter).

A billboard is drawn in its own metres, ``u`` across and ``v`` up from its base centre; each kind's
shape function returns which of those points it covers, their class ids, the masks of its coloured
parts (in the order of ``Sprite.colours[1:]``) and how much texture grain it shows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vseg.data.textures import hsv_to_rgb

SKY, BUILDING, POLE, ROAD, SIDEWALK, VEGETATION, SIGN, FENCE, CAR, PEDESTRIAN, BICYCLIST = range(11)
IGNORE_INDEX = 255
LANE = 3.2  # metres per driving lane
FAR = 170.0  # sprites beyond this distance are not drawn (a few pixels at most)


@dataclass
class Sprite:
    """An upright billboard facing along the road, drawn in local metres (u across, v up)."""

    kind: str  # car, person, cyclist, tree, pole, clutter
    x: float  # base centre across the road (metres)
    z: float  # base centre along the road at frame 0
    vz: float  # metres per frame along the road
    width: float  # metres; the billboard spans x - width/2 .. x + width/2
    height: float
    colours: np.ndarray  # [k, 3] float32, kind-specific parts
    params: np.ndarray  # kind-specific numbers


def _clothes(rng: np.random.Generator, n: int) -> np.ndarray:
    return hsv_to_rgb(rng.uniform(0, 360, n), rng.uniform(0.0, 0.6, n), rng.uniform(0.12, 0.75, n))


def _skin(rng: np.random.Generator) -> np.ndarray:
    return hsv_to_rgb(rng.uniform(15, 35), rng.uniform(0.3, 0.6), rng.uniform(0.3, 0.9))


def _car(rng: np.random.Generator, x: float, z: float, vz: float, rear: bool) -> Sprite:
    body = hsv_to_rgb(rng.uniform(0, 360), rng.choice([0.0, 0.1, 0.6, 0.8]), rng.choice([0.1, 0.35, 0.6, 0.9]))
    lamp = hsv_to_rgb(0, 0.85, 0.75) if rear else hsv_to_rgb(50, 0.15, 0.95)
    # body, glass, tyres, lamps, number plate (the order _shape_car's parts follow)
    colours = np.stack([body, hsv_to_rgb(215, 0.25, rng.uniform(0.12, 0.3)), hsv_to_rgb(0, 0, 0.08), lamp,
                        hsv_to_rgb(55, rng.choice([0.0, 0.7]), 0.9)])
    return Sprite("car", x, z, vz, rng.uniform(1.65, 2.0), rng.uniform(1.35, 2.1), colours,
                  np.array([rng.uniform(0, 100)]))


def _person(rng: np.random.Generator, x: float, z: float, vz: float) -> Sprite:
    # skin, hair, shirt, trousers, shoes (the order _shape_person's parts follow)
    colours = np.concatenate([_skin(rng)[None], hsv_to_rgb(30, 0.5, rng.uniform(0.05, 0.5))[None],
                              _clothes(rng, 2), hsv_to_rgb(0, 0, 0.1)[None]])
    return Sprite("person", x, z, vz, 0.6, rng.uniform(1.5, 1.9), colours,
                  np.array([rng.uniform(0, 2 * math.pi), abs(vz) * rng.uniform(6, 9)]))


def make_sprites(rng: np.random.Generator, cam_z: np.ndarray, road: tuple, walk: tuple, verge: tuple) -> list[Sprite]:
    """Cars (parked, ahead, oncoming), cyclists, pedestrians, trees, poles with signs and clutter
    along the stretch of road the camera sees during the clip."""
    frames = len(cam_z)
    z_lo, z_hi = cam_z[0] - 10, cam_z[-1] + FAR
    speed = (cam_z[-1] - cam_z[0]) / max(frames - 1, 1)
    t = np.arange(frames)
    sprites: list[Sprite] = []
    for side_i, side in enumerate((-1, 1)):
        edge, walk_w = road[side_i], walk[side_i] - road[side_i]
        if edge > LANE:  # parking lane
            for z in np.arange(z_lo, z_hi, rng.uniform(5.5, 9)):
                if rng.random() < 0.6:
                    sprites.append(_car(rng, side * (LANE + 1.1), z + rng.uniform(0, 2), 0.0, rear=side > 0))
        for z in rng.uniform(z_lo, z_hi, rng.poisson((z_hi - z_lo) / rng.uniform(6, 20))):
            x = side * (edge + rng.uniform(0.4, max(0.5, walk_w - 0.4)))
            sprites.append(_person(rng, x, z, rng.choice([-1, 1]) * rng.uniform(0.03, 0.07)))
        tree_x = (walk[side_i] + verge[side_i]) / 2 if verge[side_i] > walk[side_i] else walk[side_i] - 0.6
        for z in np.arange(z_lo, z_hi, rng.uniform(7, 16)):
            if rng.random() < 0.6:
                radius = rng.uniform(1.3, 3.2)
                amps = rng.uniform(0, 0.12, 5)
                colours = np.stack([hsv_to_rgb(rng.uniform(75, 125), rng.uniform(0.35, 0.7), rng.uniform(0.25, 0.45)),
                                    hsv_to_rgb(rng.uniform(20, 35), rng.uniform(0.2, 0.4), rng.uniform(0.2, 0.35))])
                params = np.concatenate([[rng.uniform(1.5, 3.0), rng.uniform(0.2, 0.4), radius],
                                         amps, rng.uniform(0, 2 * math.pi, 5)])
                sprites.append(Sprite("tree", side * tree_x, z + rng.uniform(-2, 2), 0.0,
                                      2 * radius * (1 + amps.sum()), params[0] + radius * (2 + amps.sum()),
                                      colours, params))
        for z in np.arange(z_lo, z_hi, rng.uniform(12, 30)):
            sign = int(rng.integers(-1, 5)) if rng.random() < 0.6 else -1  # circle, triangle, rect, diamond, lights
            tall = sign < 0 or rng.random() < 0.5
            arm = tall and rng.random() < 0.6
            height = rng.uniform(5, 8) if tall else rng.uniform(2.3, 3.0)
            face = hsv_to_rgb(rng.choice([0, 215, 50, 120]), rng.uniform(0.6, 0.9), rng.uniform(0.6, 0.9))
            colours = np.stack([hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0, 0.15), rng.uniform(0.3, 0.6)),
                                face, hsv_to_rgb(0, 0, 0.92)])
            params = np.array([sign, rng.uniform(0.6, 0.9), -side * arm, rng.uniform(0.1, 0.2)])
            sprites.append(Sprite("pole", side * (edge + 0.35), z + rng.uniform(-3, 3), 0.0, 3.2, height + 0.1,
                                  colours, params))
        for z in np.arange(z_lo, z_hi, rng.uniform(15, 40)):
            if rng.random() < 0.35:
                body = hsv_to_rgb(rng.choice([30, 140, 0]), rng.uniform(0.2, 0.6), rng.uniform(0.2, 0.5))
                colours = np.stack([body, body * 0.7])  # body, lid
                sprites.append(Sprite("clutter", side * (walk[side_i] - 0.5), z, 0.0, rng.uniform(0.5, 0.9),
                                      rng.uniform(0.6, 1.2), colours, np.array([rng.integers(2)])))
    # Traffic in platoons (one speed per lane) so cars of a lane never run into each other.
    vz = speed + rng.uniform(-0.08, 0.08)
    z = float(np.max(cam_z - vz * t)) + 8 + rng.uniform(4, 40)  # never closer than 8 m ahead of us
    for _ in range(int(rng.integers(0, 3))):
        sprites.append(_car(rng, LANE / 2 + rng.uniform(-0.2, 0.2), z, vz, rear=True))
        z += rng.uniform(10, 30)
    vz, z = -rng.uniform(0.3, 0.6), cam_z[0] + rng.uniform(15, 60)
    while z < z_hi - vz * frames:  # oncoming, in the other lane
        sprites.append(_car(rng, -LANE / 2 + rng.uniform(-0.3, 0.3), z, vz, rear=False))
        z += rng.uniform(12, 80)
    for _ in range(int(rng.integers(0, 3)) if rng.random() < 0.6 else 0):  # cyclists at the kerb of our lane
        # jacket, trousers, helmet, bicycle, skin (the order _shape_cyclist's parts follow)
        colours = np.concatenate([_clothes(rng, 2), hsv_to_rgb(rng.uniform(0, 360), 0.7, 0.8)[None],
                                  hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0, 0.6), 0.3)[None], _skin(rng)[None]])
        vz = rng.uniform(0.12, 0.3)
        sprites.append(Sprite("cyclist", LANE - 0.6, cam_z[0] + rng.uniform(8, 60), vz, 0.7, 1.75, colours,
                              np.array([rng.uniform(0, 2 * math.pi), vz * 3])))
    return sprites


def _shape_car(sp: Sprite, u, v, t):
    w, h = sp.width, sp.height
    au, top = np.abs(u), 0.55 * h
    wheel = (au > w / 2 - 0.4) & (au < w / 2 - 0.05) & (v < 0.45)
    body = (au <= w / 2) & (v >= 0.25) & (v <= top) & ~((au > w / 2 - 0.08) & (v < 0.32))
    half = w / 2 * (0.92 - 0.2 * (v - top) / (h - top))
    cabin = (v > top) & (v <= h) & (au <= half) & ~((v > h - 0.06) & (au > half - 0.12))
    glass = cabin & (v > top + 0.06) & (v < h - 0.08) & (au < half - 0.1)
    lamp = body & (v > top - 0.14) & (v < top - 0.04) & (au > w / 2 - 0.38) & (au < w / 2 - 0.06)
    plate = body & (au < 0.26) & (v > 0.33) & (v < 0.45)
    parts = [glass, wheel & ~body, lamp, plate]
    return wheel | body | cabin, CAR, parts, 0.06


def _shape_person(sp: Sprite, u, v, t):
    h, phase = sp.height, sp.params[0] + sp.params[1] * t
    head = (u / (0.055 * h)) ** 2 + ((v - 0.93 * h) / (0.068 * h)) ** 2 <= 1
    hair = head & (v > 0.95 * h)
    half = 0.09 * h + 0.03 * h * (v - 0.48 * h) / (0.36 * h)
    torso = (v >= 0.48 * h) & (v <= 0.84 * h) & (np.abs(u) <= half)
    arms = (v >= 0.5 * h) & (v <= 0.82 * h) & (np.abs(np.abs(u) - half - 0.022 * h) < 0.02 * h)
    legs = np.zeros(u.shape, bool)
    shoes = np.zeros(u.shape, bool)
    for i, sign in enumerate((-1, 1)):
        lift = 0.05 * h * max(0.0, math.sin(phase + i * math.pi))
        leg = (np.abs(u - sign * 0.045 * h) < 0.038 * h) & (v >= lift) & (v < 0.5 * h)
        legs |= leg
        shoes |= leg & (v < lift + 0.035 * h)
    return head | torso | arms | legs, PEDESTRIAN, [hair, torso | arms, legs & ~shoes, shoes], 0.1


def _shape_cyclist(sp: Sprite, u, v, t):
    phase = sp.params[0] + sp.params[1] * t
    au = np.abs(u)
    frame = ((au < 0.025) & (v < 0.68)) | ((v > 0.93) & (v < 0.98) & (au < 0.28))
    legs = np.zeros(u.shape, bool)
    for i, sign in enumerate((-1, 1)):
        pedal = 0.25 + 0.1 * math.sin(phase + i * math.pi)
        legs |= (np.abs(u - sign * 0.09) < 0.055) & (v > pedal) & (v < 0.95)
    torso = (au < 0.17 + 0.03 * (v - 0.95) / 0.5) & (v >= 0.95) & (v < 1.45)
    arms = (au > 0.17) & (au < 0.24) & (v > 1.0) & (v < 1.4)
    head = (u / 0.1) ** 2 + ((v - 1.57) / 0.12) ** 2 <= 1
    helmet = head & (v > 1.6)
    return frame | legs | torso | arms | head, BICYCLIST, [legs, helmet, frame, head & ~helmet], 0.1


def _shape_tree(sp: Sprite, u, v, t):
    trunk_h, trunk_w, radius = sp.params[:3]
    amps, phases = sp.params[3:8], sp.params[8:13]
    centre = trunk_h + radius * 0.9
    du, dv = u, v - centre
    theta = np.arctan2(dv, du)
    reach = radius * (1 + sum(a * np.cos((k + 3) * theta + p) for k, (a, p) in enumerate(zip(amps, phases))))
    canopy = du * du + dv * dv <= reach * reach
    trunk = (np.abs(u) <= trunk_w / 2) & (v <= centre) & ~canopy
    return canopy | trunk, VEGETATION, [trunk], 0.45


def _shape_pole(sp: Sprite, u, v, t):
    sign, size, arm, width = sp.params
    h = sp.height - 0.1
    pole = (np.abs(u) <= width / 2) & (v <= h)
    if arm:
        along = u * arm
        pole |= (v > h - 0.12) & (v <= h) & (along >= 0) & (along <= 1.5)
        pole |= (v > h - 0.3) & (v <= h) & (along >= 1.1) & (along <= 1.5)
    sv, r = h - 0.15 - size / 2, size / 2
    dv, au = v - sv, np.abs(u)
    if sign == 0:
        face, inner = np.hypot(u, dv) <= r, np.hypot(u, dv) <= r - 0.06
    elif sign == 1:
        face, inner = (dv >= -r) & (au <= (r - dv) / math.sqrt(3)), (dv >= -r + 0.06) & (au <= (r - 0.1 - dv) / math.sqrt(3))
    elif sign == 2:
        face, inner = (au <= r * 0.9) & (np.abs(dv) <= r * 0.7), (au <= r * 0.9 - 0.05) & (np.abs(dv) <= r * 0.7 - 0.05)
    elif sign == 3:
        face, inner = au + np.abs(dv) <= r, au + np.abs(dv) <= r - 0.07
    elif sign == 4:  # traffic lights: dark box, three lamps
        face = (au <= 0.18) & (np.abs(dv) <= 0.45)
        inner = face & ~(((u / 0.1) ** 2 + ((dv - 0.28 * np.round(dv / 0.28)) / 0.1) ** 2 <= 1) & (np.abs(dv) < 0.4))
    else:
        face = inner = np.zeros(u.shape, bool)
    return pole | face, np.where(face, SIGN, POLE), [face & inner, face & ~inner], 0.05


def _shape_clutter(sp: Sprite, u, v, t):
    body = (np.abs(u) <= sp.width / 2) & (v <= sp.height)
    lid = (np.abs(u) <= sp.width / 2 + 0.03) & (v > sp.height - 0.08) & (v <= sp.height + 0.02) & (sp.params[0] > 0)
    return body | lid, IGNORE_INDEX, [lid], 0.1


SHAPES = {"car": _shape_car, "person": _shape_person, "cyclist": _shape_cyclist, "tree": _shape_tree,
          "pole": _shape_pole, "clutter": _shape_clutter}
