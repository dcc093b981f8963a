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


# Options of the commands that run a VOS model (run, demo, profile), declared once.
ModelName = Annotated[str, typer.Option("--model", help="stm, lite or spvos.")]
Weights = Annotated[Path | None, typer.Option("--weights", help="torch backend: a safetensors file written by vseg train (default: the shipped weights).")]
BackendName = Annotated[str, typer.Option("--backend", help="torch (PyTorch), ort (onnxruntime on an --engines folder); trt comes later.")]
Engines = Annotated[Path | None, typer.Option("--engines", help="ort backend: an engine folder written by vseg export.")]
MemEvery = Annotated[int, typer.Option("--mem-every", help="Write memory every N frames.")]
KeepPrevious = Annotated[bool, typer.Option("--keep-previous/--no-keep-previous", help="Keep the previous frame in a temporary memory slot between writes, as STM does (one more encode_value per frame).")]
Budget = Annotated[float | None, typer.Option("--budget", help="spvos: share of dense work to spend (in the trained range).")]
DenseEvery = Annotated[int | None, typer.Option("--dense-every", help="spvos: run all-dense at least every N frames.")]
ClipHeight = Annotated[int, typer.Option("--height", help="Synthetic clip height (an engine folder's size wins).")]
ClipWidth = Annotated[int, typer.Option("--width", help="Synthetic clip width (an engine folder's size wins).")]


def _frame_progress(bar, job):
    return lambda i, n: bar.update(job, completed=i + 1, total=n)


@app.command()
def run(
    video: Annotated[Path, typer.Argument(help="Video file to segment.")],
    mask: Annotated[Path | None, typer.Option("--mask", help="VOS models: first-frame mask, indexed PNG (DAVIS style) or RGB in the DAVIS palette.")] = None,
    model: Annotated[str, typer.Option("--model", help="stm, lite or spvos (VOS, need --mask), or arseg (semantic segmentation).")] = "lite",
    weights: Weights = None,
    backend: BackendName = "torch",
    engines: Engines = None,
    out: Annotated[Path | None, typer.Option("--out", help="Output folder for 00000.png... (default: out/<video name>).")] = None,
    overlay: Annotated[Path | None, typer.Option("--overlay", help="Also write the masks blended on the video to this mp4.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run into the same --out folder.")] = False,
    mem_every: MemEvery = 5,
    keep_previous: KeepPrevious = True,
    max_frames: Annotated[int | None, typer.Option("--max-frames", help="Stop after N frames.")] = None,
    budget: Budget = None,
    dense_every: DenseEvery = None,
    lr_scale: Annotated[float | None, typer.Option("--lr-scale", help="arseg: resolution of non-keyframes (0.3-0.9; default: the model's).")] = None,
    keyframe_interval: Annotated[int | None, typer.Option("--keyframe-interval", help="arseg: also a keyframe every L frames (I-frames always are).")] = None,
    json_out: JsonOut = None,
) -> None:
    """Segment a video: the objects of a first-frame mask (VOS models), or every pixel's class (arseg); one palette PNG per frame."""
    from vseg.runtime.backends import open_backend
    from vseg.runtime.run_vos import run_vos

    out = out or Path("out") / video.stem
    if model == "arseg":
        _run_arseg(video, out, weights, backend, engines, overlay, max_frames, lr_scale, keyframe_interval, json_out)
        return
    if mask is None:
        raise VsegError(f"--model {model} segments the objects of a first-frame mask: pass --mask first.png")
    with open_backend(backend, model, weights=weights, engines=engines) as runner, progress() as bar:
        job = bar.add_task(f"{model} on {video.name}", total=None)
        summary = run_vos(video, mask, runner, out, mem_every=mem_every, keep_previous=keep_previous, budget=budget,
                          dense_every=dense_every, max_frames=max_frames, overlay=overlay, resume=resume,
                          on_frame=_frame_progress(bar, job))
    described = summary["backend"]
    console.print(f"wrote {summary['written']} masks to {summary['out']} ({len(summary['objects'])} object(s), "
                  f"{summary['fps']:.2f} frames/s, {backend} on {described['device']})", highlight=False)
    if overlay is not None:
        console.print(f"wrote {overlay}", highlight=False)
    write_json(json_out, {"model": model, **summary})


