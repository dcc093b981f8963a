"""Training data of `arseg`: labelled clips with the motion their video's codec recorded.

A clip is a CamVid-layout sequence (``<split>/<seq>/``, ``<split>annot/<seq>/``) whose video is
``<root>/videos/<seq>.mp4`` (what ``vseg data synth-vss`` writes). Frames come from the DECODED
video, as the runtime sees them; labels from the annotation PNGs (unlabelled frames are void).
Each clip's schedule (keyframes = I-frames, or every L frames) and its motion fields
accumulated back to the keyframe are computed once and cached as ``.npz`` in ``cache_dir``,
keyed by the video's size and modification time.

Batches are drawn by :func:`sample_frames` (single frames) and :func:`sample_pairs` (keyframe +
frame at distance d with its field; d uniform over 1..L-1 among the distances present), with
random crops (offsets on the 4-pixel motion grid) and horizontal flips that mirror the field
and negate dx. Every draw is a function of the numpy Generator
given, so a run is reproducible and a resumed run draws what the uninterrupted one would have.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vseg.data.datasets import CamVidDataset
from vseg.data.palette import atomic_save, read_mask
from vseg.errors import InputError
from vseg.runtime.arseg_motion import BLOCK, VideoMotion, decode_with_motion

IGNORE = 255  # void label after loading (the dataset's own ignore index is mapped to it)
CACHE_VERSION = 1


@dataclass
class Clip:
    """One sequence in memory: frames uint8 [T, H, W, 3] (decoded video), labels uint8 [T, H, W]
    (255 void), keyframe bool [T], distance int64 [T], acc float32 [T, 2, H/4, W/4]."""

    name: str
    frames: np.ndarray
    labels: np.ndarray
    keyframe: np.ndarray
    distance: np.ndarray
    acc: np.ndarray

    @property
    def labelled(self) -> np.ndarray:
        """bool [T]: frames with at least one labelled pixel."""
        return (self.labels != IGNORE).any(axis=(1, 2))


def _cached_motion(video: Path, cache_dir: Path | None, keyframe_interval: int | None) -> VideoMotion:
    if cache_dir is None:
        return decode_with_motion(video, keyframe_interval)
    stat = video.stat()
    path = cache_dir / f"{video.stem}-{stat.st_size}-{stat.st_mtime_ns}-L{keyframe_interval or 0}-v{CACHE_VERSION}.npz"
    if path.is_file():
        with np.load(path) as z:
            return VideoMotion(z["frames"], z["keyframe"], z["distance"], z["acc"])
    motion = decode_with_motion(video, keyframe_interval)
    cache_dir.mkdir(parents=True, exist_ok=True)
    atomic_save(path, lambda f: np.savez(f, frames=motion.frames, keyframe=motion.keyframe,
                                         distance=motion.distance, acc=motion.acc))
    return motion


def load_clips(root: str | Path, split: str = "train", cache_dir: str | Path | None = None,
               keyframe_interval: int | None = None, max_clips: int | None = None) -> list[Clip]:
    """Every sequence of ``split`` with its video, labels and motion (see the module docstring).

    A sequence without ``videos/<seq>.mp4``, a video whose frame count or size differs from the
    sequence's, or a split with no sequences is an InputError.
    """
    dataset = CamVidDataset(root, split)
    if not len(dataset):
        raise InputError(f"{dataset.root / split}: no sequences in split {split!r}")
    clips = []
    for seq in list(dataset)[:max_clips]:
        video = dataset.root / "videos" / f"{seq.name}.mp4"
        if not video.is_file():
            raise InputError(f"{video}: missing; arseg trains on each sequence's video (its motion vectors)")
        motion = _cached_motion(video, Path(cache_dir) if cache_dir else None, keyframe_interval)
        t, h, w = motion.frames.shape[:3]
        if t != len(seq.frames):
            raise InputError(f"{video}: has {t} frames, the sequence {seq.name} has {len(seq.frames)}")
        labels = np.full((t, h, w), IGNORE, np.uint8)
        for i in seq.annotated:
            ids, _ = read_mask(seq.masks[i], seq.palette)
            if ids.shape != (h, w):
                raise InputError(f"{seq.masks[i]}: label is {ids.shape[1]}x{ids.shape[0]}, the video is {w}x{h}")
            labels[i] = np.where(ids == dataset.ignore_index, IGNORE, ids)
        clips.append(Clip(seq.name, motion.frames, labels, motion.keyframe, motion.distance, motion.acc))
    return clips


def _crop_window(rng: np.random.Generator, height: int, width: int, crop: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, h, w): a crop of at most ``crop`` with its origin on the motion grid."""
    ch, cw = min(crop[0], height - height % 8), min(crop[1], width - width % 8)
    top = BLOCK * int(rng.integers(0, (height - ch) // BLOCK + 1))
    left = BLOCK * int(rng.integers(0, (width - cw) // BLOCK + 1))
    return top, left, ch, cw


def _to_tensor(frames: list[np.ndarray]) -> torch.Tensor:
    """uint8 [H, W, 3] images -> float [B, 3, H, W] in [0, 1]."""
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float().div_(255)


def sample_frames(clips: list[Clip], rng: np.random.Generator, batch: int, crop: tuple[int, int],
                  flip: bool = True) -> dict[str, torch.Tensor]:
    """Single-frame batch (stages hr and lr): {"frame" [B, 3, h, w] float, "label" [B, h, w] int64}
    from labelled frames."""
    pool = [(c, t) for c, clip in enumerate(clips) for t in np.flatnonzero(clip.labelled)]
    frames, labels = [], []
    for i in rng.integers(0, len(pool), batch):
        clip, t = clips[pool[i][0]], pool[i][1]
        top, left, h, w = _crop_window(rng, *clip.frames.shape[1:3], crop)
        frame = clip.frames[t, top:top + h, left:left + w]
        label = clip.labels[t, top:top + h, left:left + w]
        if flip and rng.random() < 0.5:
            frame, label = frame[:, ::-1], label[:, ::-1]
        frames.append(np.ascontiguousarray(frame))
        labels.append(np.ascontiguousarray(label))
    return {"frame": _to_tensor(frames), "label": torch.from_numpy(np.stack(labels)).long()}


def pair_pool(clips: list[Clip]) -> dict[int, list[tuple[int, int, int]]]:
    """{distance d >= 1: [(clip index, keyframe index, frame index)]} over labelled non-keyframes."""
    pool: dict[int, list[tuple[int, int, int]]] = {}
    for c, clip in enumerate(clips):
        for t in np.flatnonzero(clip.labelled & ~clip.keyframe):
            d = int(clip.distance[t])
            pool.setdefault(d, []).append((c, int(t) - d, int(t)))
    return pool


def sample_pairs(clips: list[Clip], rng: np.random.Generator, batch: int, crop: tuple[int, int],
                 flip: bool = True, pool: dict | None = None) -> dict[str, torch.Tensor]:
    """Fusion-stage batch: {"key" keyframes [B, 3, h, w], "frame" [B, 3, h, w], "label" [B, h, w],
    "mv" float32 [B, 2, h/4, w/4] (frame -> keyframe), "distance" int64 [B]}. The distance is
    drawn uniformly among those present, then a pair uniformly among that distance's pairs."""
    pool = pair_pool(clips) if pool is None else pool
    if not pool:
        raise InputError("no labelled non-keyframes to pair with a keyframe (does every frame of the videos "
                         "decode as an I-frame?)")
    distances = sorted(pool)
    keys, frames, labels, fields, picked = [], [], [], [], []
    for _ in range(batch):
        d = distances[int(rng.integers(0, len(distances)))]
        c, k, t = pool[d][int(rng.integers(0, len(pool[d])))]
        clip = clips[c]
        top, left, h, w = _crop_window(rng, *clip.frames.shape[1:3], crop)
        rows, cols = slice(top, top + h), slice(left, left + w)
        cells = (slice(None), slice(top // BLOCK, (top + h) // BLOCK), slice(left // BLOCK, (left + w) // BLOCK))
        key, frame, label, mv = clip.frames[k, rows, cols], clip.frames[t, rows, cols], clip.labels[t, rows, cols], \
            clip.acc[t][cells]
        if flip and rng.random() < 0.5:
            key, frame, label = key[:, ::-1], frame[:, ::-1], label[:, ::-1]
            mv = mv[:, :, ::-1] * np.array([-1, 1], np.float32).reshape(2, 1, 1)  # mirrored: dx changes sign
        keys.append(np.ascontiguousarray(key))
        frames.append(np.ascontiguousarray(frame))
        labels.append(np.ascontiguousarray(label))
        fields.append(np.ascontiguousarray(mv, np.float32))
        picked.append(d)
    return {"key": _to_tensor(keys), "frame": _to_tensor(frames), "label": torch.from_numpy(np.stack(labels)).long(),
            "mv": torch.from_numpy(np.stack(fields)), "distance": torch.tensor(picked)}


__all__ = ["IGNORE", "Clip", "load_clips", "pair_pool", "sample_frames", "sample_pairs"]
