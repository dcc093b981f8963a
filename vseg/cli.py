"""The `vseg` command line: thin typer commands over plain functions.

Every command does its work through a function in the package; this module only parses
options, shows progress and prints results. A :class:`~vseg.errors.VsegError` raised anywhere
below becomes one ``error: ...`` line on stderr and exit code 2 (see :func:`main`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vseg.errors import VsegError

app = typer.Typer(
    help="vseg: efficient video segmentation from training to TensorRT.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Make synthetic datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console(soft_wrap=True)
err_console = Console(stderr=True)

# Options shared by several commands, declared once.
JsonOut = Annotated[Path | None, typer.Option("--json", help="Also write the result as JSON to this file.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed: the same seed gives the same output.")]


def write_json(path: Path | None, payload: dict) -> None:
    if path is not None:
        from vseg.jsonio import write_json as write

        console.print(f"wrote {write(path, payload)}")


def progress():
    """A progress bar for long work (shown on stderr so stdout stays parseable)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=err_console, transient=True, disable=not err_console.is_terminal)


@app.command()
def doctor(json_out: JsonOut = None) -> None:
    """Report what this machine can run (torch, devices, ONNX Runtime, PyAV, TensorRT, our libraries)."""
    from vseg.doctor import as_json, run_checks

    rows = run_checks()
    table = Table(show_header=True, header_style="bold")
    for col in ("check", "", "detail"):
        table.add_column(col)
    for r in rows:
        mark = "[green]ok[/]" if r.ok else ("[red]MISSING[/]" if r.required else "[yellow]no[/]")
        table.add_row(escape(r.name), mark, escape(r.detail))
    console.print(table)
    write_json(json_out, as_json(rows))
    if not as_json(rows)["ok"]:
        raise typer.Exit(1)


@app.command("eval")
def eval_(
    pred: Annotated[Path, typer.Option("--pred", help="Predicted masks: one folder per sequence (00000.png...).")],
    gt: Annotated[Path, typer.Option("--gt", help="Ground truth: a DAVIS Annotations folder (or DAVIS root); for vss a label folder.")],
    task: Annotated[str, typer.Option("--task", help="vos: DAVIS-2017 J&F; vss: per-class IoU and mIoU.")] = "vos",
    sequences: Annotated[str | None, typer.Option("--sequences", help="Comma-separated sequence names (vos).")] = None,
    num_classes: Annotated[int | None, typer.Option("--num-classes", help="Number of classes (vss).")] = None,
    json_out: JsonOut = None,
) -> None:
    """Score predictions: DAVIS-2017 semi-supervised J&F (vos) or mIoU from a confusion matrix (vss)."""
    if task == "vos":
        from vseg.metrics.davis import evaluate_davis, format_davis_table

        names = [s for s in sequences.split(",") if s] if sequences else None
        with progress() as bar:
            job = bar.add_task("scoring sequences", total=None)
            result = evaluate_davis(pred, gt, sequences=names,
                                    on_sequence=lambda name, done, total: bar.update(job, completed=done, total=total))
        console.print(format_davis_table(result), highlight=False, markup=False)
    elif task == "vss":
        from vseg.metrics.vss import evaluate_vss, format_vss_table

        names, ignore = _classes_near(gt)
        result = evaluate_vss(pred, gt, num_classes=num_classes or (len(names) if names else None),
                              class_names=names, ignore_index=ignore)
        console.print(format_vss_table(result), highlight=False, markup=False)
    else:
        raise VsegError(f"--task must be vos or vss, not {task!r}")
    write_json(json_out, result)


def _classes_near(gt: Path) -> tuple[list[str] | None, int]:
    """(class names, ignore index) from a classes.json at or above the label folder (CamVid-like layouts)."""
    from vseg.data.datasets import read_classes

    for folder in (gt, *gt.resolve().parents[:2]):
        if (folder / "classes.json").is_file():
            names, _, ignore = read_classes(folder / "classes.json")
            return names, ignore
    return None, 255


@app.command()
def transcode(
    src: Annotated[Path, typer.Argument(help="Any video PyAV/FFmpeg can read.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output .mp4/.mov/.mkv (H.264, IP-only).")],
    keyint: Annotated[int, typer.Option("--keyint", help="Keyframe interval L (AR-Seg's GOP).")] = 12,
    crf: Annotated[int, typer.Option("--crf", help="x264 constant rate factor (lower = better).")] = 18,
    max_frames: Annotated[int | None, typer.Option("--max-frames", help="Stop after this many frames.")] = None,
) -> None:
    """Re-encode to H.264 with no B-frames, one reference and a fixed keyframe interval, so motion vectors are exact."""
    from vseg.data.transcode import transcode as run_transcode

    with progress() as bar:
        job = bar.add_task("transcoding", total=None)
        stats = run_transcode(src, out, keyint=keyint, crf=crf, max_frames=max_frames,
                              on_frame=lambda i, n: bar.update(job, completed=i + 1, total=n))
    console.print(f"wrote {stats.dst}: {stats.frames} frames, {stats.width}x{stats.height} at {stats.fps:g} fps, "
                  f"IP-only, keyframe every {stats.keyint} (from {stats.source_codec})", highlight=False)
    if stats.padded != (0, 0):
        console.print(f"padded {stats.padded[0]} row(s) and {stats.padded[1]} column(s) to reach even sizes",
                      highlight=False)


