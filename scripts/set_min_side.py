#!/usr/bin/env python3
"""Record a working size in a weights file: the config's min_side, every tensor unchanged.

    python scripts/set_min_side.py WEIGHTS.safetensors --min-side 320 --out OUT.safetensors [--fp16]

For weights trained at twice the scale (`vseg train --scale-range 1.7 2.3`) before `vseg train
--min-side` wrote it: the inference core then runs frames whose shorter side is below 320 scaled
up to it (vseg/runtime/framing.py). A wrong file is one error line and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vseg.errors import VsegError  # noqa: E402
from vseg.models.registry import model_name, save_model  # noqa: E402
from vseg.models.weights import with_min_side  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("weights", type=Path)
    parser.add_argument("--min-side", type=int, required=True, help="shorter side frames are scaled up to (0: none)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--fp16", action="store_true", help="store float16 tensors, as the shipped weights do")
    args = parser.parse_args(argv)
    try:
        model = with_min_side(args.weights, args.min_side)
        save_model(model.half() if args.fp16 else model, args.out)
    except VsegError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {model_name(model)} of {args.weights} with min_side {args.min_side}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
