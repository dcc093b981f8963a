#!/usr/bin/env python3
"""One training cycle of `stm` or `lite` on a lent GPU machine, decided on 100 fresh clips.

    python scripts/gpu_cycle.py --model stm --scale-range 1.7 2.3 --min-side 320
    python scripts/gpu_cycle.py --model lite --teacher runs/gpu/stm/stm.safetensors \
        --scale-range 2.6 3.4 --min-side 480 --lr 2e-4 --steps 4000

Run it in device calls, again and again with the same arguments, until it prints its verdict:
each call does what is left as far as --call-seconds allows (the device tool stops a command at
10 minutes), and training resumes from its newest checkpoint. The stages:

1. data: fresh training clips (--train-seed, default 14: no shipped weights have seen it), a
   choosing set (--choose-seed 13, 100 clips) and the held-out set of the model cards (seed 2,
   30 clips), all 160x288 x 30 frames, written without videos (the device has no PyAV);
2. training, `vseg train` from --init (default: the shipped weights of the model), shipping a
   moving average of the weights (--ema 0.999: on the CPU it scored 0.94 J&F above the same
   run's last weights, BENCHMARKS.md, session 22); lite learns from a frozen --teacher (default:
   the shipped stm), as every shipped lite did; arguments after `--` go to `vseg train` last, so
   they override the ones here;
3. scoring: the starting weights, the new ones and their halfway mix (--mix 0.5: every tensor
   the mean of the two, at the new working size; such a mix of a fine-tune and its start is what
   shipped in session 13) on both sets, each at its own working size;
4. the verdict in OUT/cycle.json: a candidate (new or mix) is better when its mean J&F gain over
   the choosing set's clips is more than twice its standard error (paired by clip: 30-clip sets
   disagreed by 4 points in session 20); the choice is the better one with the larger gain. The
   held-out scores are reported, never chosen on.

Everything lives under --work (default runs/gpu; another cycle needs another folder); OUT (the
device tool's folder, or --out) gets cycle.json (every score, clip by clip), the training log and
the weights. The device tool brings back files of at most 16 MiB, and an stm is 24 MB in float16,
so files above 15 MiB go out in parts (NAME.part00, NAME.part01, ...), listed with their SHA-256
in cycle.json; put them together where the tool left them with

    python scripts/gpu_cycle.py join FILES_AT DEST

Bad arguments are one error line and exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vseg.errors import VsegError  # noqa: E402

HELD_OUT_SEED, HELD_OUT_CLIPS = 2, 30  # the model cards' held-out set
PART_BYTES = 15 * 2**20  # the device tool brings back files of at most 16 MiB


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=("stm", "lite"), required=True)
    p.add_argument("--init", help="weights to start from (default: the shipped ones; 'none': random)")
    p.add_argument("--teacher", help="lite: the frozen teacher (default: the shipped stm)")
    p.add_argument("--steps", type=int, default=12000)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--scale-range", type=float, nargs=2, metavar=("LOW", "HIGH"))
    p.add_argument("--min-side", type=int, help="working size recorded in the new weights")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--ema", type=float, default=0.999,
                   help="ship a moving average of the weights with this decay (0: the last step's)")
    p.add_argument("--mix", type=float, default=0.5,
                   help="also score this mix of the start and the new weights (0 start, 1 new; 0: no mix)")
    p.add_argument("--train-seed", type=int, default=14)
    p.add_argument("--train-clips", type=int, default=4000)
    p.add_argument("--choose-seed", type=int, default=13)
    p.add_argument("--choose-clips", type=int, default=100)
    p.add_argument("--held-out-clips", type=int, default=HELD_OUT_CLIPS, help="fewer only to test this script")
    p.add_argument("--frames", type=int, default=30, help="frames per clip (fewer only to test this script)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--call-seconds", type=float, default=540.0)
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "gpu")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ROOT / "runs" / "gpu-out")))
    args = p.parse_args(argv)
    if args.model == "stm" and args.teacher:
        p.error("--teacher is for lite")
    for name in ("init", "teacher"):
        value = getattr(args, name)
        if value and value != "none" and not Path(value).is_file():
            p.error(f"--{name} {value}: no such file")
    if min(args.steps, args.batch_size, args.train_clips, args.choose_clips, args.held_out_clips, args.frames) < 1:
        p.error("steps, batch size, clip counts and frames must be >= 1")
    if not 0 <= args.mix < 1:
        p.error(f"--mix must be in [0, 1) (0: no mix), got {args.mix:g}")
    if not 0 <= args.ema < 1:
        p.error(f"--ema must be in [0, 1) (0: off), got {args.ema:g}")
    return args, extra


class Clock:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def make_data(args: argparse.Namespace) -> dict[str, Path]:
    """Generate the three sets that are missing; returns {'train', 'choose', 'held-out'} -> folder."""
    sets = {"train": (args.train_seed, args.train_clips, 0.005),
            "choose": (args.choose_seed, args.choose_clips, 1.0),
            "held-out": (HELD_OUT_SEED, args.held_out_clips, 1.0)}
    folders = {}
    for name, (seed, clips, val_fraction) in sets.items():
        folder = args.work / "data" / f"seed{seed}-{clips}x{args.frames}"
        if not (folder / "synth_vos.json").exists():
            run([sys.executable, "-m", "vseg", "data", "synth-vos", "--out", str(folder), "--clips", str(clips),
                 "--seed", str(seed), "--frames", str(args.frames), "--height", "160", "--width", "288",
                 "--val-fraction", str(val_fraction), "--no-videos", "--workers", str(os.cpu_count() or 1)],
                f"generating the {name} clips")
        folders[name] = folder
    return folders


def train_command(args: argparse.Namespace, extra: list[str], data: Path, run_dir: Path) -> list[str]:
    cmd = [sys.executable, "-m", "vseg", "train", "--model", args.model, "--data", str(data),
           "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
           "--seed", str(args.seed), "--amp", "--dice-weight", "1.0", "--freeze-norm-at", "0.8",
           "--workers", str(args.workers), "--checkpoint-every", "250",
           "--run-dir", str(run_dir), "--out", str(run_dir / f"{args.model}.safetensors"),
           "--json", str(run_dir / "train.json")]
    start = start_weights(args)
    if start:
        cmd += ["--init-weights", str(start)]
    if args.model == "lite":
        cmd += ["--teacher", str(args.teacher or shipped("stm")), "--teacher-lr", "0", "--no-adaptive-lr"]
    if args.scale_range:
        cmd += ["--scale-range", *map(str, args.scale_range)]
    if args.min_side is not None:
        cmd += ["--min-side", str(args.min_side)]
    if args.ema > 0:
        cmd += ["--ema", str(args.ema)]
    return cmd + extra


def shipped(name: str) -> Path:
    from vseg.models.weights import shipped_weights

    return Path(shipped_weights(name))


def start_weights(args: argparse.Namespace) -> Path | None:
    if args.init == "none":
        return None
    return Path(args.init) if args.init else shipped(args.model)


def run(cmd: list[str], label: str, timeout: float | None = None, log: Path | None = None) -> bool:
    """Run ``cmd``, its output echoed (and appended to ``log``); False when ``timeout`` seconds
    ran out first (the child is killed: training checkpoints are written atomically, so the next
    call resumes from the newest). A failure is one error line and exit 1."""
    print("+", " ".join(cmd), flush=True)
    # Its own process group, so that stopping it also stops its data-loading workers (they hold
    # the output pipe open).
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
                            start_new_session=True)
    stopped = threading.Event()

    def stop() -> None:
        stopped.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(max(0.0, timeout), stop) if timeout is not None else None
    if timer:
        timer.start()
    with open(log, "a") if log else contextlib.nullcontext() as sink:
        for line in proc.stdout:
            sys.stdout.write(line)
            if sink:
                sink.write(line)
    rc = proc.wait()
    if timer:
        timer.cancel()
    if stopped.is_set():
        return False
    if rc != 0:
        raise SystemExit(f"error: {label} failed with exit status {rc}")
    return True


def score(weights: Path, data: Path, cache: Path) -> dict:
    """validate_vos of ``weights`` on ``data`` at their working size, cached in ``cache``."""
    if cache.exists():
        return json.loads(cache.read_text())
    import torch

    from vseg.jsonio import write_json
    from vseg.models.weights import load_model
    from vseg.train import validate_vos

    model = load_model(weights).float().eval().to("cuda" if torch.cuda.is_available() else "cpu")
    began = time.time()
    s = validate_vos(model, data, split="val")
    result = {"weights": str(weights), "data": str(data), "J&F": s["J&F"], "J": s["J"], "F": s["F"],
              "sequences": s["sequences"], "seconds": round(time.time() - began, 1)}
    write_json(cache, result)
    print(f"{weights.name} on {data.name}: J&F {s['J&F']:.2f}", flush=True)
    return result


def paired_gain(new: dict, old: dict) -> dict:
    """Mean J&F gain of ``new`` over ``old`` across the clips both scored, with its standard error."""
    names = sorted(set(new["sequences"]) & set(old["sequences"]))
    gains = [new["sequences"][n] - old["sequences"][n] for n in names]
    mean = sum(gains) / len(gains)
    var = sum((g - mean) ** 2 for g in gains) / (len(gains) - 1) if len(gains) > 1 else math.inf
    return {"clips": len(gains), "mean": mean, "stderr": math.sqrt(var / len(gains))}


def verdict(scores: dict[str, dict]) -> dict:
    """The cycle's summary from its scores ('start|new|mix' x 'choose|held-out'): each candidate's
    paired gain over the start on the choosing set, whether one is better (gain above twice its
    standard error), and which (the larger gain)."""
    figures = {k: round(v["J&F"], 2) for k, v in scores.items()}
    if "start/choose" not in scores:
        return {"scores": figures, "better": None, "choice": None}
    gains = {who: paired_gain(scores[f"{who}/choose"], scores["start/choose"])
             for who in ("new", "mix") if f"{who}/choose" in scores}
    passed = [who for who, g in gains.items() if g["mean"] > 2 * g["stderr"]]
    choice = max(passed, key=lambda who: gains[who]["mean"]) if passed else None
    return {"scores": figures, "choose_gains": {who: {k: round(v, 3) for k, v in g.items()} for who, g in gains.items()},
            "better": choice is not None, "choice": choice}


def make_mix(start: Path, new: Path, t: float, path: Path) -> Path:
    """The float16 mix ``(1 - t) * start + t * new`` at the new weights' working size, once."""
    if not path.exists():
        from vseg.models.registry import load_model, save_model
        from vseg.models.weights import interpolate_weights

        min_side = getattr(load_model(new).config, "min_side", None)
        save_model(interpolate_weights(start, new, t, min_side=min_side).half(), path)
    return path


