"""AR-Seg vs the full-resolution network on every frame, side by side on this machine.

Both run the same decoded frames of a compressed clip (a synthetic street clip at the given
size, IP-only H.264 with a GOP of 12, or ``--video``).

- ``model``: frames and motion fields decoded beforehand; timed from the padded frame to the
  class map, the two methods alternating GOP by GOP, so machine load hits both alike.
  FPS per pass = frames / summed time; the median over ``--passes`` is reported.
  ``--clock thread`` times the CPU time of the (single) compute thread instead of wall time,
  for a machine that other jobs share.
- ``end_to_end`` (``--end-to-end``): decoding included, whole passes alternating; the
  full-resolution path decodes without motion vectors (it needs none), AR-Seg with them and
  accumulates them.

GFLOPs per frame from FlopCounterMode. Weights from ``--weights`` or random (speed does not
depend on them). Example:

    python benchmarks/arseg_speed.py --height 180 --width 240 --threads 2 --json arseg_speed.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vseg.data.synth_vss import generate_vss
from vseg.data.video import VideoSource
from vseg.models.arseg import arseg_gflops, check_lr_scale, downscale, lr_size
from vseg.models.registry import build_model
from vseg.models.weights import load_named_model
from vseg.runtime.arseg_engines import class_map, pad_frames
from vseg.runtime.arseg_motion import KeyframeSchedule, decode_with_motion, pad_motion

CLOCKS = {"wall": time.perf_counter, "thread": time.thread_time}


def model_passes(model, motion, lr_scale: float, passes: int, warmup: int, clock: str = "wall") -> dict:
    """Both methods on pre-decoded frames and fields, alternating GOP by GOP (which goes first
    alternates too): machine load hits both alike, and each runs a GOP with its own weights
    warm in the caches, as it would alone."""
    frames = pad_frames(motion.frames)
    hp, wp = frames.shape[-2:]
    small = lr_size(hp, wp, lr_scale)
    fields = torch.from_numpy(pad_motion(motion.acc, hp, wp))
    h, w = motion.frames.shape[1:3]
    starts = [int(t) for t in np.flatnonzero(motion.keyframe)] + [len(frames)]
    gops = list(itertools.pairwise(starts))

    def full(first: int, end: int) -> None:
        for t in range(first, end):
            class_map(model.keyframe(frames[t:t + 1])[0][:, :, :h, :w])

    def arseg(first: int, end: int) -> None:
        logits, feature = model.keyframe(frames[first:first + 1])  # a GOP starts with its keyframe
        class_map(logits[:, :, :h, :w])
        for t in range(first + 1, end):
            logits = model.nonkey(downscale(frames[t:t + 1], small), feature, fields[t:t + 1])
            class_map(logits[:, :, :h, :w])

    now = CLOCKS[clock]
    totals = {"full": [], "arseg": []}
    methods = {"full": full, "arseg": arseg}
    with torch.inference_mode():
        for first, end in gops[:warmup]:
            full(first, end), arseg(first, end)
        for _ in range(passes):
            spent = {"full": 0.0, "arseg": 0.0}
            for i, (first, end) in enumerate(gops):
                for name in (("full", "arseg") if i % 2 == 0 else ("arseg", "full")):
                    start = now()
                    methods[name](first, end)
                    spent[name] += now() - start
            for name, seconds in spent.items():
                totals[name].append(len(frames) / seconds)
    return totals


def end_to_end_passes(model, video: Path, lr_scale: float, passes: int) -> dict:
    """Whole passes over the video, decoding included, alternating the two methods."""

    def full() -> int:
        with VideoSource(video, motion_vectors=False) as source:
            for n, frame in enumerate(source, 1):
                logits, _ = model.keyframe(pad_frames(frame.rgb[None]))
                class_map(logits[:, :, :source.height, :source.width])
        return n

    def arseg() -> int:
        with VideoSource(video, motion_vectors=True) as source:
            schedule = KeyframeSchedule(source.height, source.width)
            feature = None
            for n, frame in enumerate(source, 1):
                motion = schedule.push(frame)
                x = pad_frames(frame.rgb[None])
                if motion.keyframe:
                    logits, feature = model.keyframe(x)
                else:
                    mv = torch.from_numpy(pad_motion(motion.acc, *x.shape[-2:]))[None]
                    logits = model.nonkey(downscale(x, lr_size(*x.shape[-2:], lr_scale)), feature, mv)
                class_map(logits[:, :, :source.height, :source.width])
        return n

    totals = {"full": [], "arseg": []}
    with torch.inference_mode():
        for _ in range(passes):
            for name, fn in (("full", full), ("arseg", arseg)):
                start = time.perf_counter()
                frames = fn()
                totals[name].append(frames / (time.perf_counter() - start))
    return totals


def _summary(totals: dict) -> dict:
    fps = {name: statistics.median(values) for name, values in totals.items()}
    return {"fps": fps, "speedup": fps["arseg"] / fps["full"], "fps_per_pass": totals}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=None, help="arseg weights (default: random init)")
    ap.add_argument("--video", type=Path, default=None, help="an IP-only video (default: a synthetic clip)")
    ap.add_argument("--height", type=int, default=180)
    ap.add_argument("--width", type=int, default=240)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--lr-scale", type=float, default=0.5)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1, help="untimed GOPs of each method first")
    ap.add_argument("--end-to-end", action="store_true", help="also time whole passes with decoding")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                    help="model timing clock: wall, or thread (CPU time of this thread: with --threads 1, "
                         "what other processes on a shared machine do not change)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "thread" and torch.get_num_threads() != 1:
        ap.error("--clock thread needs --threads 1 (other threads' work would not be counted)")
    check_lr_scale(args.lr_scale)
    model = (load_named_model("arseg", args.weights) if args.weights else build_model("arseg")).eval()
    with tempfile.TemporaryDirectory() as tmp:
        video = args.video
        if video is None:
            generate_vss(tmp, clips=1, seed=7, frames=args.frames, height=args.height, width=args.width,
                         val_fraction=0.0)
            video = Path(tmp) / "videos" / "synth-7-0000.mp4"
        motion = decode_with_motion(video)
        h, w = motion.frames.shape[1:3]
        hp, wp = h + (-h % 8), w + (-w % 8)
        cost = arseg_gflops(model.config, hp, wp, args.lr_scale)
        keyframes = int(motion.keyframe.sum())
        arseg_cost = (keyframes * cost["keyframe"] + (len(motion.keyframe) - keyframes) * cost["nonkey"]) \
            / len(motion.keyframe)
        result = {
            "video": str(args.video) if args.video else f"synthetic street clip {args.height}x{args.width}",
            "frames": len(motion.keyframe), "keyframes": keyframes, "size": [h, w], "lr_scale": args.lr_scale,
            "lr_size": cost["lr_size"], "threads": torch.get_num_threads(), "weights": str(args.weights or "random"),
            "config": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(model.config).items()},
            "gflops_per_frame": {"full": cost["keyframe"], "arseg": arseg_cost, "saving": 1 - arseg_cost / cost["keyframe"]},
            "clock": args.clock,
            "model": _summary(model_passes(model, motion, args.lr_scale, args.passes, args.warmup, args.clock)),
        }
        if args.end_to_end:
            result["end_to_end"] = _summary(end_to_end_passes(model, video, args.lr_scale, args.passes))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
