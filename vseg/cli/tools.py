"""Commands that look at data rather than run a model: doctor, eval, transcode, probe."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.markup import escape
from rich.table import Table

from vseg.cli.common import JsonOut, app, console, progress, write_json
from vseg.errors import VsegError


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
    late_objects: Annotated[bool, typer.Option("--late-objects", help="vos: objects may enter after the first annotated frame (YouTube-VOS style, sparse annotations): each is scored on the annotated frames after its first.")] = False,
    json_out: JsonOut = None,
) -> None:
    """Score predictions: DAVIS-2017 semi-supervised J&F (vos) or mIoU from a confusion matrix (vss)."""
    if task == "vos":
        from vseg.metrics.davis import evaluate_davis, format_davis_table
        from vseg.metrics.entering import evaluate_entering

        names = [s for s in sequences.split(",") if s] if sequences else None
        evaluate = evaluate_entering if late_objects else evaluate_davis
        with progress() as bar:
            job = bar.add_task("scoring sequences", total=None)
            result = evaluate(pred, gt, sequences=names,
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