def send_back(paths: list[Path], out: Path) -> dict:
    """Copy ``paths`` into ``out``, those above PART_BYTES in parts; returns the parts of each
    file split, with its SHA-256, for :func:`join`."""
    split = {}
    for path in paths:
        data = path.read_bytes()
        if len(data) <= PART_BYTES:
            shutil.copy(path, out / path.name)
            continue
        parts = []
        for i in range(0, len(data), PART_BYTES):
            parts.append(f"{path.name}.part{i // PART_BYTES:02d}")
            (out / parts[-1]).write_bytes(data[i:i + PART_BYTES])
        split[path.name] = {"parts": parts, "sha256": hashlib.sha256(data).hexdigest()}
    return split


def join(folder: Path, dest: Path) -> list[Path]:
    """Put the files a cycle sent back in parts (``folder``/cycle.json's "parts") together in ``dest``."""
    listing = folder / "cycle.json"
    if not listing.is_file():
        raise VsegError(f"{folder}: no cycle.json (give the folder the device tool brought a cycle's files to)")
    dest.mkdir(parents=True, exist_ok=True)
    joined = []
    for name, entry in json.loads(listing.read_text()).get("parts", {}).items():
        missing = [p for p in entry["parts"] if not (folder / p).is_file()]
        if missing:
            raise VsegError(f"{folder}: {name} lacks its part(s) {', '.join(missing)}")
        data = b"".join((folder / p).read_bytes() for p in entry["parts"])
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise VsegError(f"{folder}: the parts of {name} do not give the file that was sent (SHA-256 differs)")
        (dest / name).write_bytes(data)
        joined.append(dest / name)
    return joined


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["join"]:
            return join_command(argv[1:])
        args, extra = parse_args(argv)
        return cycle(args, extra)
    except VsegError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def join_command(argv: list[str]) -> int:
    """``gpu_cycle.py join FILES_AT DEST``: :func:`join`, each file written named on a line."""
    if len(argv) != 2:
        raise VsegError("usage: gpu_cycle.py join FILES_AT DEST")
    try:
        for path in join(Path(argv[0]), Path(argv[1])):
            print(f"wrote {path}")
    except OSError as error:  # a destination it cannot write
        raise VsegError(str(error)) from None
    return 0