def _run_arseg(video: Path, out: Path, weights: Path | None, backend: str, engines: Path | None, overlay: Path | None,
               max_frames: int | None, lr_scale: float | None, keyframe_interval: int | None, json_out: Path | None) -> None:
    from vseg.models.weights import load_named_model
    from vseg.runtime.arseg_run import run_arseg

    if backend not in ("torch", "ort"):
        raise VsegError(f"arseg runs on the torch or ort backend, not {backend!r}")
    if (backend == "ort") != (engines is not None):
        raise VsegError("arseg: --backend ort runs an --engines folder (vseg export --model arseg); torch runs --weights")
    net = load_named_model("arseg", weights)
    with progress() as bar:
        job = bar.add_task(f"arseg on {video.name}", total=None)
        summary = run_arseg(video, net, out, lr_scale if lr_scale is not None else net.config.lr_scale,
                            keyframe_interval, overlay, engines=engines, max_frames=max_frames,
                            on_frame=_frame_progress(bar, job))
    console.print(f"wrote {summary['frames']} class maps to {out} ({summary['keyframes']} keyframes)", highlight=False)
    write_json(json_out, {"model": "arseg", **summary})


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the clip, the masks and the overlay.")] = Path("out/demo"),
    model: ModelName = "lite",
    weights: Weights = None,
    backend: BackendName = "torch",
    engines: Engines = None,
    frames: Annotated[int, typer.Option("--frames", help="Frames of the synthetic clip.")] = 30,
    height: ClipHeight = 240,
    width: ClipWidth = 432,
    seed: Seed = 0,
    json_out: JsonOut = None,
) -> None:
    """Render a synthetic clip, segment it (PNGs + overlay mp4) and print J&F against its ground truth."""
    from vseg.runtime.backends import open_backend
    from vseg.runtime.demo import run_demo

    with open_backend(backend, model, weights=weights, engines=engines) as runner, progress() as bar:
        size = runner.static_size or (height, width)
        job = bar.add_task(f"{model} on a synthetic clip", total=frames)
        result = run_demo(runner, out, frames=frames, height=size[0], width=size[1], seed=seed,
                          on_frame=_frame_progress(bar, job))
    console.print(f"{result['clip']}: {result['run']['frames']} frames, masks in {result['pred']}, "
                  f"overlay {result['overlay']}", highlight=False)
    console.print(f"J&F {result['J&F']:.2f} (J {result['J']:.2f}, F {result['F']:.2f}) against the clip's "
                  f"ground truth", highlight=False)
    write_json(json_out, {"model": model, **result})


