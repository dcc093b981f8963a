#!/usr/bin/env python3
"""The memory read alone: one shared top-k (every object reads every slot) against one top-k per
object (``skip_absent``, the runtime's default), side by side.

    python benchmarks/memory_read_speed.py --threads 2 --json memory_read_speed.json

Shapes of a 480x854 frame padded to 480x864 (a 30x54 stride-16 grid, Q = 1620 query pixels),
a full memory of ``--capacity`` slots (N = T*Q memory pixels), each model's key and value
widths, 1 and 3 objects. Random keys and values (the read's speed does not depend on them); the
per-object mask hides a different slot from each object, so the top-k sets really differ. Every
candidate runs once per round, interleaved, after warm-up calls; the figure is the median.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from vseg.jsonio import write_json
from vseg.models.memory_read import read_memory

GRID = (30, 54)  # 480x864 at stride 16
MODELS = {"stm": (64, 256), "lite": (32, 64)}  # key and value widths
TOP_K = 20


def inputs(key_dim: int, value_dim: int, objects: int, capacity: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    h, w = GRID
    query = torch.randn(1, key_dim, h, w, generator=gen)
    keys = torch.randn(1, key_dim, capacity, h, w, generator=gen)
    values = torch.randn(1, objects, value_dim, capacity, h, w, generator=gen)
    shared = torch.ones(1, capacity, dtype=torch.bool)
    per_object = torch.ones(1, objects, capacity, dtype=torch.bool)
    for k in range(objects):
        per_object[0, k, 1 + k % (capacity - 1)] = False
    return query, keys, values, shared, per_object


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--capacity", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    print("| model | objects | shared read ms | per-object read ms | ratio |")
    print("|---|---:|---:|---:|---:|")
    for model, (key_dim, value_dim) in MODELS.items():
        for objects in (1, 3):
            query, keys, values, shared, per_object = inputs(key_dim, value_dim, objects, args.capacity)
            candidates = {"shared": shared, "per_object": per_object}
            times = {name: [] for name in candidates}
            with torch.inference_mode():
                for round_ in range(args.warmup + args.repeats):
                    for name, valid in candidates.items():
                        start = time.perf_counter()
                        read_memory(query, keys, values, valid, TOP_K)
                        if round_ >= args.warmup:
                            times[name].append(1000 * (time.perf_counter() - start))
            row = {"model": model, "objects": objects, "capacity": args.capacity,
                   **{f"{name}_ms": statistics.median(t) for name, t in times.items()},
                   **{f"{name}_min_ms": min(t) for name, t in times.items()}}
            row["ratio"] = row["per_object_ms"] / row["shared_ms"]
            rows.append(row)
            print(f"| {model} | {objects} | {row['shared_ms']:.1f} | {row['per_object_ms']:.1f} | "
                  f"x{row['ratio']:.2f} |", flush=True)
    result = {"threads": args.threads, "grid": list(GRID), "top_k": TOP_K, "rows": rows}
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
