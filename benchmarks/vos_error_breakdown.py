"""Where does a VOS model lose its J&F? Over time, by object size, and by what the wrong pixels are.

Runs each model over a ``vseg data synth-vos`` set with the runtime's defaults (as
``validate_vos`` does) and reports, next to J&F:

- J by frames since the first (1, 2-5, 6-10, 11-20, 21 and later), over the frames where the
  target is visible: a model that drifts starts high and falls;
- J at frame 1 by the target's size in stride-16 cells (16x16-pixel blocks, the grid of the
  memory read), next to copying the first frame's true mask (what a tracker one frame late
  would give) and to the model on the first frame fed again as the second: nothing moved and
  the ground truth is in memory, so what is lost there is lost in the memory read and the
  decoder, the ceiling of mask reconstruction (``--recon-scales 1,1.5,2`` also runs it with
  frame and mask scaled up first, the probabilities scaled back);
- the wrong pixels of every target on every frame, sorted by :func:`attribute_errors`: missed
  as background or as another target; false on a distractor (the generator re-renders each
  clip's unannotated look-alikes), on another target, near the target (within 4 pixels: a
  boundary or a lag) or far away (the target was lost). Shares of all wrong pixels, in percent.

    python benchmarks/vos_error_breakdown.py --data data/seed2 --models stm,lite --threads 2 --recon-scales 1,1.5,2 \
        --json vos_errors.json

``--models`` takes shipped names or ``name=weights.safetensors`` pairs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from vos_reentry import fmt, parse_models  # the sibling benchmark (this folder is on sys.path when run)

from vseg.data.datasets import load_sequence, open_dataset
from vseg.data.vos_scene import plan_clip, render_masks
from vseg.errors import VsegError
from vseg.jsonio import write_json
from vseg.metrics.breakdown import ERROR_KINDS, attribute_errors
from vseg.metrics.frame_jf import region_jaccard
from vseg.models.weights import load_named_model
from vseg.runtime.inference_core import InferenceCore
from vseg.train import validate_vos
from vseg.train.validate import segment_sequence
from vseg.train.vos_data import resize_frames, resize_ids

OPEN_END = 10**6  # frames
TIME_BINS = ((1, 1), (2, 5), (6, 10), (11, 20), (21, OPEN_END))
SIZE_BINS = ((0, 1.5), (1.5, 3), (3, 6), (6, float("inf")))  # stride-16 cells
CELL = 16 * 16


def load_plans(data: Path) -> dict[str, tuple]:
    """{sequence: (seed, index, frames, height, width, distractor ids)} from synth_vos.json."""
    summary = data / "synth_vos.json"
    if not summary.is_file():
        raise SystemExit(f"error: {summary} not found: this benchmark needs clips from `vseg data synth-vos`")
    meta = json.loads(summary.read_text())
    plans = {}
    for clip in meta["clips"]:
        index = int(clip["name"].rsplit("-", 1)[1])
        distractors = [o["instance"] for o in clip["objects"] if o["label"] == 0]
        plans[clip["name"]] = (meta["seed"], index, meta["frames"], meta["height"], meta["width"], distractors)
    return plans


def size_bin(pixels: int) -> int:
    """Index in SIZE_BINS of a target of ``pixels`` pixels."""
    cells = pixels / CELL
    return next(i for i, (low, high) in enumerate(SIZE_BINS) if low <= cells < high)


def analyse_sequence(pred: np.ndarray, masks: np.ndarray, plan_args: tuple, tally: dict) -> None:
    """Add one sequence's per-frame J, frame-1 figures and wrong pixels to ``tally``.
    pred, masks: uint8 [T, H, W] ids."""
    seed, index, frames, height, width, distractors = plan_args
    plan = plan_clip(seed, index, frames, height, width)
    targets = [int(v) for v in np.unique(masks[0]) if v != 0]
    for t in range(1, len(masks)):
        labels, instances = render_masks(plan, t)
        if not np.array_equal(labels, masks[t]):
            raise SystemExit(f"error: the generator's frame {t} of {plan_args} does not match the annotations "
                             "(a set made by another vseg version?)")
        distractor = np.isin(instances, distractors)
        for k in targets:
            truth = masks[t] == k
            counts = attribute_errors(masks[t], pred[t], k, distractor)
            for kind in ERROR_KINDS:
                tally["pixels"][kind] += counts[kind]
            if not truth.any():
                continue
            j = region_jaccard(truth, pred[t] == k)
            next(b for b in tally["by_time"] if b["first"] <= t <= b["last"])["J"].append(j)
            if t == 1:
                row = tally["by_size"][size_bin(truth.sum())]
                row["J"].append(j)
                row["J_copy_first"].append(region_jaccard(truth, masks[0] == k))


def bin_name(low, high, unbounded) -> str:
    """(1, 1) -> '1', (2, 5) -> '2-5', (21, unbounded) -> '21+'."""
    return f"{low}+" if high == unbounded else str(low) if low == high else f"{low}-{high}"


def summarise(tally: dict) -> dict:
    def pct(values: list[float]) -> float | None:
        return float(np.mean(values)) * 100 if values else None

    wrong = sum(tally["pixels"].values())
    return {
        "J_by_time": [{"frames": bin_name(b["first"], b["last"], OPEN_END),
                       "J": pct(b["J"]), "count": len(b["J"])} for b in tally["by_time"]],
        "J_frame1_by_size": [{"cells": bin_name(b["min_cells"], b["max_cells"], float("inf")), "count": len(b["J"])}
                             | {k: pct(v) for k, v in b.items() if k.startswith("J")} for b in tally["by_size"]],
        "wrong_pixels": wrong,
        "wrong_pixel_shares": {k: 100.0 * v / wrong if wrong else None for k, v in tally["pixels"].items()},
    }


def reconstruction_j(model, frame: np.ndarray, mask: np.ndarray, scale: float) -> dict[int, float]:
    """{target id: J} of ``frame`` (uint8 [H, W, 3]) segmented again right after it was given
    with ``mask`` (uint8 [H, W]), both first resized by ``scale``."""
    h, w = mask.shape
    size = (round(h * scale), round(w * scale))
    image = (resize_frames(frame[None], size)[0] * 255).round().to(torch.uint8)
    core = InferenceCore(model)
    core.step(image, resize_ids(mask[None], size)[0])
    result = core.step(image)
    probs = F.interpolate(result.probabilities[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    ids = np.array([0, *result.object_ids], np.uint8)[probs.argmax(0).numpy()]
    return {k: region_jaccard(mask == k, ids == k) for k in result.object_ids}


def run_model(model, data: Path, split: str, max_sequences: int | None, plans: dict,
              recon_scales: list[float]) -> dict:
    tally = {"pixels": dict.fromkeys(ERROR_KINDS, 0),
             "by_time": [{"first": a, "last": b, "J": []} for a, b in TIME_BINS],
             "by_size": [{"min_cells": a, "max_cells": b, "J": [], "J_copy_first": [],
                          **{f"J_same_frame_x{x:g}": [] for x in recon_scales}} for a, b in SIZE_BINS]}
    predictions = {}

    def predict(name: str, frames: np.ndarray, first: np.ndarray) -> np.ndarray:
        predictions[name] = segment_sequence(model, frames, first)
        return predictions[name]

    result = validate_vos(predict, data, split=split, max_sequences=max_sequences)
    for seq in open_dataset(data, split):
        if seq.name in predictions:
            frames, masks = load_sequence(seq)
            analyse_sequence(predictions[seq.name], masks, plans[seq.name], tally)
            for x in recon_scales:
                for k, j in reconstruction_j(model, frames[0], masks[0], x).items():
                    tally["by_size"][size_bin((masks[0] == k).sum())][f"J_same_frame_x{x:g}"].append(j)
    return {"J&F": result["J&F"], "J": result["J"], "F": result["F"]} | summarise(tally)


def print_tables(rows: dict) -> None:
    labels = list(rows)
    first = rows[labels[0]]
    print("\nJ (visible frames) by frames since the first:\n")
    print("| model | J&F | " + " | ".join(f"frames {b['frames']}" for b in first["J_by_time"]) + " |")
    print("|---|---:|" + "---:|" * len(first["J_by_time"]))
    for label, r in rows.items():
        print(f"| {label} | {fmt(r['J&F'])} | " + " | ".join(fmt(b["J"]) for b in r["J_by_time"]) + " |")
    columns = [k for k in first["J_frame1_by_size"][0] if k.startswith("J")]
    print(f"\nJ at frame 1 by target size (stride-16 cells), {' / '.join(columns)}:\n")
    print("| model | " + " | ".join(f"{b['cells']} cells ({b['count']})" for b in first["J_frame1_by_size"]) + " |")
    print("|---|" + "---:|" * len(first["J_frame1_by_size"]))
    for label, r in rows.items():
        print(f"| {label} | " + " | ".join(" / ".join(fmt(b[c]) for c in columns)
                                          for b in r["J_frame1_by_size"]) + " |")
    print("\nWrong pixels, percent of all:\n")
    print("| model | wrong pixels | " + " | ".join(k.replace("_", " ") for k in ERROR_KINDS) + " |")
    print("|---|---:|" + "---:|" * len(ERROR_KINDS))
    for label, r in rows.items():
        print(f"| {label} | {r['wrong_pixels']} | " + " | ".join(fmt(r["wrong_pixel_shares"][k])
                                                            for k in ERROR_KINDS) + " |")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a `vseg data synth-vos` folder")
    parser.add_argument("--split", default="val")
    parser.add_argument("--models", default="stm,lite", help="shipped names or name=weights.safetensors, comma-separated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-sequences", type=int, default=None)
    parser.add_argument("--recon-scales", default="1",
                        help="scales of the same-frame reconstruction, comma-separated (e.g. 1,1.5,2)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    plans = load_plans(args.data)
    rows = {}
    for item, name, weights in parse_models(args.models):
        start = time.perf_counter()
        rows[item] = run_model(load_named_model(name, weights), args.data, args.split,
                               args.max_sequences, plans, [float(x) for x in args.recon_scales.split(",")])
        rows[item] |= {"weights": weights, "seconds": time.perf_counter() - start}
        print(f"{item}: J&F {rows[item]['J&F']:.2f} ({rows[item]['seconds']:.0f} s)", flush=True)
    print_tables(rows)
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