@app.command()
def profile(
    model: ModelName = "lite",
    weights: Weights = None,
    backend: BackendName = "torch",
    engines: Engines = None,
    video: Annotated[Path | None, typer.Option("--video", help="Video to run (default: a synthetic clip).")] = None,
    mask: Annotated[Path | None, typer.Option("--mask", help="First-frame mask of --video (default: one centred box).")] = None,
    frames: Annotated[int, typer.Option("--frames", help="Frames measured per pass.")] = 60,
    warmup: Annotated[int, typer.Option("--warmup", help="Frames run before measuring.")] = 5,
    height: ClipHeight = 240,
    width: ClipWidth = 432,
    mem_every: MemEvery = 5,
    keep_previous: KeepPrevious = True,
    budget: Budget = None,
    dense_every: DenseEvery = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Per-frame latency plot (PNG).")] = None,
    json_out: JsonOut = None,
) -> None:
    """FPS with and without decoding, latency percentiles, time per engine, GFLOPs and peak memory."""
    from vseg.runtime.backends import open_backend
    from vseg.runtime.profile import plot_latency, profile_vos

    with open_backend(backend, model, weights=weights, engines=engines) as runner:
        result = profile_vos(runner, video=video, mask=mask, frames=frames, warmup=warmup, height=height,
                             width=width, mem_every=mem_every, keep_previous=keep_previous, budget=budget,
                             dense_every=dense_every)
    described, lat, g = result["backend"], result["latency_ms"], result["gflops"]
    console.print(f"{model} on {backend} ({', '.join(described['providers'])}; {described['device']}), "
                  f"{result['engine_size'][0]}x{result['engine_size'][1]}, {result['objects']} object(s), "
                  f"{result['frames']} frames", highlight=False)
    console.print(f"fps {result['fps_end_to_end']:.2f} end to end, {result['fps_without_decoding']:.2f} without "
                  f"decoding; latency p50 {lat['p50']:.1f} p90 {lat['p90']:.1f} p99 {lat['p99']:.1f} ms "
                  f"(keyframes p50 {result['keyframe_latency_ms']['p50'] or float('nan'):.1f} ms)", highlight=False)
    engine_times = ", ".join(f"{e} {t['mean_ms']:.1f} ms x{t['calls']}" for e, t in result["engine_ms"].items()
                             if t["calls"])
    console.print(f"per engine call: {engine_times}", highlight=False)
    console.print(f"GFLOPs per frame {g['dense_per_frame']:.3f} dense, {g['realized_per_frame']:.3f} realized; "
                  f"peak RSS {result['memory']['peak_rss_mib']:.0f} MiB", highlight=False)
    if plot is not None:
        console.print(f"wrote {plot_latency(result, plot)}", highlight=False)
    write_json(json_out, {"model": model, **result})


@app.command("export")
def export_(
    model: Annotated[str, typer.Option("--model", help="stm, lite, spvos, or arseg (keyframe and nonkey engines; sizes multiples of 8).")],
    weights: Annotated[Path | None, typer.Option("--weights", help="A safetensors file written by vseg train (default: the shipped weights).")] = None,
    flavor: Annotated[str, typer.Option("--flavor", help="custom: vseg custom-op nodes (TensorRT plugins); portable: standard ONNX only.")] = "custom",
    height: Annotated[int, typer.Option("--height", help="Engine frame height (multiple of 16).")] = 480,
    width: Annotated[int, typer.Option("--width", help="Engine frame width (multiple of 16).")] = 864,
    objects: Annotated[int, typer.Option("--objects", help="Object slots K of the engines.")] = 4,
    capacity: Annotated[int, typer.Option("--capacity", help="Memory slots T of the engines.")] = 8,
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset of the standard domain.")] = 18,
    out: Annotated[Path | None, typer.Option("--out", help="Engine folder to write (default: engines/<model>-<flavor>).")] = None,
    random_init: Annotated[bool, typer.Option("--random-init", help="For testing only: export a freshly initialised model instead of trained weights.")] = False,
    json_out: JsonOut = None,
) -> None:
    """Export a VOS model to an engine folder: encode_key, encode_value and decode ONNX graphs and manifest.json."""
    from vseg.export.export_vos import export_engines, model_for_export

    net, source = model_for_export(model, weights, random_init)
    out = out or Path("engines") / f"{model}-{flavor}"
    if model == "arseg":
        from vseg.runtime.arseg_engines import export_arseg_engines

        with progress() as bar:
            bar.add_task(f"exporting arseg ({flavor}) and checking parity", total=None)
            manifest = export_arseg_engines(net, out, flavor=flavor, height=height, width=width, weights=source)
        console.print(f"wrote {out}: keyframe.onnx, nonkey.onnx and manifest.json ({height}x{width}, {flavor})",
                      highlight=False)
        write_json(json_out, manifest)
        return
    with progress() as bar:
        bar.add_task(f"exporting {model} ({flavor}) and checking parity", total=None)
        manifest = export_engines(net, out, flavor=flavor, height=height, width=width, objects=objects,
                                  capacity=capacity, opset=opset, weights=source)
    worst = max((f.get("prob_max_abs", f.get("max_abs", 0.0)) for e in manifest["parity"]["engines"].values()
                 for f in e["outputs"].values()), default=0.0)
    ops = ", ".join(manifest["custom_ops"]) or "none"
    console.print(f"wrote {out}: {', '.join(e['file'] for e in manifest['engines'].values())} and manifest.json "
                  f"({height}x{width}, {objects} object(s), {capacity} memory slots; custom ops: {ops}; "
                  f"onnxruntime parity: worst error {worst:.2g} <= {manifest['parity']['tolerance']:g})", highlight=False)
    write_json(json_out, manifest)


