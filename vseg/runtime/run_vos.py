"""`vseg run` for semi-supervised VOS: a video and its first-frame mask in, one PNG per frame out.

The video may be a file or a folder of frame images (DAVIS's and YouTube-VOS's ``JPEGImages``
folders, :class:`~vseg.data.frame_folder.FrameFolder`); the masks of a folder's frames are
named, and written, like its images (YouTube-VOS: ``00000``, ``00005``...), a video file's by
frame index (``00000.png``, ``00001.png``...). The mask may also be a folder of masks named
that way (as YouTube-VOS gives them): objects that enter after the first frame start on the
frame whose mask shows them (:class:`InferenceCore`, ``later_ids``), and an object a later mask
shows again is set to its pixels there. Their colours join the first mask's palette.

Source (PyAV decoding, or a folder of frames) -> :class:`InferenceCore` (engines through a backend) -> sinks: palette
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

import numpy as np

from vseg.data.frame_folder import open_frames
from vseg.data.palette import read_mask
from vseg.errors import InputError, VsegError
from vseg.jsonio import write_json
from vseg.runtime.backends import Backend
from vseg.runtime.given_masks import entering_ids
from vseg.runtime.inference_core import InferenceCore
from vseg.runtime.mirrored import MirroredCore, make_core
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


def finished_frames(out_dir: str | Path, names: list[str] | None = None) -> int:
    """How many consecutive frames 00000.png, 00001.png... (or named by ``names``) the folder holds."""
    count = 0
    while (names is None or count < len(names)) and frame_png(out_dir, count, names).is_file():
        count += 1
    return count


def read_given_masks(mask: Path, names: list[str] | None = None) -> tuple[dict[int, np.ndarray], np.ndarray, str]:
    """``--mask``: a PNG (the first frame's) or a folder of PNGs named by frame index, or by the
    frame ``names`` of a frame folder -> ({frame index: ids [H, W] uint8}, palette [256, 3] (the
    first's, plus the colours of ids entering later), sha256 of the files). A folder needs the
    first frame's mask, and every PNG in it must name a frame."""
    if not mask.is_dir():
        ids, palette = read_mask(mask)
        return {0: ids}, palette, hashlib.sha256(mask.read_bytes()).hexdigest()
    files = sorted(mask.glob("*.png"))
    if names is None:
        misnamed = [f.name for f in files if not f.stem.isdigit()]
        if misnamed:
            raise InputError(f"{mask}: mask files are named by frame index (00000.png, 00042.png...), "
                             f"not {misnamed[0]}")
        by_index = {int(f.stem): f for f in files}
    else:
        position = {name: i for i, name in enumerate(names)}
        strays = [f.name for f in files if f.stem not in position]
        if strays:
            raise InputError(f"{mask}: {strays[0]} names no frame of the video folder (its frames are "
                             f"{names[0]}...{names[-1]})")
        by_index = {position[f.stem]: f for f in files}
    if 0 not in by_index:
        first = "00000.png" if names is None else f"{names[0]}.png"
        raise InputError(f"{mask}: a mask folder needs the first frame's mask, {first}")
    digest = hashlib.sha256()
    given, palette, seen = {}, None, {0}
    for index in sorted(by_index):
        path = by_index[index]
        ids, own = read_mask(path)
        shown = set(np.unique(ids).tolist())
        if palette is None:
            palette = own.copy()
        else:  # ids entering here keep the colour their own mask gives them
            entering = sorted(shown - seen)
            palette[entering] = own[entering]
        seen |= shown
        given[index] = ids
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return given, palette, digest.hexdigest()


def run_record(video: Path, frames: list[Path], mask: Path, mask_sha256: str, backend: Backend,
               core: InferenceCore | MirroredCore) -> dict:
    """What determines a run's outputs; a resume must find the same record. frames: the files
    the frames come from (the video, or a folder's images: other files in it do not count)."""
    description = backend.describe()
    return {
        "video": str(video.resolve()), "video_bytes": sum(f.stat().st_size for f in frames),
        "mask_sha256": mask_sha256,
        "model": backend.model_name, "config": backend.model_config, "weights": backend.weights_id(),
        "backend": backend.name, "engines": description.get("engines"),
        "policy": core.policy.options(), "capacity": core.capacity, "skip_absent": core.skip_absent,
        "min_side": core.min_side, "flip": isinstance(core, MirroredCore),
    }


def _mask_path(mask: Path, index: int, names: list[str] | None = None) -> str:
    """How error messages name the mask of frame ``index``: the file, in a folder or given alone."""
    return str(frame_png(mask, index, names)) if mask.is_dir() else str(mask)


def _resume_point(out_dir: Path, record: dict, names: list[str] | None) -> int:
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
    return finished_frames(out_dir, names)


def _clear_earlier_run(out_dir: Path, names: list[str] | None) -> int:
    """A fresh run into a folder an earlier vseg run wrote: remove that run's frames, so a
    later --resume cannot take them for this run's. Returns 0 (frames finished)."""
    if (out_dir / RUN_RECORD).is_file():
        for index in range(finished_frames(out_dir, names)):
            frame_png(out_dir, index, names).unlink()
    return 0


def run_vos(video: str | Path, mask: str | Path, backend: Backend, out_dir: str | Path, *, mem_every: int = 5,
            keep_previous: bool = True, capacity: int = 8, budget: float | None = None, dense_every: int | None = None,
            skip_absent: bool = True, min_side: int | None = None, max_frames: int | None = None, overlay: str | Path | None = None, resume: bool = False,
            flip: bool = False, on_frame: Callable[[int, int | None], None] | None = None) -> dict:
    """Segment ``video`` from the first-frame ``mask`` (or a folder of masks, see the module
    docstring) through ``backend``; returns a summary dict.

    mem_every / keep_previous / budget / dense_every: the scheduler policy's options (budget
    and dense_every for spvos); capacity: memory slots (an engine folder's own count wins);
    skip_absent: objects read only the memory frames that show them; min_side: scale smaller
    frames up to this shorter side (None: the model's, see InferenceCore). overlay: also write
    the masks blended on the video to this mp4. flip: test-time flip augmentation
    (:class:`~vseg.runtime.mirrored.MirroredCore`). resume: continue an interrupted run (see the
    module docstring). on_frame(index, total) is called after each frame is written (total may
    be None). A mask whose size differs from the video, an empty mask, a mask with colours
    that are not objects, or a video that is not one is an InputError naming the file.
    """
    video, mask, out = Path(video), Path(mask), Path(out_dir)
    core = make_core(backend, flip, mem_every=mem_every, capacity=capacity, budget=budget, dense_every=dense_every,
                     keep_previous=keep_previous, skip_absent=skip_absent, min_side=min_side)
    with open_frames(video) as source:
        names = getattr(source, "names", None)  # a frame folder's: masks and outputs go by them
        given, palette, mask_sha256 = read_given_masks(mask, names)
        ids = given[0]
        if not ids.any():
            raise InputError(f"{_mask_path(mask, 0, names)}: the mask has no objects (all background)")
        later_ids = entering_ids(ids, given.values())
        for index, m in given.items():  # every mask checked before any output is written
            if (source.height, source.width) != m.shape:
                raise InputError(f"{_mask_path(mask, index, names)}: mask is {m.shape[0]}x{m.shape[1]} but {video} "
                                 f"is {source.height}x{source.width}")
        if source.frame_count and max(given) >= source.frame_count:
            raise InputError(f"{_mask_path(mask, max(given))}: a mask for frame {max(given)} but {video} has "
                             f"{source.frame_count} frames")
        record = run_record(video, getattr(source, "files", [video]), mask, mask_sha256, backend, core)
        done = _resume_point(out, record, names) if resume else _clear_earlier_run(out, names)
        sink = PaletteSink(out, palette, names)
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
                    result = core.step(frame.rgb, given.get(frame.index),
                                       mask_name=_mask_path(mask, frame.index, names),
                                       later_ids=later_ids if frame.index == 0 else ())
                    if frame.index == 0 and len(given) - 1 > core.memory.pinnable:  # before any PNG is written
                        raise InputError(f"{mask}: masks on {len(given) - 1} frames after the first, but a memory of "
                                         f"{core.geometry.capacity} slots pins at most {core.memory.pinnable}; "
                                         f"give fewer mask frames or use a larger --capacity")
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
            raise RunInterrupted(f"interrupted: {finished_frames(out, names)} frames of {video} are in {out}; "
                                 f"run again with --resume to continue") from None
        finally:
            if overlay_sink is not None:
                overlay_sink.close()
    seconds = time.perf_counter() - start
    unused = [i for i in sorted(given) if i >= processed] if max_frames is None else []
    if unused:  # a video whose length its container did not say: found out at its end
        raise InputError(f"{_mask_path(mask, unused[0])}: a mask for frame {unused[0]} but {video} ended after "
                         f"{processed} frames")
    return {
        "video": str(video), "mask": str(mask), "masks_at": sorted(given), "out": str(out),
        "overlay": str(overlay) if overlay is not None else None,
        "size": [int(ids.shape[0]), int(ids.shape[1])],
        "resumed_at": done if resume else None, "written": sink.written,
        "seconds": round(seconds, 4), "fps": round(processed / seconds, 3) if seconds > 0 else None,
        "backend": backend.describe(),
        **core.summary(),
    }
