"""Objects that leave the frame and come back: does a VOS model find them again?

Reads the exits that ``vseg data synth-vos`` records in ``synth_vos.json`` (a target's
``gone_from`` .. ``gone_until`` frames outside the picture), runs each model over the set with
the runtime's memory schedule (``validate_vos``) and splits its scores:

- J&F of the clips where some target leaves and returns, and of the others;
- J of each exiting target before it leaves (frames 1 .. gone_from - 1) and after it is back
  (frames gone_until + 1 .. the last scored), the DAVIS per-frame J in percent.

A tracker that only follows the previous frame keeps the first number and loses the second.
J while gone (frames gone_from .. gone_until, where the right answer is an empty mask) is 100
for a model that predicts nothing there and drops for every frame it marks something else.
``--skip-absent both`` runs every model twice: objects reading only the memory frames that show
them (the runtime's default) and reading every frame.

    python benchmarks/vos_reentry.py --data data/seed3 --models stm,lite --threads 2 --json vos_reentry.json

``--models`` takes shipped names or ``name=weights.safetensors`` pairs (e.g.
``stm=runs/stm-c4/stm.safetensors``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vseg.errors import VsegError
from vseg.jsonio import write_json
from vseg.models.weights import load_named_model
from vseg.train import validate_vos


def target_exits(data: Path) -> dict[str, list[dict]]:
    """{sequence: [exit records of annotated targets]} from the generator's summary file."""
    summary = data / "synth_vos.json"
    if not summary.is_file():
        raise SystemExit(f"error: {summary} not found: this benchmark needs clips from `vseg data synth-vos`")
    clips = json.loads(summary.read_text())["clips"]
    return {c["name"]: [e for e in c.get("exits", []) if e["label"] > 0] for c in clips}


def mean_j(per_frame: dict, label: int, first: int, last: int) -> float | None:
    """Mean J (percent) of object ``label`` over scored frames first..last, None when there are none."""
    rows = per_frame["objects"].index(label)
    scored = [i for i, name in enumerate(per_frame["frames"]) if first <= int(name) <= last]
    return float(np.mean(per_frame["J"][rows][scored])) * 100 if scored else None


def reentry_scores(result: dict, exits: dict[str, list[dict]]) -> dict:
    """Split a ``validate_vos`` result by whether a target leaves and comes back."""
    per_frame = result["summary"]["per_frame"]
    with_exit = [n for n in result["sequences"] if exits.get(n)]
    without = [n for n in result["sequences"] if not exits.get(n)]
    before, after, gone = [], [], []
    for name in with_exit:
        last = int(per_frame[name]["frames"][-1])
        for e in exits[name]:
            b = mean_j(per_frame[name], e["label"], 1, e["gone_from"] - 1)
            a = mean_j(per_frame[name], e["label"], e["gone_until"] + 1, last)
            if b is not None and a is not None:
                before.append(b)
                after.append(a)
            g = mean_j(per_frame[name], e["label"], e["gone_from"], e["gone_until"])
            if g is not None:
                gone.append(g)

    def mean(values: list[float]) -> float | None:
        return float(np.mean(values)) if values else None

    return {
        "J_while_gone": mean(gone),
        "J&F": result["J&F"], "J": result["J"], "F": result["F"],
        "clips_with_exit": len(with_exit), "J&F_with_exit": mean([result["sequences"][n] for n in with_exit]),
        "clips_without_exit": len(without), "J&F_without_exit": mean([result["sequences"][n] for n in without]),
        "exiting_targets": len(before), "J_before_exit": mean(before), "J_after_return": mean(after),
        "sequences": result["sequences"],  # per clip J&F, for paired comparisons between weights
    }


def parse_models(text: str) -> list[tuple[str, str, str | None]]:
    """'stm,lite=w.safetensors' -> [(label, model name, weights or None)]."""
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, _, weights = item.partition("=")
        out.append((item, name, weights or None))
    return out


def fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a `vseg data synth-vos` folder")
    parser.add_argument("--split", default="val")
    parser.add_argument("--models", default="stm,lite")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-absent", choices=("on", "off", "both"), default="on",
                        help="objects read only the memory frames that show them (on, the default), every frame "
                             "(off), or one row of each per model (both)")
    parser.add_argument("--max-sequences", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    exits = target_exits(args.data)
    rows = {}
    modes = {"on": [True], "off": [False], "both": [False, True]}[args.skip_absent]
    print("| model | J&F | clips with an exit: J&F | others: J&F | exiting targets: J before | J while gone | "
          "J after return |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for base_label, name, weights in parse_models(args.models):
        model = load_named_model(name, weights)
        for skip_absent in modes:
            label = base_label if len(modes) == 1 else f"{base_label} ({'skips absent' if skip_absent else 'reads all'})"
            start = time.perf_counter()
            result = validate_vos(model, args.data, split=args.split, max_sequences=args.max_sequences,
                                  skip_absent=skip_absent)
            row = reentry_scores(result, exits) | {"weights": weights, "skip_absent": skip_absent,
                                                   "seconds": time.perf_counter() - start}
            rows[label] = row
            print(f"| {label} | {fmt(row['J&F'])} | {fmt(row['J&F_with_exit'])} ({row['clips_with_exit']}) | "
                  f"{fmt(row['J&F_without_exit'])} ({row['clips_without_exit']}) | {fmt(row['J_before_exit'])} | "
                  f"{fmt(row['J_while_gone'])} | {fmt(row['J_after_return'])} |", flush=True)
    result = {"data": str(args.data), "split": args.split, "threads": args.threads, "models": rows}
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    try:
        main()
    except VsegError as error:  # a wrong model name or weights file: one line, not a traceback
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
