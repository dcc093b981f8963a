"""`vseg run` for semi-supervised VOS: a video and its first-frame mask in, one PNG per frame out.

Source (PyAV decoding) -> :class:`InferenceCore` (engines through a backend) -> sinks: palette
PNGs written atomically as produced (the input mask's ids and palette kept), optionally an
overlay mp4, and a summary dict for ``--json``.

Interruption: the first SIGINT (Ctrl-C) lets the current frame finish and stops after it; a
second one stops at once, dropping the frame in progress (its PNG is never half written, the
PNG writes being atomic). Either way the overlay mp4 is finalized and :class:`RunInterrupted`
(one line, exit code 130) says how far the run got.

Resume (``resume=True``): the run continues after the last of the consecutive PNGs
``00000.png``... already in the output folder. The state (memory, gate state, STFF state) is
rebuilt by running the finished frames again without writing their PNGs: replaying the same
computation in the same order gives the same state, so the resumed output equals an
uninterrupted run's. A record of what made the outputs (``.vseg_run.json``: video, mask,
model, weights, backend, options) must match, or the resume is refused. The overlay, being
one file, is written again from the first frame.
"""

from __future__ import annotations

import hashlib
import json
import signal
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from vseg.data.palette import read_mask
from vseg.data.video import VideoSource
from vseg.errors import InputError, VsegError
from vseg.jsonio import write_json
from vseg.runtime.backends import Backend
from vseg.runtime.inference_core import InferenceCore
from vseg.runtime.sinks import OverlaySink, PaletteSink, frame_png

RUN_RECORD = ".vseg_run.json"


class RunInterrupted(VsegError):
    """A run stopped by SIGINT; the finished frames are on disk."""

    exit_code = 130  # what shells report for Ctrl-C


class StopRequest:
    """Set by the first SIGINT while :func:`sigint_stops_after_frame` is active."""

    def __init__(self) -> None:
        self.requested = False


@contextmanager
def sigint_stops_after_frame():
    """First SIGINT: set ``requested`` (the loop stops after the current frame); a second one
    raises KeyboardInterrupt at once. Outside the main thread signals cannot be caught and
    Ctrl-C keeps its default behaviour."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum, frame):
        if request.requested:
            raise KeyboardInterrupt
        request.requested = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield request
    finally:
        signal.signal(signal.SIGINT, previous)


def finished_frames(out_dir: str | Path) -> int:
    """How many consecutive frames 00000.png, 00001.png... the folder holds."""
    count = 0
    while frame_png(out_dir, count).is_file():
        count += 1
    return count


def run_record(video: Path, mask: Path, backend: Backend, core: InferenceCore) -> dict:
    """What determines a run's outputs; a resume must find the same record."""
    description = backend.describe()
    return {
        "video": str(video.resolve()), "video_bytes": video.stat().st_size,
        "mask_sha256": hashlib.sha256(mask.read_bytes()).hexdigest(),
        "model": backend.model_name, "config": backend.model_config, "weights": backend.weights_id(),
        "backend": backend.name, "engines": description.get("engines"),
        "policy": core.policy.options(), "capacity": core.capacity, "skip_absent": core.skip_absent,
        "min_side": core.min_side,
    }


def _resume_point(out_dir: Path, record: dict) -> int:
    """Frames already finished in ``out_dir`` by a run with the same record (InputError if not)."""
    path = out_dir / RUN_RECORD
    if not path.is_file():
        raise InputError(f"{out_dir}: nothing to resume (no {RUN_RECORD} of an earlier vseg run)")
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputError(f"{path}: unreadable run record; start afresh without --resume") from None
    differing = [k for k in record if earlier.get(k) != json.loads(json.dumps(record[k]))]
    if differing:
        raise InputError(f"{out_dir}: the earlier run differs in {', '.join(differing)}; "
                         f"resume with the same inputs and options, or start afresh without --resume")
    return finished_frames(out_dir)


