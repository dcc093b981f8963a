"""Trivial VOS baselines on a DAVIS-layout set, to read model J&F against (no network involved):

- ``copy first``: the first frame's mask on every frame (what a model that never tracks scores);
- ``previous ground truth``: frame t-1's annotation as the prediction of frame t (an oracle
  with one frame of lag: how far objects move between frames).

    python benchmarks/vos_baselines.py --data data/seed2 --json vos_baselines.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from vseg.data.datasets import load_sequence, open_dataset
from vseg.jsonio import write_json
from vseg.metrics.davis import score_sequence, summarise_davis

BASELINES = {
    "copy first": lambda masks: np.repeat(masks[:1], len(masks), axis=0),
    "previous ground truth": lambda masks: np.concatenate([masks[:1], masks[:-1]]),
}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    masks = [(seq.name, load_sequence(seq)[1]) for seq in open_dataset(args.data, args.split)]
    result = {"data": str(args.data), "split": args.split, "sequences": len(masks), "baselines": {}}
    for name, predict in BASELINES.items():
        scores = summarise_davis([score_sequence(m, predict(m), seq) for seq, m in masks])["dataset"]
        result["baselines"][name] = scores
        print(f"{name:<22} J&F {scores['J&F-Mean']:6.2f}  J {scores['J-Mean']:6.2f}  F {scores['F-Mean']:6.2f}")
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
