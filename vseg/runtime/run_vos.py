"""`vseg run` for semi-supervised VOS: a video and its first-frame mask in, one PNG per frame out.

Source (PyAV decoding) -> :class:`InferenceCore` (the frame loop's state) -> :class:`PaletteSink`
(atomic palette PNGs). The output keeps the input mask's object ids and palette.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from vseg.data.palette import read_mask
from vseg.data.video import VideoSource
from vseg.errors import InputError
from vseg.runtime.inference_core import InferenceCore
from vseg.runtime.sinks import PaletteSink


def run_vos(video: str | Path, mask: str | Path, model, out_dir: str | Path, *, mem_every: int = 5,
            capacity: int = 8, max_frames: int | None = None, key_policy=None,
            on_frame: Callable[[int, int | None], None] | None = None) -> dict:
    """Segment ``video`` from the first-frame ``mask`` with ``model``; returns a summary dict.

    ``key_policy`` sets how a stateful key encoder runs (spvos: ``model.make_key_policy(budget=...)``);
    ``on_frame(index, total)`` is called after each frame is written (total may be None).
    A mask whose size differs from the video, an empty mask, or a mask with colours that are
    not objects is an :class:`~vseg.errors.InputError` naming the mask file.
    """
    ids, palette = read_mask(mask)
    if not ids.any():
        raise InputError(f"{mask}: the mask has no objects (all background)")
    sink = PaletteSink(out_dir, palette)
    core = InferenceCore(model, mem_every=mem_every, capacity=capacity, key_policy=key_policy)
    start = time.perf_counter()
    with VideoSource(video, motion_vectors=False) as source:
        if (source.height, source.width) != ids.shape:
            raise InputError(f"{mask}: mask is {ids.shape[0]}x{ids.shape[1]} but {video} is "
                             f"{source.height}x{source.width}")
        total = source.frame_count if max_frames is None else min(max_frames, source.frame_count or max_frames)
        for frame in source:
            if max_frames is not None and frame.index >= max_frames:
                break
            result = core.step(frame.rgb, ids if frame.index == 0 else None, mask_name=str(mask))
            sink.write(frame.index, result.ids)
            if on_frame is not None:
                on_frame(frame.index, total)
    seconds = time.perf_counter() - start
    summary = {
        "video": str(video), "mask": str(mask), "out": str(sink.out_dir),
        "frames": sink.written, "objects": list(core.object_ids),
        "size": [int(ids.shape[0]), int(ids.shape[1])],
        "memory_writes": core.memory.num_writes, "seconds": seconds,
        "fps": sink.written / seconds if seconds > 0 else None,
        "threads": torch.get_num_threads(),
    }
    if core.key_policy is not None and hasattr(core.key_policy, "summary"):
        summary["sparse"] = core.key_policy.summary()  # dense vs realized GFLOPs, per-layer decision shares
    return summary