@app.command()
def train(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", help="stm, lite (distilled online from an stm teacher), spvos (gates trained from stm weights given by --init-weights), or arseg.")],
    data: Annotated[Path, typer.Option("--data", help="DAVIS-2017 or YouTube-VOS layout (e.g. from vseg data synth-vos).")],
    steps: Annotated[int, typer.Option("--steps", help="Optimiser steps.")] = 1500,
    out: Annotated[Path | None, typer.Option("--out", help="Final weights (.safetensors); default <run-dir>/<model>.safetensors.")] = None,
    run_dir: Annotated[Path, typer.Option("--run-dir", help="Checkpoints and logs.")] = Path("runs/train"),
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Clips per step (default: 1 for VOS models, 8 for arseg).")] = None,
    crop: Annotated[tuple[int, int] | None, typer.Option("--crop", help="Training crop H W (default: 128 224 for VOS models, at most 192 256 for arseg).")] = None,
    clip_len: Annotated[int, typer.Option("--clip-len", help="Frames per training clip (>= 3).")] = 3,
    max_skip: Annotated[int, typer.Option("--max-skip", help="VOS models: largest gap between consecutive sampled frames.")] = 5,
    warmup_steps: Annotated[int, typer.Option("--warmup-steps", help="Linear LR warm-up before the cosine decay.")] = 50,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", help="Steps between checkpoints.")] = 250,
    workers: Annotated[int, typer.Option("--workers", help="VOS models: data-loading processes (0: in the training process).")] = 0,
    lr: Annotated[float | None, typer.Option("--lr", help="Base learning rate (default: 5e-4 for VOS models, 2e-3 for arseg).")] = None,
    seed: Seed = 0,
    val_data: Annotated[Path | None, typer.Option("--val-data", help="Dataset whose val split gives the periodic J&F.")] = None,
    val_every: Annotated[int, typer.Option("--val-every", help="Validate every N steps (0: at the end only).")] = 0,
    resume: Annotated[Path | None, typer.Option("--resume", help="A checkpoint folder or run folder to continue.")] = None,
    init_weights: Annotated[Path | None, typer.Option("--init-weights", help="Start from these weights.")] = None,
    stage_steps: Annotated[tuple[int, int, int] | None, typer.Option("--stage-steps", help="arseg: steps of its three stages: full resolution, low resolution alone, low resolution + CReFF (default 2000 1000 2000).")] = None,
    lr_from_hr: Annotated[bool, typer.Option("--lr-from-hr/--keep-lr", help="arseg: start phase 2 with the LR branch copied from hr, or keep --init-weights' LR branch (to continue phase 2).")] = True,
    amp: Annotated[bool, typer.Option("--amp/--no-amp", help="VOS models: bfloat16 autocast (CUDA, or a CPU with AVX512-BF16/AMX: about 2x faster there).")] = False,
    dice_weight: Annotated[float, typer.Option("--dice-weight", help="VOS models: weight of the soft Dice loss added to the cross-entropy.")] = 0.0,
    freeze_norm_at: Annotated[float | None, typer.Option("--freeze-norm-at", help="Recalibrate and freeze BatchNorm at this fraction of the steps (e.g. 0.5).")] = None,
    teacher: Annotated[Path | None, typer.Option("--teacher", help="lite: trained stm weights (default: train the teacher jointly).")] = None,
    teacher_lr: Annotated[float | None, typer.Option("--teacher-lr", help="lite: the teacher's learning rate (default: 0.1 x --lr with --teacher, else --lr); 0 freezes it.")] = None,
    kd: Annotated[bool, typer.Option("--kd/--no-kd", help="lite: distillation at all.")] = True,
    smooth: Annotated[bool, typer.Option("--smooth/--no-smooth", help="lite: Smooth Block for the feature loss.")] = True,
    stff: Annotated[bool, typer.Option("--stff/--no-stff", help="lite: previous-frame priors (STFF).")] = True,
    discriminator: Annotated[bool, typer.Option("--discriminator/--no-discriminator", help="lite: adversarial loss.")] = True,
    adaptive_lr: Annotated[bool, typer.Option("--adaptive-lr/--no-adaptive-lr", help="lite: damp KD when the student lags.")] = True,
    budget_range: Annotated[tuple[float, float] | None, typer.Option("--budget-range", help="spvos: the range of budgets trained for, LOW HIGH (fractions of the gated convs' dense FLOPs; default 0.2 0.8); --budget at inference must lie in it.")] = None,
    sparsity_weight: Annotated[float, typer.Option("--sparsity-weight", help="spvos: weight of the loss pulling the expected cost to the budget.")] = 1.0,
    gate_lr_scale: Annotated[float, typer.Option("--gate-lr-scale", help="spvos: the gates learn at this multiple of --lr (they start untrained).")] = 1.0,
    json_out: JsonOut = None,
) -> None:
    """Train a model: stm; lite by online distillation; spvos by mixed sparse training from stm (resumable, with periodic validation J&F); or arseg in its three stages."""
    from vseg.train import TrainConfig, train_vos

    if model not in ("stm", "lite", "spvos", "arseg"):
        raise VsegError(f"vseg train --model takes stm, lite, spvos or arseg, not {model!r}")
    _reject_foreign_options(ctx, model)
    if teacher_lr is not None and teacher_lr < 0:
        raise VsegError(f"--teacher-lr must be >= 0, got {teacher_lr:g}")
    if gate_lr_scale <= 0:
        raise VsegError(f"--gate-lr-scale must be > 0, got {gate_lr_scale:g}")
    if model == "arseg":
        options = {"batch_size": batch_size, "lr": lr, "crop": tuple(crop) if crop else None,
                   "warmup_steps": warmup_steps if _given(ctx, "warmup_steps") else None,
                   "checkpoint_every": checkpoint_every if _given(ctx, "checkpoint_every") else None}
        _train_arseg(data, run_dir, out, stage_steps, seed, resume, init_weights, lr_from_hr, json_out,
                     {k: v for k, v in options.items() if v is not None})
        return
    cfg = TrainConfig(model=model, data=str(data), out=str(run_dir), weights=str(out) if out else None,
                      steps=steps, batch_size=batch_size or 1, crop=tuple(crop or (128, 224)), clip_len=clip_len,
                      lr=5e-4 if lr is None else lr, seed=seed,
                      max_skip=max_skip, warmup_steps=warmup_steps, checkpoint_every=checkpoint_every,
                      num_workers=workers, amp=amp, dice_weight=dice_weight,
                      val_data=str(val_data) if val_data else None, val_every=val_every,
                      resume=str(resume) if resume else None, init_weights=str(init_weights) if init_weights else None,
                      freeze_norm_at=freeze_norm_at,
                      teacher_weights=str(teacher) if teacher else None, teacher_lr=teacher_lr, use_kd=kd, use_smooth=smooth, use_stff=stff,
                      use_discriminator=discriminator, use_adaptive_lr=adaptive_lr,
                      sparsity_weight=sparsity_weight, gate_lr_scale=gate_lr_scale,
                      model_options=_budget_options(budget_range))
    result = train_vos(cfg)
    last = result.validation[-1] if result.validation else None
    score = f", validation J&F {last['J&F']:.2f}" if last else ""
    console.print(f"wrote {result.weights} after {result.steps} steps ({result.wall_seconds / 60:.1f} min{score})",
                  highlight=False)
    write_json(json_out, {"config": cfg, "weights": result.weights, "validation": result.validation,
                          "wall_seconds": result.wall_seconds, "steps_per_second": result.steps_per_second})


