"""Probe: read the newest memory frame only near each query pixel. Does it cut false marks?

A target moves a few pixels a frame in these clips, so a match in the frame before that lies far
from the query pixel is a look-alike or an error. This probe, at inference only and without
touching the runtime's code, masks the affinity of the memory frame written one frame earlier
(the previous-frame slot, or the ring slot of a memory write) to every query pixel more than
``R`` stride-16 cells away (Euclidean distance between cell centres), then scores the set with
the runtime's defaults (``validate_vos``). Every other memory frame, the pinned first one
included, is still read everywhere. ``R`` 0 is the runtime's global read.

    python benchmarks/vos_local_previous_read.py --model stm --data data/seed10 --radii 0,3 --json local_read.json

It patches :mod:`vseg.models.memory_read` and :class:`InferenceCore` for the process it runs in;
a result of session 21 (BENCHMARKS.md) is that it changes little, so the runtime keeps the
global read.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import vseg.models.memory_read as memory_read
import vseg.models.stm as stm_module
from vseg.errors import VsegError
from vseg.jsonio import write_json
from vseg.models.weights import load_named_model
from vseg.runtime.inference_core import InferenceCore
from vseg.train import validate_vos

_probe = {"radius": 0.0, "slot": None, "grid": None}  # what the patched read sees


def _far_cells(h: int, w: int, radius: float) -> torch.Tensor:
    """[h*w, h*w] bool: query cell to memory cell farther than ``radius`` cells."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    centres = torch.stack([ys.flatten(), xs.flatten()], 1).float()
    return torch.cdist(centres, centres) > radius


def install() -> None:
    """Patch the read (global by default: radius 0) for this process."""
    decode, affinity, read = InferenceCore._decode, memory_read.l2_affinity, memory_read.read_memory
    cache: dict[tuple, torch.Tensor] = {}

    def local_decode(self, key_out, plan, state):
        memory = state.memory.front
        newest = memory.oldest_to_newest()[-1]
        _probe["slot"] = newest if newest != 0 and memory.frame_indices[newest] == plan.index - 1 else None
        try:
            return decode(self, key_out, plan, state)
        finally:
            _probe["slot"] = None

    def local_affinity(query_key, mem_key, mem_valid):
        out = affinity(query_key, mem_key, mem_valid)  # [B, Q, N]
        slot, radius = _probe["slot"], _probe["radius"]
        if slot is None or radius <= 0:
            return out
        h, w = _probe["grid"]
        key = (h, w, radius)
        if key not in cache:
            cache[key] = _far_cells(h, w, radius)
        cells = slice(slot * h * w, (slot + 1) * h * w)
        out[:, :, cells] = out[:, :, cells].masked_fill(cache[key], float("-inf"))
        return out

    def local_read(query_key, mem_keys, mem_values, mem_valid, top_k):
        _probe["grid"] = tuple(query_key.shape[-2:])
        return read(query_key, mem_keys, mem_values, mem_valid, top_k)

    InferenceCore._decode = local_decode
    memory_read.l2_affinity = local_affinity
    stm_module.read_memory = local_read


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="stm", help="shipped name, or name=weights.safetensors")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--radii", default="0,3", help="comma-separated radii in stride-16 cells (0: global)")
    parser.add_argument("--max-sequences", type=int)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    name, _, weights = args.model.partition("=")
    try:
        radii = [float(r) for r in args.radii.split(",")]
        model = load_named_model(name, weights or None)
        install()
        rows = []
        for radius in radii:
            _probe["radius"] = radius
            began = time.time()
            s = validate_vos(model, args.data, max_sequences=args.max_sequences)
            rows.append({"radius": radius, "J&F": round(s["J&F"], 2), "J": round(s["J"], 2), "F": round(s["F"], 2),
                         "minutes": round((time.time() - began) / 60, 1)})
            print(json.dumps(rows[-1]), flush=True)
    except (VsegError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        write_json(args.json, {"model": args.model, "data": str(args.data), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
