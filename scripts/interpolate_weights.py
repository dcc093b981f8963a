#!/usr/bin/env python3
"""Interpolate two weight files of one model: every float tensor (1 - t) * START + t * END.

    python scripts/interpolate_weights.py START.safetensors END.safetensors --t 0.5 --out MIX.safetensors \
        [--fp16] [--min-side N]

How the shipped stm was made from the weights it was fine-tuned from and a fine-tuned run (see
vseg/weights/stm.md). --min-side gives the mix a working size where the two files' differ (a
fine-tune at another scale than its start). A wrong file or weight is one error line and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vseg.errors import VsegError  # noqa: E402
from vseg.models.registry import model_name, save_model  # noqa: E402
from vseg.models.weights import interpolate_weights  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("start", type=Path)
    parser.add_argument("end", type=Path)
    parser.add_argument("--t", type=float, required=True, help="0 gives START, 1 gives END")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--fp16", action="store_true", help="store float16 tensors, as the shipped weights do")
    parser.add_argument("--min-side", type=int, help="the mix's working size (default: both files must agree)")
    args = parser.parse_args(argv)
    try:
        model = interpolate_weights(args.start, args.end, args.t, min_side=args.min_side)
        save_model(model.half() if args.fp16 else model, args.out)
    except VsegError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {model_name(model)}, {1 - args.t:g} x {args.start} + {args.t:g} x {args.end}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
