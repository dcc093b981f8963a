"""spvos against stm on a held-out VOS set: J&F and GFLOPs over whole clips at several budgets
(issue 4), from one set of spvos weights.

Every clip runs through the runtime's InferenceCore (torch backend), first frame, memory
writes and ``dense_every`` refreshes included, so the saving is the one a user gets: 1 -
(spvos realized GFLOPs summed over all frames) / (stm GFLOPs summed over the same frames).
The spvos rows use the budgets given; the stm row is the dense reference, and an "spvos dense"
row runs spvos with every frame dense, which separates what the gates cost from what spvos's
own training changed. Example (CPU):

    python benchmarks/spvos_budget_curve.py --data data/seed2 --stm runs/stm/stm.safetensors \\
        --spvos runs/spvos/spvos.safetensors --budgets 0.2,0.35,0.5,0.65,0.8 --json spvos_budgets.json

``--no-references`` leaves out the stm and "spvos dense" rows (to spread budgets over several
processes): savings are then against the dense GFLOPs of the same frames, which are stm's.
Prints a markdown table; ``--json`` also keeps J&F per sequence and per-layer decision shares.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from vseg.jsonio import write_json
from vseg.models.cost import summarise_frame_costs
from vseg.models.weights import load_named_model, load_spvos, shipped_weights
from vseg.runtime.inference_core import InferenceCore
from vseg.train.validate import validate_vos


class CountingPredictor:
    """A validate_vos predictor running ``model`` through an InferenceCore per clip and adding
    up dense and realized GFLOPs, keeping spvos's per-frame costs for the per-layer shares."""

    def __init__(self, model, mem_every: int, budget: float | None = None, dense_every: int | None = None):
        self.model, self.mem_every, self.budget, self.dense_every = model, mem_every, budget, dense_every
        self.dense = self.realized = 0.0
        self.frames = 0
        self.gated_costs = []  # spvos: the FrameCost of every frame

    def __call__(self, name: str, frames: np.ndarray, first_mask: np.ndarray) -> np.ndarray:
        core = InferenceCore(self.model, mem_every=self.mem_every, budget=self.budget, dense_every=self.dense_every)
        out = np.empty(frames.shape[:3], np.uint8)
        for t in range(len(frames)):
            result = core.step(frames[t], first_mask if t == 0 else None)
            out[t] = result.ids
            cost = core.costs[-1]
            self.dense += cost.dense
            self.realized += cost.realized
            if cost.key is not None:
                self.gated_costs.append(cost.key)
        self.frames += len(frames)
        return out

    def summary(self) -> dict:
        shares = summarise_frame_costs(self.gated_costs).get("gated_layer_shares", {})
        return {"frames": self.frames, "dense_gflops": self.dense, "realized_gflops": self.realized,
                "layer_shares": shares}


def score(predictor: CountingPredictor, args) -> dict:
    result = validate_vos(predictor, args.data, split=args.split, max_sequences=args.max_sequences)
    return {**{k: result[k] for k in ("J&F", "J", "F", "num_sequences", "num_objects", "sequences")},
            **predictor.summary()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="DAVIS-layout held-out set")
    parser.add_argument("--split", default="val")
    parser.add_argument("--stm", default=None, help="stm weights, the dense reference (default: the shipped stm)")
    parser.add_argument("--spvos", default=None,
                        help="spvos weights (stm weights: fresh, untrained gates; default: the shipped spvos)")
    parser.add_argument("--budgets", default="0.2,0.35,0.5,0.65,0.8")
    parser.add_argument("--mem-every", type=int, default=5)
    parser.add_argument("--dense-every", type=int, default=None, help="default: the model's")
    parser.add_argument("--max-sequences", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-references", dest="references", action="store_false",
                        help="leave out the stm and spvos-dense rows")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    spvos = load_spvos(args.spvos or shipped_weights("spvos"))  # stm weights: untrained gates, a baseline for the trained ones
    rows = []
    if args.references:
        reference = score(CountingPredictor(load_named_model("stm", args.stm), args.mem_every), args)
        rows.append({"model": "stm", "budget": None, **reference, "saving": 0.0})
        own_dense = score(CountingPredictor(spvos, args.mem_every, dense_every=1), args)
        rows.append({"model": "spvos", "budget": None, **own_dense,
                     "saving": 1.0 - own_dense["realized_gflops"] / reference["realized_gflops"]})
    for budget in (float(b) for b in args.budgets.split(",")):
        row = score(CountingPredictor(spvos, args.mem_every, budget, args.dense_every), args)
        # spvos's dense count of the same frames is stm's (the gates aside, the same network)
        row["saving"] = 1.0 - row["realized_gflops"] / row["dense_gflops"]
        rows.append({"model": "spvos", "budget": budget, **row})
        print(f"budget {budget}: J&F {row['J&F']:.2f}, saving {100 * row['saving']:.1f}%", flush=True)
    lines = ["| model | budget | J&F | J | F | GFLOPs / frame | saved vs stm |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        budget = "dense" if r["budget"] is None else f"{r['budget']:.2f}"
        lines.append(f"| {r['model']} | {budget} | {r['J&F']:.2f} | {r['J']:.2f} | {r['F']:.2f} | "
                     f"{r['realized_gflops'] / r['frames']:.2f} | {100 * r['saving']:.1f}% |")
    print("\n".join(lines))
    result = {"data": str(args.data), "split": args.split, "stm": args.stm, "spvos": args.spvos,
              "mem_every": args.mem_every, "rows": rows}
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
