"""Accuracy and cost of `arseg` on labelled videos, three ways and by distance from the keyframe.

For every clip (decoded video + labels + motion, :func:`vseg.train.arseg_data.load_clips`):

- ``full``: the full-resolution network on every frame;
- ``lr_only``: the low-resolution branch alone on every frame (at ``lr_scale``);
- ``arseg``: keyframes (I-frames, or every L frames) at full resolution, every other frame by
  the low-resolution branch + CReFF with the keyframe's feature warped by the accumulated
  motion: exactly what the runtime does, batched.

Frames are padded (edge replicated) to multiples of 8 and predictions cropped back. mIoU comes
from one confusion matrix per method over all labelled pixels (:class:`vseg.metrics.vss.ConfusionMatrix`),
and per distance d = 0..L-1 from the keyframe (d = 0: keyframes, where arseg equals full).
GFLOPs per frame: FlopCounterMode counts (:func:`vseg.models.arseg.arseg_gflops`); arseg's is
the mix of keyframes and non-keyframes actually scheduled.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from vseg.data.datasets import read_classes
from vseg.metrics.vss import ConfusionMatrix
from vseg.models.arseg import (
    STRIDE,
    ARSeg,
    arseg_gflops,
    check_lr_scale,
    downscale,
    lr_size,
)
from vseg.runtime.arseg_engines import class_map, pad_frames
from vseg.runtime.arseg_motion import pad_motion
from vseg.train.arseg_data import IGNORE, Clip, load_clips

METHODS = ("full", "lr_only", "arseg")


@torch.no_grad()
def predict_clip(model: ARSeg, clip: Clip, lr_scale: float, batch: int = 8,
                 lr_alone: ARSeg | None = None) -> dict[str, np.ndarray]:
    """Class maps uint8 [T, H, W] of the clip for each of :data:`METHODS` (lr_only from
    ``lr_alone``'s LR branch when given)."""
    frames = pad_frames(clip.frames)
    t, h, w = clip.labels.shape
    hp, wp = frames.shape[-2:]
    small = lr_size(hp, wp, lr_scale)
    feature_size = (hp // STRIDE, wp // STRIDE)
    mv = torch.from_numpy(pad_motion(clip.acc, hp, wp))
    key_of = np.maximum.accumulate(np.where(clip.keyframe, np.arange(t), 0))  # each frame's keyframe
    out = {m: np.empty((t, h, w), np.uint8) for m in METHODS}
    features = []
    for s in range(0, t, batch):
        logits, feature = model.keyframe(frames[s:s + batch])
        out["full"][s:s + batch] = class_map(logits[..., :h, :w]).numpy()
        features.append(feature)
    features = torch.cat(features)
    for s in range(0, t, batch):
        idx = np.arange(s, min(s + batch, t))
        frames_lr = downscale(frames[idx], small)
        lr_up = model.lr_feature(frames_lr, feature_size)
        alone = model if lr_alone is None else lr_alone
        alone_up = lr_up if lr_alone is None else alone.lr_feature(frames_lr, feature_size)
        out["lr_only"][idx] = class_map(alone.classify(alone_up, (hp, wp))[..., :h, :w]).numpy()
        fused = model.fuse(features[key_of[idx]], lr_up, mv[idx])
        fused = torch.where(torch.from_numpy(clip.keyframe[idx]).view(-1, 1, 1, 1), features[idx], fused)
        out["arseg"][idx] = class_map(model.classify(fused, (hp, wp))[..., :h, :w]).numpy()
    return out


def _scores(confusion: ConfusionMatrix) -> dict:
    return {"mIoU": 100.0 * confusion.miou(), "pixel_accuracy": 100.0 * confusion.pixel_accuracy(),
            "IoU": [None if np.isnan(v) else 100.0 * v for v in confusion.iou()]}


def evaluate_arseg(model: ARSeg, data: str | Path, split: str = "val", *, lr_alone: ARSeg | None = None,
                   lr_scale: float | None = None, keyframe_interval: int | None = None,
                   max_clips: int | None = None, cache_dir: str | Path | None = None,
                   on_clip: Callable[[int, int, str], None] | None = None) -> dict:
    """mIoU of full / lr_only / arseg on ``split`` of ``data``, by distance, with GFLOPs per frame.

    ``lr_alone``: the model whose LR branch is the low-resolution network alone (training's
    ``-lr-alone`` weights); None uses ``model``'s own LR branch without CReFF. ``lr_scale``
    defaults to the model's; ``keyframe_interval`` None keys on I-frames. ``on_clip(done,
    total, name)`` is called after each clip. Returns a JSON-ready dict.
    """
    scale = check_lr_scale(model.config.lr_scale if lr_scale is None else lr_scale)
    model = model.eval()
    lr_alone = lr_alone.eval() if lr_alone is not None else None
    clips = load_clips(data, split, cache_dir, keyframe_interval, max_clips)
    classes = model.num_classes
    overall = {m: ConfusionMatrix(classes, IGNORE) for m in METHODS}
    by_distance: dict[int, dict[str, ConfusionMatrix]] = {}
    counts: dict[int, int] = {}
    for n, clip in enumerate(clips):
        predictions = predict_clip(model, clip, scale, lr_alone=lr_alone)
        for i in np.flatnonzero(clip.labelled):
            d = int(clip.distance[i])
            per_d = by_distance.setdefault(d, {m: ConfusionMatrix(classes, IGNORE) for m in METHODS})
            counts[d] = counts.get(d, 0) + 1
            for m in METHODS:
                overall[m].update(predictions[m][i], clip.labels[i])
                per_d[m].update(predictions[m][i], clip.labels[i])
        if on_clip is not None:
            on_clip(n + 1, len(clips), clip.name)
    h, w = clips[0].frames.shape[1:3]
    hp, wp = h + (-h % STRIDE), w + (-w % STRIDE)
    keyframes = sum(int(c.keyframe.sum()) for c in clips)
    frames = sum(len(c.keyframe) for c in clips)
    cost = arseg_gflops(model.config, hp, wp, scale)
    arseg_cost = (keyframes * cost["keyframe"] + (frames - keyframes) * cost["nonkey"]) / frames
    gflops = {"full": cost["keyframe"], "lr_only": cost["lr_only"], "arseg": arseg_cost}
    lr_alone_source = "the lr_alone model" if lr_alone is not None else "the model's LR branch without CReFF"
    names = read_classes(Path(data) / "classes.json")[0][:classes]
    return {
        "data": str(data), "split": split, "clips": len(clips), "frames": frames, "keyframes": keyframes,
        "labelled_frames": sum(counts.values()), "size": [h, w], "padded_size": [hp, wp], "lr_scale": scale,
        "lr_size": cost["lr_size"], "keyframe_interval": keyframe_interval, "classes": names,
        "lr_only_from": lr_alone_source,
        "methods": {m: {**_scores(overall[m]), "gflops_per_frame": gflops[m]} for m in METHODS},
        "gflops_saving": 1.0 - arseg_cost / cost["keyframe"],
        "by_distance": [{"distance": d, "frames": counts[d], **{m: 100.0 * by_distance[d][m].miou() for m in METHODS}}
                        for d in sorted(by_distance)],
    }


def format_arseg_table(result: dict) -> str:
    """Two plain-text tables: mIoU and GFLOPs per method, then mIoU by distance."""
    lines = [f"{'method':<8} {'mIoU':>7} {'GFLOPs/frame':>13}"]
    for m in METHODS:
        r = result["methods"][m]
        lines.append(f"{m:<8} {r['mIoU']:7.2f} {r['gflops_per_frame']:13.3f}")
    lines.append(f"GFLOPs saved by arseg: {100 * result['gflops_saving']:.1f}%")
    lines.append(f"{'d':>3} {'frames':>6} " + " ".join(f"{m:>8}" for m in METHODS))
    for row in result["by_distance"]:
        lines.append(f"{row['distance']:>3} {row['frames']:>6} " + " ".join(f"{row[m]:8.2f}" for m in METHODS))
    return "\n".join(lines)


__all__ = ["METHODS", "evaluate_arseg", "format_arseg_table", "predict_clip"]
