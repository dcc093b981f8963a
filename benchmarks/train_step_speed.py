"""Seconds per VOS training step, float32 against bfloat16 autocast (``TrainConfig.amp``), side by side.

Both variants train the same model from the same initial weights on the same real clips (drawn
once from a synthetic dataset, or generated here when no --data is given); their steps alternate
(A B A B ...) so that machine noise hits both alike, and the medians are compared. Writes JSON.

    python benchmarks/train_step_speed.py --data /tmp/vseg-train/data-seed1 --models stm,lite \
        --batch-size 4 --steps 8 --threads 2 --json bench-train-step.json

On a CPU, bfloat16 pays off only with native support (AVX512-BF16 or AMX); the JSON records
what ``torch.backends.cpu.get_cpu_capability()`` reports.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from vseg.train.config import TrainConfig
from vseg.train.trainer import VOSTrainer
from vseg.train.vos_data import VOSClipDataset


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=None, help="DAVIS-layout dataset (default: 8 synthetic clips)")
    p.add_argument("--models", default="stm,lite", help="comma-separated: stm, lite (lite trains its teacher jointly)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--crop", type=int, nargs=2, default=(128, 224))
    p.add_argument("--steps", type=int, default=8, help="timed steps per variant (after 2 warm-up steps)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=Path("bench-train-step.json"))
    return p.parse_args()


def make_batches(data: Path, args: argparse.Namespace, count: int) -> list[dict]:
    dataset = VOSClipDataset(data, "train", clip_len=3, max_skip=5, max_objects=2, crop=tuple(args.crop), seed=0)
    batches = iter(DataLoader(dataset, batch_size=args.batch_size))
    return [next(batches) for _ in range(count)]


def time_model(model: str, data: Path, batches: list[dict], args: argparse.Namespace) -> dict:
    trainers = {}
    for amp in (False, True):
        torch.manual_seed(0)  # same initial weights for both variants
        cfg = TrainConfig(model=model, data=str(data), batch_size=args.batch_size, crop=tuple(args.crop),
                          lr=1e-3, dice_weight=1.0, amp=amp, steps=1000)  # default warm-up: as in training
        trainers["bf16" if amp else "fp32"] = VOSTrainer(cfg, torch.device("cpu"))
    times: dict[str, list[float]] = {name: [] for name in trainers}
    losses: dict[str, list[float]] = {name: [] for name in trainers}
    for i, batch in enumerate(batches):
        for name, trainer in trainers.items():
            tick = time.perf_counter()
            stats = trainer.train_step(batch, i)
            if i >= 2:  # warm-up: oneDNN picks and caches its kernels on the first calls
                times[name].append(time.perf_counter() - tick)
            losses[name].append(round(stats["loss"], 4))
    median = {name: statistics.median(t) for name, t in times.items()}
    return {"seconds_per_step": {k: round(v, 4) for k, v in median.items()},
            "all_seconds": {k: [round(x, 4) for x in v] for k, v in times.items()},
            "losses": losses, "bf16_speedup": round(median["fp32"] / median["bf16"], 3)}


def native_bf16_flags() -> list[str]:
    """The CPU's bfloat16 instruction-set flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    return sorted(f for f in flags.split() if "bf16" in f)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            from vseg.data.synth_vos import generate_vos

            data = Path(tmp) / "synth"
            generate_vos(data, clips=8, seed=11, frames=12, height=160, width=288, val_fraction=0.0, videos=False)
        batches = make_batches(data, args, args.steps + 2)
        results = {m: time_model(m, data, batches, args) for m in args.models.split(",")}
    report = {"machine": platform.processor() or platform.machine(), "threads": args.threads,
              "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "cpu_bf16_flags": native_bf16_flags(), "torch": torch.__version__,
              "batch_size": args.batch_size, "crop": list(args.crop), "clip_len": 3, "objects": 2,
              "results": results}
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    for m, r in results.items():
        s = r["seconds_per_step"]
        print(f"{m}: fp32 {s['fp32']:.3f} s/step, bf16 autocast {s['bf16']:.3f} s/step -> x{r['bf16_speedup']:.2f}")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
