"""Where a VOS model's mask goes when it is wrong, and whether its confidence says so.

Runs a model over a ``vseg data synth-vos`` set with the runtime's defaults and sorts every
(frame, object) after the first frame:

- target in view: the prediction is ``good`` (J >= 0.5), ``partial`` (overlaps, J < 0.5),
  ``elsewhere`` (a mask that misses the target entirely: a look-alike or a wrong place) or
  ``empty``; counted over all frames and over the frames after the target came back from
  outside the picture (the exits ``synth_vos.json`` records);
- target out of view: frames with a false mask (the right answer is none);
- mean probability of the object over its own predicted pixels: how many false masks (target
  out of view) and how many good ones a threshold on it would drop, the test of a confidence
  gate at inference.

    python benchmarks/vos_lost_targets.py --model stm --data data/seed10 --json lost_targets.json
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from vos_probe import probe_parser
from vos_reentry import target_exits

from vseg.data.datasets import load_sequence, open_dataset
from vseg.errors import VsegError
from vseg.jsonio import write_json
from vseg.models.weights import load_named_model
from vseg.runtime.inference_core import InferenceCore

THRESHOLDS = (0.6, 0.7, 0.8)


def frame_rows(model, data: Path, max_clips: int | None) -> list[dict]:
    """One row per (clip, frame >= 1, object): areas, overlap and mean probability of the prediction."""
    rows = []
    for seq in list(open_dataset(data, "val"))[:max_clips]:
        frames, masks = load_sequence(seq)
        core = InferenceCore(model)
        for t, frame in enumerate(frames):
            result = core.step(frame, masks[0] if t == 0 else None)
            if t == 0:
                continue
            for k, obj in enumerate(result.object_ids):
                pred, gt = result.ids == obj, masks[t] == obj
                area = int(pred.sum())
                rows.append({"clip": seq.name, "t": t, "object": obj, "gt_area": int(gt.sum()), "pred_area": area,
                             "overlap": int((pred & gt).sum()),
                             "mean_p": float(result.probabilities[k + 1].numpy()[pred].mean()) if area else 0.0})
    return rows


def category(row: dict) -> str:
    if row["pred_area"] == 0:
        return "empty"
    if row["overlap"] == 0:
        return "elsewhere"
    j = row["overlap"] / (row["gt_area"] + row["pred_area"] - row["overlap"])
    return "good" if j >= 0.5 else "partial"


def summarise(rows: list[dict], exits: dict[str, list[dict]]) -> dict:
    returned = {(c, e["label"]): e["gone_until"] for c, es in exits.items() for e in es}
    in_view = [r for r in rows if r["gt_area"] > 0]
    after = [r for r in in_view if r["t"] > returned.get((r["clip"], r["object"]), 10**9)]
    out_of_view = [r for r in rows if r["gt_area"] == 0]
    false_masks = [r for r in out_of_view if r["pred_area"] > 0]
    good = [r for r in in_view if category(r) == "good"]
    return {
        "in_view": dict(Counter(category(r) for r in in_view)),
        "after_return": dict(Counter(category(r) for r in after)),
        "out_of_view": len(out_of_view), "out_of_view_false_masks": len(false_masks),
        "gate": {str(th): {"false_masks_dropped": sum(r["mean_p"] < th for r in false_masks),
                           "good_masks_dropped": sum(r["mean_p"] < th for r in good), "good_masks": len(good)}
                 for th in THRESHOLDS},
    }


def main(argv: list[str] | None = None) -> int:
    args = probe_parser(__doc__, "lost_targets.json").parse_args(argv)
    torch.set_num_threads(args.threads)
    exits = target_exits(Path(args.data))  # (a folder without synth_vos.json: one error line)
    start = time.perf_counter()
    try:
        rows = frame_rows(load_named_model(args.model, args.weights), Path(args.data), args.max_clips)
    except VsegError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = summarise(rows, exits)
    print(json.dumps(summary, indent=1))
    write_json(args.json, {"model": args.model, "weights": args.weights or "shipped", "data": str(args.data),
                           "minutes": round((time.perf_counter() - start) / 60, 1), **summary, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