@app.command()
def probe(
    video: Annotated[Path, typer.Argument(help="A video file.")],
    frames: Annotated[int, typer.Option("--frames", help="How many frames to scan (0: all).")] = 48,
    json_out: JsonOut = None,
) -> None:
    """Show a video's size, GOP structure and motion vectors, and whether they are exact enough for AR-Seg."""
    from vseg.data.motion_report import motion_report

    r = motion_report(video, max_frames=frames or None)
    console.print(f"{r['path']}: {r['codec']} {r['width']}x{r['height']}, {r['fps'] or '?'} fps, "
                  f"{r['frame_count'] or '?'} frames", highlight=False)
    console.print(f"GOP ({r['frames_scanned']} frames): {r['gop']}", highlight=False)
    console.print(f"keyframes at {r['keyframes']}, intervals {r['keyframe_intervals']}", highlight=False)
    moving = [f for f in r["frames"] if f["pict_type"] != "I"]
    if moving:
        console.print(f"mean |mv| {np.mean([f['mean_abs_mv'] for f in moving]):.2f} px/frame, "
                      f"mean |accumulated mv| {np.mean([f['mean_abs_acc'] for f in moving]):.2f} px, "
                      f"intra cells {100 * np.mean([f['intra_share'] for f in moving]):.1f}%", highlight=False)
    if r["problems"]:
        console.print(f"[yellow]motion vectors are ambiguous:[/] {escape(', '.join(r['problems']))}; "
                      f"fix: vseg transcode {escape(str(video))} -o OUT.mp4 --keyint 12", highlight=False)
    else:
        console.print("motion vectors are exact (IP-only, one reference frame)")
    write_json(json_out, r)


@app.command()
def run(
    video: Annotated[Path, typer.Argument(help="Video file to segment.")],
    mask: Annotated[Path, typer.Option("--mask", help="First-frame mask: indexed PNG (DAVIS style) or RGB in the DAVIS palette.")],
    model: Annotated[str, typer.Option("--model", help="stm, lite or spvos (shipped weights unless --weights).")] = "lite",
    weights: Annotated[Path | None, typer.Option("--weights", help="A safetensors file written by vseg train.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Output folder for 00000.png... (default: out/<video name>).")] = None,
    mem_every: Annotated[int, typer.Option("--mem-every", help="Write memory every N frames.")] = 5,
    max_frames: Annotated[int | None, typer.Option("--max-frames", help="Stop after N frames.")] = None,
    budget: Annotated[float | None, typer.Option("--budget", help="spvos: share of dense work to spend (in the trained range).")] = None,
    dense_every: Annotated[int | None, typer.Option("--dense-every", help="spvos: run all-dense every N frames.")] = None,
    json_out: JsonOut = None,
) -> None:
    """Segment the objects of the first-frame mask through the whole video: one palette PNG per frame."""
    from vseg.models.weights import load_named_model
    from vseg.runtime.run_vos import run_vos

    net = load_named_model(model, weights)
    policy = None
    if budget is not None or dense_every is not None:
        if not hasattr(net, "make_key_policy"):
            raise VsegError(f"--budget and --dense-every apply to spvos, not {model}")
        policy = net.make_key_policy(budget=budget, dense_every=dense_every)
    out = out or Path("out") / video.stem
    with progress() as bar:
        job = bar.add_task(f"{model} on {video.name}", total=None)
        summary = run_vos(video, mask, net, out, mem_every=mem_every, max_frames=max_frames, key_policy=policy,
                          on_frame=lambda i, n: bar.update(job, completed=i + 1, total=n))
    console.print(f"wrote {summary['frames']} masks to {summary['out']} ({len(summary['objects'])} object(s), "
                  f"{summary['fps']:.2f} frames/s on {summary['threads']} CPU thread(s))", highlight=False)
    write_json(json_out, {"model": model, **summary})


