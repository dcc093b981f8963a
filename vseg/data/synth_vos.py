"""Synthetic clips for semi-supervised video object segmentation, in the DAVIS-2017 layout.

Layout written under ``out_dir`` (the folder is called ``480p`` whatever the frame size,
as readers expect DAVIS's name; sizes must be even because of H.264)::

    JPEGImages/480p/<seq>/00000.jpg ...   frames (JPEG, quality 92, 4:2:0)
    Annotations/480p/<seq>/00000.png ...  EVERY frame annotated: P-mode, DAVIS palette, ids 0..K
    ImageSets/2017/train.txt, val.txt     sequence names, one a line
    videos/<seq>.mp4                      the same frames as IP-only H.264 (keyint 12)
    synth_vos.json                        generation options and what each clip contains

Sequences are named ``synth-<seed>-<index:04d>``. What a clip shows (1-5 targets, look-alike
distractors, occlusions, exits, a moving camera, changing light) is drawn in
:mod:`vseg.data.vos_scene`; this module renders the clips and writes the files.

Determinism: clip ``i`` is drawn from a generator seeded by (seed, i) alone, so the same seed
gives byte-identical annotations and JPEGs, and N clips are a prefix of N+1.
"""

from __future__ import annotations

import contextlib
import functools
import json
import multiprocessing as mp
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from vseg.data import synth_common as sc
from vseg.data.palette import atomic_save, write_mask
from vseg.data.vos_scene import plan_clip, render_frame
from vseg.errors import VsegError

KEYINT = 12
FPS = 25.0


def sequence_name(seed: int, index: int) -> str:
    return f"synth-{seed}-{index:04d}"


def _video_writer(path: Path, width: int, height: int, enabled: bool):
    """An IP-only H.264 writer for the clip's mp4, or a context holding None when ``enabled`` is off."""
    if not enabled:
        return contextlib.nullcontext()
    from vseg.data.encode import H264Writer  # PyAV only when videos are written

    return H264Writer(path, width, height, fps=FPS, keyint=KEYINT)


def _write_clip(root: Path, seed: int, index: int, frames: int, height: int, width: int, val_fraction: float,
                videos: bool) -> dict:
    """Render clip ``index`` of ``seed`` into ``root``; its summary entry (a function of
    (seed, index) alone, so clips can be written by several processes in any order)."""
    name = sequence_name(seed, index)
    plan = plan_clip(seed, index, frames, height, width)
    noise_rng = sc.clip_rng(seed, index, stream=1)
    jpeg_dir = root / "JPEGImages" / "480p" / name
    mask_dir = root / "Annotations" / "480p" / name
    sc.clear_folder(jpeg_dir, "*.jpg")
    sc.clear_folder(mask_dir, "*.png")
    with _video_writer(root / "videos" / f"{name}.mp4", width, height, videos) as video:
        for t in range(frames):
            rgb, labels, _ = render_frame(plan, t, noise_rng)
            sc.save_jpeg(jpeg_dir / f"{t:05d}.jpg", rgb)
            write_mask(mask_dir / f"{t:05d}.png", labels)
            if video is not None:
                video.write(rgb)
    return {
        "name": name, "split": "val" if sc.is_val_clip(index, val_fraction) else "train",
        "targets": len(plan.targets),
        "distractors": sum(o.label == 0 for o in plan.objects),
        "objects": [{"instance": o.instance, "label": o.label, "shape": o.shape_kind, "mimics": o.mimics}
                    for o in sorted(plan.objects, key=lambda o: o.instance)],
        "depth_order": [o.instance for o in plan.objects],
        **plan.events}


def _single_threaded() -> None:
    torch.set_num_threads(1)  # one process per core: no oversubscription


def generate_vos(out_dir: str | Path, clips: int, seed: int, frames: int = 30, height: int = 480,
                 width: int = 854, val_fraction: float = 0.2, videos: bool = True,
                 on_clip: Callable[[int, str], None] | None = None, workers: int = 1) -> dict:
    """Write ``clips`` synthetic VOS clips in the DAVIS-2017 layout (see the module docstring).

    Sizes must be even (H.264); 240x432 trains fast, 480x854 matches DAVIS. ``val_fraction``
    of the clips (chosen by index, stable as clips are added) go to val.txt. ``on_clip(index,
    name)`` is called after each clip is written, in clip order (progress bars). ``workers`` > 1
    renders clips in that many processes; the files are the same as with one. Returns a summary
    dict (also written to ``synth_vos.json``): options, train/val names and each clip's objects
    and events (crossings, exits). ``videos`` False skips ``videos/`` (training reads only the
    JPEGs and masks; without videos no PyAV is needed, e.g. on a machine that lacks it).
    """
    sc.check_generation_args(clips, seed, frames, height, width, val_fraction)
    if workers < 1:
        raise VsegError(f"workers must be >= 1, got {workers}")
    root = Path(out_dir)
    summary: dict = {"layout": "davis", "seed": seed, "frames": frames, "height": height, "width": width,
                     "val_fraction": val_fraction, "keyint": KEYINT, "fps": FPS, "videos": videos,
                     "train": [], "val": [], "clips": []}
    write = functools.partial(_write_clip, root, seed, frames=frames, height=height, width=width,
                              val_fraction=val_fraction, videos=videos)
    with contextlib.ExitStack() as stack:
        if workers == 1 or clips < 2:
            entries = map(write, range(clips))
        else:  # spawn: forking a process that has started torch's thread pool can hang
            pool = stack.enter_context(ProcessPoolExecutor(min(workers, clips), mp.get_context("spawn"),
                                                           initializer=_single_threaded))
            entries = pool.map(write, range(clips), chunksize=4)
        for index, entry in enumerate(entries):
            summary[entry["split"]].append(entry["name"])
            summary["clips"].append(entry)
            if on_clip is not None:
                on_clip(index, entry["name"])
    sets = root / "ImageSets" / "2017"
    for split in ("train", "val"):
        text = "".join(f"{n}\n" for n in summary[split])
        atomic_save(sets / f"{split}.txt", lambda f, text=text: f.write(text.encode()))
    text = json.dumps(summary, indent=2) + "\n"
    atomic_save(root / "synth_vos.json", lambda f: f.write(text.encode()))
    summary["root"] = str(root)
    return summary
