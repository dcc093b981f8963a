"""Probe: move the decision threshold between background and objects at inference.

Most of the shipped models' wrong pixels are target pixels called background (BENCHMARKS.md,
sessions 16 and 18), so this subtracts ``B`` from the background logit of every decoded frame
(B > 0 calls more pixels object, B < 0 fewer) before the softmax; the changed masks also go
into memory. It patches :meth:`InferenceCore._decode` for the process and scores each offset
with the runtime's defaults (``validate_vos``); 0 is the runtime.

    python benchmarks/vos_background_offset.py --model stm --data data/seed10 --offsets 0.5,-0.5 --json offsets.json
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from vseg.errors import VsegError
from vseg.jsonio import write_json
from vseg.models.weights import load_named_model
from vseg.runtime.inference_core import InferenceCore
from vseg.train import validate_vos

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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="stm")
    parser.add_argument("--weights", default=None, help="default: the shipped weights")
    parser.add_argument("--data", required=True)
    parser.add_argument("--offsets", default="0.5,-0.5", help="comma-separated B values (0: the runtime)")
    parser.add_argument("--max-clips", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default="background_offset.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    try:
        model = load_named_model(args.model, args.weights)
        for offset in (float(v) for v in args.offsets.split(",")):
            InferenceCore._decode = with_background_offset(offset)
            start = time.perf_counter()
            score = validate_vos(model, args.data, max_sequences=args.max_clips)
            rows.append({"offset": offset, "J&F": round(score["J&F"], 2), "J": round(score["J"], 2),
                         "F": round(score["F"], 2), "minutes": round((time.perf_counter() - start) / 60, 1),
                         "sequences": score["sequences"]})
            print({k: v for k, v in rows[-1].items() if k != "sequences"}, flush=True)
    except VsegError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        InferenceCore._decode = _decode
    write_json(args.json, {"model": args.model, "weights": args.weights or "shipped", "data": args.data, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
