"""Probe: move the decision threshold between background and objects at inference.

Most of the shipped models' wrong pixels are target pixels called background (BENCHMARKS.md,
sessions 16 and 18), so this subtracts ``B`` from the background logit of every decoded frame
(B > 0 calls more pixels object, B < 0 fewer) before the softmax; the changed masks also go
into memory. It patches :meth:`InferenceCore._decode` for the process and scores each offset
with the runtime's defaults (``validate_vos``); 0 is the runtime.

    python benchmarks/vos_background_offset.py --model stm --data data/seed10 --offsets 0.5,-0.5 --json offsets.json
"""

from __future__ import annotations

import sys

import torch
from vos_probe import probe_parser, scored_row

from vseg.errors import VsegError
from vseg.jsonio import write_json
from vseg.models.weights import load_named_model
from vseg.runtime.inference_core import InferenceCore

_decode = InferenceCore._decode


def with_background_offset(offset: float):
    """An InferenceCore._decode whose logits have ``offset`` taken off the background channel."""
    def decode(self, key_out, plan, state):
        outputs = dict(_decode(self, key_out, plan, state))
        logits = outputs["logits"].clone()
        logits[:, 0] -= offset
        outputs["logits"] = logits
        return outputs
    return decode


def main(argv: list[str] | None = None) -> int:
    parser = probe_parser(__doc__, "background_offset.json")
    parser.add_argument("--offsets", default="0.5,-0.5", help="comma-separated B values (0: the runtime)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    try:
        model = load_named_model(args.model, args.weights)
        for offset in (float(v) for v in args.offsets.split(",")):
            InferenceCore._decode = with_background_offset(offset)
            rows.append(scored_row(model, args.data, args.max_clips, offset=offset))
    except VsegError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        InferenceCore._decode = _decode
    write_json(args.json, {"model": args.model, "weights": args.weights or "shipped", "data": args.data, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
