"""J&F of one VOS model under several memory schedules, side by side on the same clips.

A schedule is how often the memory is written (``mem_every``), how many slots it has
(``capacity``) and whether the previous frame is kept in a temporary slot between writes
(``keep_previous``). The weights are the same for every row, so the differences are the
schedule's alone; GFLOPs per frame at 480x854 (3 objects, ``step_gflops``) show what it costs.

    python benchmarks/memory_schedule.py --model stm --data data/seed2 --max-sequences 10 --json memory_schedule.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from vseg.jsonio import write_json
from vseg.models.registry import step_gflops
from vseg.models.weights import load_named_model
from vseg.runtime.policies import value_encode_share
from vseg.train import validate_vos

# (mem_every, capacity, keep_previous): the old default, denser writes, the default and its neighbours
SCHEDULES = [(5, 8, False, True), (3, 8, False, True), (2, 8, False, True), (1, 8, False, True),
             (1, 4, False, True), (5, 8, True, True), (3, 8, True, True), (10, 8, True, True)]


def parse_schedule(text: str) -> tuple[int, int, bool, bool]:
    """'5,8,1' -> (mem_every 5, capacity 8, keep_previous True, skip_absent True); an optional
    fourth field 0 makes every object read every memory frame ('5,8,1,0')."""
    fields = [int(v) for v in text.split(",")]
    if len(fields) not in (3, 4):
        raise argparse.ArgumentTypeError(f"{text!r}: want MEM_EVERY,CAPACITY,KEEP_PREVIOUS[,SKIP_ABSENT]")
    every, capacity, keep, skip = (fields + [1])[:4]
    return every, capacity, bool(keep), bool(skip)


def gflops_per_frame(model, mem_every: int, capacity: int, keep_previous: bool, height=480, width=854,
                     objects=3) -> float:
    """Average GFLOPs per frame over a long clip: every frame runs encode_key and decode, and
    encode_value on memory writes (1 in mem_every) or, with keep_previous, on every frame."""
    g = step_gflops(model, height, width, objects, capacity)
    return g["step"] + g["encode_value"] * value_encode_share(mem_every, keep_previous)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="stm", help="stm, lite or spvos")
    parser.add_argument("--weights", type=Path, default=None, help="default: the shipped weights")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--max-sequences", type=int, default=None)
    parser.add_argument("--schedule", type=parse_schedule, action="append", default=None,
                        help="MEM_EVERY,CAPACITY,KEEP_PREVIOUS (0/1)[,SKIP_ABSENT (0/1, default 1)]; repeat for "
                             "several (default: a sweep of 8)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_named_model(args.model, args.weights)
    rows = []
    for mem_every, capacity, keep_previous, skip_absent in args.schedule or SCHEDULES:
        start = time.perf_counter()
        scores = validate_vos(model, args.data, split=args.split, max_sequences=args.max_sequences,
                              mem_every=mem_every, capacity=capacity, keep_previous=keep_previous,
                              skip_absent=skip_absent)
        row = {"mem_every": mem_every, "capacity": capacity, "keep_previous": keep_previous, "skip_absent": skip_absent,
               "J&F": scores["J&F"], "J": scores["J"], "F": scores["F"],
               "gflops_per_frame_480p": round(gflops_per_frame(model, mem_every, capacity, keep_previous), 2),
               "seconds": round(time.perf_counter() - start, 1)}
        rows.append(row)
        print(f"mem_every {mem_every:>2}  capacity {capacity}  previous {'yes' if keep_previous else 'no ':<3}  "
              f"skip absent {'yes' if skip_absent else 'no ':<3}  "
              f"J&F {row['J&F']:6.2f}  J {row['J']:6.2f}  F {row['F']:6.2f}  "
              f"{row['gflops_per_frame_480p']:8.2f} GFLOPs/frame", flush=True)
    result = {"model": args.model, "weights": str(args.weights or "shipped"), "data": str(args.data),
              "split": args.split, "sequences": scores["num_sequences"], "objects": scores["num_objects"],
              "schedules": rows}
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