def _budget_options(budget_range: tuple[float, float] | None) -> dict:
    """spvos config overrides for --budget-range (the default budget moved into the range)."""
    if budget_range is None:
        return {}
    low, high = budget_range
    if not 0.0 <= low <= high <= 1.0:
        raise VsegError(f"--budget-range needs 0 <= LOW <= HIGH <= 1, got {low:g} {high:g}")
    return {"budget_low": low, "budget_high": high, "budget": min(max(0.5, low), high)}


# Options that only some models read: given to another model they are an error, not silently ignored.
_VOS_MODELS = ("stm", "lite", "spvos")
_OPTION_READERS = {
    "stage_steps": ("arseg",), "lr_from_hr": ("arseg",),
    **{name: _VOS_MODELS for name in ("steps", "clip_len", "max_skip", "workers", "val_data", "val_every",
                                      "amp", "dice_weight", "freeze_norm_at")},
    **{name: ("lite",) for name in ("teacher", "teacher_lr", "kd", "smooth", "stff", "discriminator", "adaptive_lr")},
    "budget_range": ("spvos",), "sparsity_weight": ("spvos",), "gate_lr_scale": ("spvos",),
}


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether option ``name`` (its parameter name) was given on the command line."""
    source = ctx.get_parameter_source(name)  # by name: typer vendors its own copy of click's enum
    return source is not None and source.name != "DEFAULT"


def _reject_foreign_options(ctx: typer.Context, model: str) -> None:
    """One error line naming the options ``model`` would otherwise silently ignore."""
    foreign = [p for p in ctx.command.params
               if model not in _OPTION_READERS.get(p.name, (model,)) and _given(ctx, p.name)]
    if not foreign:
        return
    flags = ["/".join(p.opts + p.secondary_opts) for p in foreign]
    readers = sorted({", ".join(_OPTION_READERS[p.name]) for p in foreign})
    hint = " (arseg counts its steps per stage: --stage-steps)" if model == "arseg" and "--steps" in flags else ""
    raise VsegError(f"vseg train --model {model} does not take {', '.join(flags)}: "
                    f"{'it is' if len(flags) == 1 else 'they are'} read by {' / '.join(readers)} only{hint}")


def _train_arseg(data: Path, run_dir: Path, out: Path | None, stage_steps, seed: int, resume: Path | None,
                 init_weights: Path | None, lr_from_hr: bool, json_out: Path | None, overrides: dict) -> None:
    from vseg.train.arseg import ARSegTrainConfig, train_arseg

    stages = dict(zip(("hr_steps", "lr_steps", "fusion_steps"), stage_steps)) if stage_steps else {}
    options = dict(stages, init_lr_from_hr=lr_from_hr, **overrides)
    cfg = ARSegTrainConfig(data=str(data), out=str(run_dir), weights=str(out) if out else None, seed=seed, resume=str(resume) if resume else None,
                           init_weights=str(init_weights) if init_weights else None, **options)
    total = sum(cfg.stage_steps().values())
    with progress() as bar:
        job = bar.add_task("train arseg", total=total)
        result = train_arseg(cfg, lambda step, n, stats: bar.update(job, completed=step, total=n))
    console.print(f"wrote {result.weights} after {total} steps ({result.wall_seconds / 60:.1f} min)", highlight=False)
    write_json(json_out, {"config": cfg, "weights": result.weights, "lr_alone_weights": result.lr_alone_weights,
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