@app.command()
def train(
    model: Annotated[str, typer.Option("--model", help="stm, or lite (distilled online from an stm teacher).")],
    data: Annotated[Path, typer.Option("--data", help="DAVIS-2017 or YouTube-VOS layout (e.g. from vseg data synth-vos).")],
    steps: Annotated[int, typer.Option("--steps", help="Optimiser steps.")] = 1500,
    out: Annotated[Path | None, typer.Option("--out", help="Final weights (.safetensors); default <run-dir>/<model>.safetensors.")] = None,
    run_dir: Annotated[Path, typer.Option("--run-dir", help="Checkpoints and logs.")] = Path("runs/train"),
    batch_size: Annotated[int, typer.Option("--batch-size")] = 1,
    crop: Annotated[tuple[int, int], typer.Option("--crop", help="Training crop H W.")] = (128, 224),
    clip_len: Annotated[int, typer.Option("--clip-len", help="Frames per training clip (>= 3).")] = 3,
    lr: Annotated[float, typer.Option("--lr")] = 5e-4,
    seed: Seed = 0,
    val_data: Annotated[Path | None, typer.Option("--val-data", help="Dataset whose val split gives the periodic J&F.")] = None,
    val_every: Annotated[int, typer.Option("--val-every", help="Validate every N steps (0: at the end only).")] = 0,
    resume: Annotated[Path | None, typer.Option("--resume", help="A checkpoint folder or run folder to continue.")] = None,
    init_weights: Annotated[Path | None, typer.Option("--init-weights", help="Start from these weights.")] = None,
    teacher: Annotated[Path | None, typer.Option("--teacher", help="lite: trained stm weights (default: train the teacher jointly).")] = None,
    kd: Annotated[bool, typer.Option("--kd/--no-kd", help="lite: distillation at all.")] = True,
    smooth: Annotated[bool, typer.Option("--smooth/--no-smooth", help="lite: Smooth Block for the feature loss.")] = True,
    stff: Annotated[bool, typer.Option("--stff/--no-stff", help="lite: previous-frame priors (STFF).")] = True,
    discriminator: Annotated[bool, typer.Option("--discriminator/--no-discriminator", help="lite: adversarial loss.")] = True,
    adaptive_lr: Annotated[bool, typer.Option("--adaptive-lr/--no-adaptive-lr", help="lite: damp KD when the student lags.")] = True,
    json_out: JsonOut = None,
) -> None:
    """Train a VOS model (stm, or lite by online distillation); resumable, with periodic validation J&F."""
    from vseg.train import TrainConfig, train_vos

    if model not in ("stm", "lite"):
        raise VsegError(f"vseg train --model takes stm or lite, not {model!r}")
    cfg = TrainConfig(model=model, data=str(data), out=str(run_dir), weights=str(out) if out else None,
                      steps=steps, batch_size=batch_size, crop=tuple(crop), clip_len=clip_len, lr=lr, seed=seed,
                      val_data=str(val_data) if val_data else None, val_every=val_every,
                      resume=str(resume) if resume else None, init_weights=str(init_weights) if init_weights else None,
                      teacher_weights=str(teacher) if teacher else None, use_kd=kd, use_smooth=smooth, use_stff=stff,
                      use_discriminator=discriminator, use_adaptive_lr=adaptive_lr)
    result = train_vos(cfg)
    last = result.validation[-1] if result.validation else None
    score = f", validation J&F {last['J&F']:.2f}" if last else ""
    console.print(f"wrote {result.weights} after {result.steps} steps ({result.wall_seconds / 60:.1f} min{score})",
                  highlight=False)
    write_json(json_out, {"config": cfg, "weights": result.weights, "validation": result.validation,
                          "wall_seconds": result.wall_seconds, "steps_per_second": result.steps_per_second})


# Options shared by the two synthetic-data commands.
OutDir = Annotated[Path, typer.Option("--out", help="Dataset root to write.")]
Clips = Annotated[int, typer.Option("--clips", help="Number of clips.")]
ValFraction = Annotated[float, typer.Option("--val-fraction", help="Share of clips listed as validation.")]


@data_app.command("synth-vos")
def synth_vos(
    out: OutDir,
    clips: Clips = 20,
    seed: Seed = 0,
    frames: Annotated[int, typer.Option("--frames", help="Frames per clip.")] = 30,
    height: Annotated[int, typer.Option("--height", help="Frame height (even).")] = 480,
    width: Annotated[int, typer.Option("--width", help="Frame width (even).")] = 854,
    val_fraction: ValFraction = 0.2,
) -> None:
    """Synthetic semi-supervised VOS clips in the DAVIS-2017 layout, with an IP-only H.264 mp4 per clip."""
    from vseg.data.synth_vos import generate_vos

    _generate(generate_vos, "JPEGImages/480p, Annotations/480p, ImageSets/2017, videos/", out, clips, seed,
              frames=frames, height=height, width=width, val_fraction=val_fraction)


@data_app.command("synth-vss")
def synth_vss(
    out: OutDir,
    clips: Clips = 20,
    seed: Seed = 0,
    frames: Annotated[int, typer.Option("--frames", help="Frames per clip (several GOPs of 12).")] = 48,
    height: Annotated[int, typer.Option("--height", help="Frame height (even).")] = 360,
    width: Annotated[int, typer.Option("--width", help="Frame width (even).")] = 480,
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


def main() -> None:
    """Entry point: user mistakes become one line and a non-zero exit, never a traceback."""
    try:
        app()
    except VsegError as e:
        err_console.print(f"[red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
