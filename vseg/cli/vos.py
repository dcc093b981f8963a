"""Commands that run a model on video: run, demo, profile, export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vseg.cli.common import JsonOut, Seed, app, console, progress, write_json
from vseg.errors import VsegError

# Options of the commands that run a VOS model (run, demo, profile), declared once.
ModelName = Annotated[str, typer.Option("--model", help="stm, lite or spvos.")]
Weights = Annotated[Path | None, typer.Option("--weights", help="torch backend: a safetensors file written by vseg train (default: the shipped weights).")]
BackendName = Annotated[str, typer.Option("--backend", help="torch (PyTorch), ort (onnxruntime on an --engines folder), trt (TensorRT plans that vseg build added to it).")]
Engines = Annotated[Path | None, typer.Option("--engines", help="ort and trt backends: an engine folder written by vseg export (and vseg build for trt).")]
MemEvery = Annotated[int, typer.Option("--mem-every", help="Write memory every N frames.")]
KeepPrevious = Annotated[bool, typer.Option("--keep-previous/--no-keep-previous", help="Keep the previous frame in a temporary memory slot between writes, as STM does (one more encode_value per frame).")]
SkipAbsent = Annotated[bool, typer.Option("--skip-absent/--no-skip-absent", help="An object reads only the memory frames whose mask shows it, and the first: one that left the picture is looked for where it was seen.")]
MinSide = Annotated[int | None, typer.Option("--min-side", help="Scale frames whose shorter side is below N up to N before the network, and the masks back (default: the model's, set by vseg train --min-side; 0: never).")]
Budget = Annotated[float | None, typer.Option("--budget", help="spvos: share of dense work to spend (in the trained range).")]
Flip = Annotated[bool, typer.Option("--flip", help="Also run every frame mirrored left to right, a second tracker with its own memory, and average the two (test-time flip augmentation: twice the engine time and memory).")]
DenseEvery = Annotated[int | None, typer.Option("--dense-every", help="spvos: run all-dense at least every N frames.")]
ClipHeight = Annotated[int, typer.Option("--height", help="Synthetic clip height (an engine folder's size wins).")]
ClipWidth = Annotated[int, typer.Option("--width", help="Synthetic clip width (an engine folder's size wins).")]


def _frame_progress(bar, job):
    return lambda i, n: bar.update(job, completed=i + 1, total=n)


@app.command()
def run(
    video: Annotated[Path, typer.Argument(help="Video file to segment; VOS models also take a folder of frame images (DAVIS or YouTube-VOS JPEGImages/<video>), whose masks are named like its images.")],
    mask: Annotated[Path | None, typer.Option("--mask", help="VOS models: first-frame mask, indexed PNG (DAVIS style) or RGB in the DAVIS palette; or a folder of masks named by frame index (00000.png, 00042.png...) or, for a folder of frames, like its images, for objects that enter later (YouTube-VOS style).")] = None,
    model: Annotated[str, typer.Option("--model", help="stm, lite or spvos (VOS, need --mask), or arseg (semantic segmentation).")] = "lite",
    weights: Weights = None,
    backend: BackendName = "torch",
    engines: Engines = None,
    out: Annotated[Path | None, typer.Option("--out", help="Output folder for 00000.png... (default: out/<video name>).")] = None,
    overlay: Annotated[Path | None, typer.Option("--overlay", help="Also write the masks blended on the video to this mp4.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run into the same --out folder.")] = False,
    mem_every: MemEvery = 5,
    keep_previous: KeepPrevious = True,
    skip_absent: SkipAbsent = True,
    min_side: MinSide = None,
    max_frames: Annotated[int | None, typer.Option("--max-frames", help="Stop after N frames.")] = None,
    capacity: Annotated[int, typer.Option("--capacity", help="VOS models: memory slots (the first frame, each later mask frame, the ring and the previous frame); an engine folder's own count wins.")] = 8,
    budget: Budget = None,
    dense_every: DenseEvery = None,
    flip: Flip = False,
    lr_scale: Annotated[float | None, typer.Option("--lr-scale", help="arseg: resolution of non-keyframes (0.3-0.9; default: the model's).")] = None,
    keyframe_interval: Annotated[int | None, typer.Option("--keyframe-interval", help="arseg: also a keyframe every L frames (I-frames always are).")] = None,
    json_out: JsonOut = None,
) -> None:
    """Segment a video: the objects of a first-frame mask (VOS models), or every pixel's class (arseg); one palette PNG per frame."""
    from vseg.runtime.backends import open_backend
    from vseg.runtime.run_vos import run_vos

    out = out or Path("out") / video.stem
    if model == "arseg":
        if flip:
            raise VsegError("--flip is for the VOS models (stm, lite, spvos); arseg runs each frame once")
        _run_arseg(video, out, weights, backend, engines, overlay, max_frames, lr_scale, keyframe_interval, json_out)
        return
    if mask is None:
        raise VsegError(f"--model {model} segments the objects of a first-frame mask: pass --mask first.png")
    with open_backend(backend, model, weights=weights, engines=engines) as runner, progress() as bar:
        job = bar.add_task(f"{model} on {video.name}", total=None)
        summary = run_vos(video, mask, runner, out, mem_every=mem_every, keep_previous=keep_previous, capacity=capacity, budget=budget,
                          dense_every=dense_every, skip_absent=skip_absent, min_side=min_side, max_frames=max_frames, overlay=overlay, resume=resume,
                          flip=flip, on_frame=_frame_progress(bar, job))
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
        raise VsegError(f"arseg runs on the torch or ort backend, not {backend!r} (its TensorRT plans build with "
                        "vseg build; a trt runner for them is not written yet)")
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
    flip: Flip = False,
    json_out: JsonOut = None,
) -> None:
    """Render a synthetic clip, segment it (PNGs + overlay mp4) and print J&F against its ground truth."""
    from vseg.runtime.backends import open_backend
    from vseg.runtime.demo import run_demo

    with open_backend(backend, model, weights=weights, engines=engines) as runner, progress() as bar:
        size = runner.static_size or (height, width)
        job = bar.add_task(f"{model} on a synthetic clip", total=frames)
        result = run_demo(runner, out, frames=frames, height=size[0], width=size[1], seed=seed,
                          flip=flip, on_frame=_frame_progress(bar, job))
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
    video: Annotated[Path | None, typer.Option("--video", help="Video file or folder of frame images to run (default: a synthetic clip).")] = None,
    mask: Annotated[Path | None, typer.Option("--mask", help="First-frame mask of --video (default: one centred box).")] = None,
    frames: Annotated[int, typer.Option("--frames", help="Frames measured per pass.")] = 60,
    warmup: Annotated[int, typer.Option("--warmup", help="Frames run before measuring.")] = 5,
    height: ClipHeight = 240,
    width: ClipWidth = 432,
    mem_every: MemEvery = 5,
    keep_previous: KeepPrevious = True,
    skip_absent: SkipAbsent = True,
    min_side: MinSide = None,
    budget: Budget = None,
    dense_every: DenseEvery = None,
    flip: Flip = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="Per-frame latency plot (PNG).")] = None,
    json_out: JsonOut = None,
) -> None:
    """FPS with and without decoding, latency percentiles, time per engine, GFLOPs and peak memory."""
    from vseg.runtime.backends import open_backend
    from vseg.runtime.profile import plot_latency, profile_vos

    with open_backend(backend, model, weights=weights, engines=engines) as runner:
        result = profile_vos(runner, video=video, mask=mask, frames=frames, warmup=warmup, height=height,
                             width=width, mem_every=mem_every, keep_previous=keep_previous, budget=budget,
                             dense_every=dense_every, skip_absent=skip_absent, min_side=min_side, flip=flip)
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
def build(
    engines: Annotated[Path, typer.Argument(help="An engine folder written by vseg export.")],
    fp16: Annotated[bool, typer.Option("--fp16", help="Let TensorRT pick fp16 kernels (TensorRT 10; see the docs).")] = False,
    plugins: Annotated[Path | None, typer.Option("--plugins", help="libvseg_plugins.so (default: $VSEG_PLUGINS_LIB, else plugins/build*/).")] = None,
    json_out: JsonOut = None,
) -> None:
    """Build TensorRT plans for an engine folder's graphs (with vseg's plugins), for the trt backend."""
    from vseg.export.build_trt import build_engines

    with progress() as bar:
        task = bar.add_task("building TensorRT engines", total=None)
        section = build_engines(engines, fp16=fp16, plugins=plugins,
                                progress=lambda engine: bar.update(task, description=f"building {engine}"))
    console.print(f"wrote {', '.join(p['file'] for p in section['plans'].values())} in {engines} "
                  f"(TensorRT {section['version']}, {'fp16' if fp16 else 'fp32'}, {section['device']})", highlight=False)
    write_json(json_out, section)
