"""`vseg demo`: one synthetic clip, segmented and scored, to see the whole runtime work.

:func:`run_demo` renders one synthetic VOS clip (:func:`vseg.data.synth_vos.generate_vos`,
with its H.264 video and ground-truth masks), runs a backend over the video from the first
ground-truth mask (:func:`vseg.runtime.run_vos.run_vos`: palette PNGs and an overlay mp4),
and scores the PNGs against the ground truth with the DAVIS-2017 protocol.

Layout of ``out_dir``: ``data/`` (the clip, DAVIS layout), ``pred/<clip>/00000.png``...,
``<clip>_overlay.mp4``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vseg.data.synth_vos import generate_vos
from vseg.metrics.davis import evaluate_davis
from vseg.runtime.backends import Backend
from vseg.runtime.run_vos import run_vos


def run_demo(backend: Backend, out_dir: str | Path, *, frames: int = 30, height: int = 240, width: int = 432,
             seed: int = 0, flip: bool = False, on_frame: Callable[[int, int | None], None] | None = None) -> dict:
    """Render clip ``seed``, segment it with ``backend`` (``flip``: test-time flip augmentation,
    see :mod:`vseg.runtime.mirrored`) and score it.

    Returns {"clip", "video", "pred", "overlay", "J&F", "J", "F" (percent), "run": run_vos's
    summary}.
    """
    out = Path(out_dir)
    data = out / "data"
    clip = generate_vos(data, clips=1, seed=seed, frames=frames, height=height, width=width, val_fraction=0.0)
    name = clip["train"][0]
    video = data / "videos" / f"{name}.mp4"
    annotations = data / "Annotations" / "480p"
    overlay = out / f"{name}_overlay.mp4"
    summary = run_vos(video, annotations / name / "00000.png", backend, out / "pred" / name, overlay=overlay,
                      flip=flip, on_frame=on_frame)
    scores = evaluate_davis(out / "pred", annotations, sequences=[name])["dataset"]
    return {"clip": name, "video": str(video), "pred": str(out / "pred" / name), "overlay": str(overlay),
            "J&F": scores["J&F-Mean"], "J": scores["J-Mean"], "F": scores["F-Mean"], "run": summary}
