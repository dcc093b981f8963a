"""VOS models side by side on this machine: parameters, GFLOPs per frame and time per frame.

Every model runs the same frames through its own :class:`InferenceCore` (memory writes every
``mem_every`` frames and, unless ``--no-keep-previous``, the previous-frame slot's
``encode_value`` on the other frames included), one frame of each model in turn, so machine
load hits all of them alike. The first frame (mask encoding) and ``--warmup`` frames are not timed; the figure
is the median time per frame. Weights are the shipped ones when present, else random (speed
does not depend on the values). Example:

    python benchmarks/vos_speed.py --models stm,lite --frames 24 --json vos_speed.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vseg.data.datasets import DavisDataset, load_sequence
from vseg.data.synth_vos import generate_vos
from vseg.errors import VsegError
from vseg.models.registry import build_model, count_parameters, step_gflops
from vseg.models.weights import load_named_model
from vseg.runtime.inference_core import InferenceCore
from vseg.runtime.policies import value_encode_share


def load_or_build(name: str):
    try:
        return load_named_model(name), "shipped"
    except VsegError:
        return build_model(name).eval(), "random"


def synthetic_clip(height: int, width: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
    with tempfile.TemporaryDirectory() as tmp:
        generate_vos(tmp, clips=1, seed=7, frames=frames, height=height, width=width, val_fraction=0.0)
        seq = DavisDataset(tmp, split="train")[0]
        return load_sequence(seq)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="stm,lite")
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=854)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--mem-every", type=int, default=5)
    ap.add_argument("--no-keep-previous", dest="keep_previous", action="store_false",
                    help="the old schedule: no previous frame in memory, encode_value on memory writes only")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n for n in args.models.split(",") if n]
    frames, masks = synthetic_clip(args.height, args.width, args.frames)
    objects = int(masks[0].max())

    rows = {}
    cores = {}
    for name in names:
        model, source = load_or_build(name)
        flops = step_gflops(model, args.height, args.width, num_objects=objects)
        value_share = value_encode_share(args.mem_every, args.keep_previous)
        rows[name] = {"weights": source, "parameters": count_parameters(model),
                      "gflops_step": flops["step"], "gflops_memory_write": flops["encode_value"],
                      "gflops_per_frame": flops["step"] + flops["encode_value"] * value_share, "times": []}
        cores[name] = InferenceCore(model, mem_every=args.mem_every, keep_previous=args.keep_previous)
    for t, frame in enumerate(frames):
        for name in names:  # interleaved: each frame runs on every model before the next
            start = time.perf_counter()
            cores[name].step(frame, masks[0] if t == 0 else None)
            if t > args.warmup:
                rows[name]["times"].append(time.perf_counter() - start)
    for row in rows.values():
        row["ms_per_frame"] = 1000 * statistics.median(row.pop("times"))
        row["fps"] = 1000 / row["ms_per_frame"]

    base = names[0]
    print(f"{args.height}x{args.width}, {objects} object(s), {len(frames)} frames, mem_every {args.mem_every}, "
          f"previous frame {'kept' if args.keep_previous else 'not kept'}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'model':8} {'params':>12} {'GFLOPs/frame':>13} {'ms/frame':>9} {'fps':>6}  vs {base}")
    for name, r in rows.items():
        ratio = (f"x{rows[base]['parameters'] / r['parameters']:.1f} params, "
                 f"x{rows[base]['gflops_per_frame'] / r['gflops_per_frame']:.1f} GFLOPs, "
                 f"x{rows[base]['ms_per_frame'] / r['ms_per_frame']:.1f} speed")
        print(f"{name:8} {r['parameters']:>12,} {r['gflops_per_frame']:>13.2f} {r['ms_per_frame']:>9.1f} "
              f"{r['fps']:>6.2f}  {ratio}")
    result = {"machine": {"threads": torch.get_num_threads(), "torch": torch.__version__},
              "height": args.height, "width": args.width, "objects": objects, "frames": len(frames),
              "mem_every": args.mem_every, "keep_previous": args.keep_previous, "models": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
