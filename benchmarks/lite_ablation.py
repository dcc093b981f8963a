"""Ablation of lite's distillation parts (issue 3): six runs, the same steps, the same validation set.

Rows, each adding one part to the previous (the first is the student on its own task loss):

    no KD -> feature KD -> + Smooth Block -> + STFF -> + discriminator -> + adaptive LR

Every run starts from the same seed with the same data order and distils from the same frozen
`stm` teacher (``--teacher``, trained beforehand; ``teacher_lr`` 0 so the six teachers are
identical). Each finished row is written to ``--json`` straight away and skipped when the script
runs again, so an interrupted ablation continues where it stopped. Example (CPU):

    python benchmarks/lite_ablation.py --data data/seed1 --val-data data/seed2 \\
        --teacher runs/stm/stm.safetensors --steps 600 --out runs/ablation --json lite_ablation.json

Prints a markdown table (J&F, J, F, training time per row).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from vseg.jsonio import write_json
from vseg.models.weights import load_named_model
from vseg.train import TrainConfig, train_vos, validate_vos

# Row i switches on the first i parts (TrainConfig flags), in this order.
PARTS = [("feature KD", "use_kd"), ("+ Smooth Block", "use_smooth"), ("+ STFF", "use_stff"),
         ("+ discriminator", "use_discriminator"), ("+ adaptive LR", "use_adaptive_lr")]
ROWS = [(name, {flag: j < i for j, (_, flag) in enumerate(PARTS)})
        for i, name in enumerate(["no KD"] + [name for name, _ in PARTS])]


def run_row(name: str, switches: dict, args: argparse.Namespace) -> dict:
    folder = Path(args.out) / name.replace("+ ", "plus-").replace(" ", "-").lower()
    cfg = TrainConfig(model="lite", data=str(args.data), out=str(folder), steps=args.steps, lr=args.lr,
                      batch_size=args.batch_size, clip_len=args.clip_len, crop=tuple(args.crop), seed=args.seed,
                      teacher_weights=str(args.teacher), teacher_lr=0.0, checkpoint_every=max(50, args.steps // 4),
                      freeze_norm_at=args.freeze_norm_at, amp=args.amp, dice_weight=args.dice_weight, progress=args.progress, **switches)
    result = train_vos(cfg)
    scores = validate_vos(load_named_model("lite", result.weights), args.val_data, split=args.val_split,
                          max_sequences=args.val_sequences)
    return {"row": name, "switches": switches, "weights": str(result.weights), "steps": result.steps,
            "wall_seconds": result.wall_seconds, "final_loss": result.final_loss,
            **{k: scores[k] for k in ("J&F", "J", "F", "num_sequences", "num_objects")}}


def markdown(rows: list[dict]) -> str:
    lines = ["| lite | J&F | J | F | training (min) |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['row']} | {r['J&F']:.2f} | {r['J']:.2f} | {r['F']:.2f} | {r['wall_seconds'] / 60:.1f} |"
              for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="training set (DAVIS or YouTube-VOS layout)")
    parser.add_argument("--val-data", type=Path, required=True, help="held-out set scored by every row")
    parser.add_argument("--val-split", default="val")
    parser.add_argument("--val-sequences", type=int, default=None)
    parser.add_argument("--teacher", type=Path, required=True, help="trained stm weights (frozen)")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--clip-len", type=int, default=3)
    parser.add_argument("--crop", type=int, nargs=2, default=(128, 224))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--freeze-norm-at", type=float, default=None,
                        help="recalibrate and freeze BatchNorm at this fraction of the steps")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--dice-weight", type=float, default=0.0, help="soft Dice added to the cross-entropy")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--progress", action="store_true", help="log training progress")
    parser.add_argument("--out", type=Path, default=Path("runs/lite-ablation"))
    parser.add_argument("--json", type=Path, default=Path("lite_ablation.json"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = {"steps": args.steps, "teacher": str(args.teacher), "data": str(args.data),
                "val_data": str(args.val_data), "seed": args.seed, "batch_size": args.batch_size,
                "lr": args.lr, "freeze_norm_at": args.freeze_norm_at, "dice_weight": args.dice_weight}
    done = {}
    if args.json.is_file():  # rows of an earlier run count only if it had the same settings
        earlier = json.loads(args.json.read_text())
        if {k: earlier.get(k) for k in settings} != settings:
            raise SystemExit(f"{args.json} holds rows of other settings; pass another --json")
        done = {r["row"]: r for r in earlier["rows"]}
    rows = []
    for name, switches in ROWS:
        rows.append(done.get(name) or run_row(name, switches, args))
        write_json(args.json, {**settings, "rows": rows})
        print(f"{name}: J&F {rows[-1]['J&F']:.2f}", flush=True)
    print(markdown(rows))
    return rows


if __name__ == "__main__":
    main()
