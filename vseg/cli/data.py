"""`vseg data`: synthetic datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vseg.cli.common import Seed, console, data_app, progress

# Options shared by the two synthetic-data commands.
OutDir = Annotated[Path, typer.Option("--out", help="Dataset root to write.")]
Clips = Annotated[int, typer.Option("--clips", help="Number of clips.")]
ValFraction = Annotated[float, typer.Option("--val-fraction", help="Share of clips listed as validation.")]
FrameHeight = Annotated[int, typer.Option("--height", help="Frame height (even).")]
FrameWidth = Annotated[int, typer.Option("--width", help="Frame width (even).")]


@data_app.command("synth-vos")
def synth_vos(
    out: OutDir,
    clips: Clips = 20,
    seed: Seed = 0,
    frames: Annotated[int, typer.Option("--frames", help="Frames per clip.")] = 30,
    height: FrameHeight = 480,
    width: FrameWidth = 854,
    val_fraction: ValFraction = 0.2,
    videos: Annotated[bool, typer.Option("--videos/--no-videos", help="Also write videos/<clip>.mp4 (training needs only the frames and masks).")] = True,
    workers: Annotated[int, typer.Option("--workers", help="Processes rendering clips (the files do not depend on it).")] = 1,
) -> None:
    """Synthetic semi-supervised VOS clips in the DAVIS-2017 layout, with an IP-only H.264 mp4 per clip."""
    from vseg.data.synth_vos import generate_vos

    layout = "JPEGImages/480p, Annotations/480p, ImageSets/2017" + (", videos/" if videos else "")
    _generate(generate_vos, layout, out, clips, seed, frames=frames, height=height, width=width,
              val_fraction=val_fraction, videos=videos, workers=workers)


@data_app.command("synth-vss")
def synth_vss(
    out: OutDir,
    clips: Clips = 20,
    seed: Seed = 0,
    frames: Annotated[int, typer.Option("--frames", help="Frames per clip (several GOPs of 12).")] = 48,
    height: FrameHeight = 360,
    width: FrameWidth = 480,
    val_fraction: ValFraction = 0.2,
) -> None:
    """Synthetic street scenes for video semantic segmentation (CamVid-like layout, 11 classes, every frame labelled)."""
    from vseg.data.synth_vss import generate_vss

    _generate(generate_vss, "train/, trainannot/, val/, valannot/, videos/, classes.json", out, clips, seed,
              frames=frames, height=height, width=width, val_fraction=val_fraction)


def _generate(generate, layout: str, out: Path, clips: int, seed: int, **options) -> None:
    """Run a synthetic-data generator with a progress bar and print what it wrote."""
    with progress() as bar:
        job = bar.add_task("rendering clips", total=clips)
        summary = generate(out, clips, seed, on_clip=lambda *_: bar.advance(job), **options)
    console.print(f"wrote {summary['root']}: {len(summary['train'])} train and {len(summary['val'])} val clips "
                  f"({layout})", highlight=False)
