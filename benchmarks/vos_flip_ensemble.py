"""Test-time flip augmentation: the runtime's ``--flip`` against the plain run, with and
without its two memories sharing the average.

Variants, each scored with ``validate_vos`` (the runtime's defaults otherwise) on one set:

- ``plain``: one inference core;
- ``separate``: the runtime's :class:`~vseg.runtime.mirrored.MirroredCore` (``vseg run --flip``):
  a second core on the frames and first mask mirrored left to right, every frame's
  probabilities averaged (the mirrored ones mirrored back); each core writes its own masks;
- ``shared``: the same with ``share_memory=True``: both memories write the average (Cutie's
  ``flip_aug``).

Each row after the first gets its mean per-clip gain over the first row, with its standard error.

    python benchmarks/vos_flip_ensemble.py --model stm --data data/seed10 --json flip.json
"""

from __future__ import annotations

import sys

from vos_probe import core_predictor, probe_parser, run_probe

from vseg.runtime.mirrored import MirroredCore

VARIANTS = ("plain", "separate", "shared")


def predictor(model, variant: str):
    """The model itself (plain) or a predictor running a MirroredCore per clip."""
    if variant == "plain":
        return model
    return core_predictor(lambda: MirroredCore(model, share_memory=variant == "shared"))


def main(argv: list[str] | None = None) -> int:
    parser = probe_parser(__doc__, "flip_ensemble.json")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {', '.join(VARIANTS)}")
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        print(f"error: --variants takes {', '.join(VARIANTS)}, got {args.variants!r}", file=sys.stderr)
        return 2
    return run_probe(args, [({"variant": v}, lambda model, v=v: predictor(model, v)) for v in variants])


if __name__ == "__main__":
    sys.exit(main())