def cycle(args: argparse.Namespace, extra: list[str]) -> int:
    clock = Clock(args.call_seconds)
    run_dir = args.work / args.model
    run_dir.mkdir(parents=True, exist_ok=True)
    data = make_data(args)
    new = run_dir / f"{args.model}.safetensors"
    command = train_command(args, extra, data["train"], run_dir)
    started = run_dir / "command.json"
    if started.exists() and json.loads(started.read_text()) != command[1:]:
        raise VsegError(f"{run_dir} holds a cycle started with other arguments ({started}): "
                        f"finish it with those, or give this one another --work")
    started.write_text(json.dumps(command[1:]))
    if not new.exists():
        resume = ["--resume", str(run_dir)] if any((run_dir / "checkpoints").glob("step_*")) else []
        if not run(command + resume, "vseg train", timeout=clock.left() - 15, log=run_dir / "train.log"):
            print("time is up for this call: run it again with the same arguments to resume", flush=True)
            return 0
    start = start_weights(args)
    mix = make_mix(start, new, args.mix, run_dir / f"{args.model}-mix.safetensors") if start and args.mix else None
    scores = {}
    for who, weights in (("start", start), ("new", new), ("mix", mix)):
        for which in ("choose", "held-out") if weights else ():
            cache = run_dir / "scores" / f"{who}-{which}.json"
            if not cache.exists() and clock.left() < 60:
                print("time is up for this call: run it again with the same arguments to score the rest", flush=True)
                return 0
            scores[f"{who}/{which}"] = score(weights, data[which], cache)
    from vseg.jsonio import write_json

    summary = {"model": args.model, "train_command": " ".join(["vseg", *command[3:]]),
               "mix": {"t": args.mix, "weights": mix.name} if mix else None, **verdict(scores)}
    args.out.mkdir(parents=True, exist_ok=True)
    sent = [p for p in (new, mix, run_dir / "train.log", run_dir / "train.json") if p and p.exists()]
    summary["parts"] = send_back(sent, args.out)
    summary["clip_scores"] = scores  # cycle.json carries every score: the tool brings back 8 files at most
    write_json(args.out / "cycle.json", summary)
    print(json.dumps({k: summary.get(k) for k in ("scores", "choose_gains", "better", "choice")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
