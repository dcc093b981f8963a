"""AR-Seg accuracy on a held-out VSS set: full resolution on every frame, the low-resolution
network alone, and AR-Seg (keyframes at full resolution, CReFF on the others), overall and by
distance from the keyframe, with GFLOPs per frame.

Keyframes are the videos' I-frames (GOP 12 for ``vseg data synth-vss``) unless
``--keyframe-interval`` is given. Example (the figures of BENCHMARKS.md):

    vseg data synth-vss --out data/vss360-heldout --clips 8 --seed 1 --val-fraction 0
    python benchmarks/arseg_accuracy.py --data data/vss360-heldout --split train \\
        --lr-alone runs/arseg/arseg-lr-alone.safetensors --json arseg_accuracy.json

``--weights`` defaults to the shipped ``arseg`` weights; without ``--lr-alone`` the "LR alone"
row is the model's own LR branch without CReFF.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from vseg.jsonio import write_json
from vseg.models.weights import load_named_model
from vseg.train.arseg_eval import evaluate_arseg, format_arseg_table


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="CamVid-layout root (vseg data synth-vss)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--weights", default=None, help="arseg weights (default: the shipped ones)")
    parser.add_argument("--lr-alone", default=None, help="weights whose LR branch is the LR network alone")
    parser.add_argument("--lr-scale", type=float, default=None)
    parser.add_argument("--keyframe-interval", type=int, default=None)
    parser.add_argument("--max-clips", type=int, default=None)
    parser.add_argument("--cache-dir", default=None, help="motion-vector cache (default: none kept)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_named_model("arseg", args.weights)
    lr_alone = load_named_model("arseg", args.lr_alone) if args.lr_alone else None
    result = evaluate_arseg(model, args.data, args.split, lr_alone=lr_alone, lr_scale=args.lr_scale,
                            keyframe_interval=args.keyframe_interval, max_clips=args.max_clips,
                            cache_dir=args.cache_dir,
                            on_clip=lambda done, total, name: print(f"{done}/{total} {name}", flush=True))
    result["weights"] = args.weights or "shipped arseg"
    result["lr_alone_weights"] = args.lr_alone
    print(format_arseg_table(result))
    if args.json:
        write_json(Path(args.json), result)
    return result


if __name__ == "__main__":
    main()