def _clear_earlier_run(out_dir: Path) -> int:
    """A fresh run into a folder an earlier vseg run wrote: remove that run's frames, so a
    later --resume cannot take them for this run's. Returns 0 (frames finished)."""
    if (out_dir / RUN_RECORD).is_file():
        for index in range(finished_frames(out_dir)):
            frame_png(out_dir, index).unlink()
    return 0


def run_vos(video: str | Path, mask: str | Path, backend: Backend, out_dir: str | Path, *, mem_every: int = 5,
            keep_previous: bool = True, capacity: int = 8, budget: float | None = None, dense_every: int | None = None,
            skip_absent: bool = True, min_side: int | None = None, max_frames: int | None = None, overlay: str | Path | None = None, resume: bool = False,
            on_frame: Callable[[int, int | None], None] | None = None) -> dict:
    """Segment ``video`` from the first-frame ``mask`` through ``backend``; returns a summary dict.

    mem_every / keep_previous / budget / dense_every: the scheduler policy's options (budget
    and dense_every for spvos); capacity: memory slots (an engine folder's own count wins);
    skip_absent: objects read only the memory frames that show them; min_side: scale smaller
    frames up to this shorter side (None: the model's, see InferenceCore). overlay: also write
    the masks blended on the video to this mp4. resume: continue an interrupted run (see the
    module docstring). on_frame(index, total) is called after each frame is written (total may
    be None). A mask whose size differs from the video, an empty mask, a mask with colours
    that are not objects, or a video that is not one is an InputError naming the file.
    """
    video, mask, out = Path(video), Path(mask), Path(out_dir)
    ids, palette = read_mask(mask)
    if not ids.any():
        raise InputError(f"{mask}: the mask has no objects (all background)")
    core = InferenceCore(backend, mem_every=mem_every, capacity=capacity, budget=budget, dense_every=dense_every,
                         keep_previous=keep_previous, skip_absent=skip_absent, min_side=min_side)
    with VideoSource(video, motion_vectors=False) as source:
        if (source.height, source.width) != ids.shape:
            raise InputError(f"{mask}: mask is {ids.shape[0]}x{ids.shape[1]} but {video} is "
                             f"{source.height}x{source.width}")
        record = run_record(video, mask, backend, core)
        done = _resume_point(out, record) if resume else _clear_earlier_run(out)
        sink = PaletteSink(out, palette)
        write_json(out / RUN_RECORD, record)
        total = source.frame_count if max_frames is None else min(max_frames, source.frame_count or max_frames)
        overlay_sink = (OverlaySink(overlay, source.width, source.height, source.fps, palette)
                        if overlay is not None else None)
        processed = 0
        start = time.perf_counter()
        try:
            with sigint_stops_after_frame() as stop:
                for frame in source:
                    if max_frames is not None and frame.index >= max_frames:
                        break
                    result = core.step(frame.rgb, ids if frame.index == 0 else None, mask_name=str(mask))
                    if frame.index >= done:  # a resumed run replays finished frames without rewriting them
                        sink.write(frame.index, result.ids)
                    if overlay_sink is not None:
                        overlay_sink.write(frame.rgb, result.ids)
                    processed += 1
                    if on_frame is not None:
                        on_frame(frame.index, total)
                    if stop.requested:
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RunInterrupted(f"interrupted: {finished_frames(out)} frames of {video} are in {out}; "
                                 f"run again with --resume to continue") from None
        finally:
            if overlay_sink is not None:
                overlay_sink.close()
    seconds = time.perf_counter() - start
    return {
        "video": str(video), "mask": str(mask), "out": str(out),
        "overlay": str(overlay) if overlay is not None else None,
        "size": [int(ids.shape[0]), int(ids.shape[1])],
        "resumed_at": done if resume else None, "written": sink.written,
        "seconds": round(seconds, 4), "fps": round(processed / seconds, 3) if seconds > 0 else None,
        "backend": backend.describe(),
        **core.summary(),
    }
