"""Probe: move the decision threshold between background and objects at inference.

Most of the shipped models' wrong pixels are target pixels called background (BENCHMARKS.md,
sessions 16 and 18), so this subtracts ``B`` from the background logit of every decoded frame
(B > 0 calls more pixels object, B < 0 fewer) before the softmax; the changed masks also go
into memory. It runs an inference core whose decode does that and scores each offset
with the runtime's defaults (``validate_vos``); 0 is the runtime.

    python benchmarks/vos_background_offset.py --model stm --data data/seed10 --offsets 0.5,-0.5 --json offsets.json
"""

from __future__ import annotations

import sys

from vos_probe import core_predictor, probe_parser, run_probe

from vseg.runtime.inference_core import InferenceCore


class OffsetCore(InferenceCore):
    """An inference core whose decoded logits have ``offset`` taken off the background channel."""

    def __init__(self, model, offset: float) -> None:
        super().__init__(model)
        self.offset = offset

    def _decode(self, key_out, plan, state):
        outputs = dict(super()._decode(key_out, plan, state))
        logits = outputs["logits"].clone()
        logits[:, 0] -= self.offset
        outputs["logits"] = logits
        return outputs


def main(argv: list[str] | None = None) -> int:
    parser = probe_parser(__doc__, "background_offset.json")
    parser.add_argument("--offsets", default="0.5,-0.5", help="comma-separated B values (0: the runtime)")
    args = parser.parse_args(argv)
    offsets = [float(v) for v in args.offsets.split(",")]
    return run_probe(args, [({"offset": b}, lambda model, b=b: core_predictor(lambda: OffsetCore(model, b)))
                            for b in offsets])


if __name__ == "__main__":
    sys.exit(main())
