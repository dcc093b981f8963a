"""J&F of the torch and ort backends side by side on the same synthetic clips (issue 5).

For each model: export an engine folder at the clips' size, run every clip through
``vseg.runtime.run_vos`` with the torch backend (the model) and the ort backend (the engine
folder), score both with the DAVIS J&F and write the difference to JSON. Models and weights are
given as NAME=WEIGHTS (spvos weights may be an stm file: the gates start fresh).

    python benchmarks/backend_parity.py --data data/seed2 --clips 5 \\
        --model lite=vseg/weights/lite.safetensors --model stm=stm.safetensors --json parity.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from vseg.data.datasets import open_dataset
from vseg.export.export_vos import export_engines
from vseg.jsonio import write_json
from vseg.metrics.davis import evaluate_davis
from vseg.models.weights import load_named_model, load_spvos
from vseg.runtime.backends import OrtBackend, TorchBackend
from vseg.runtime.run_vos import run_vos


def load_for(name: str, weights: str) -> torch.nn.Module:
    """Model ``name`` from ``weights``; spvos also from stm weights (fresh gates)."""
    return load_spvos(weights) if name == "spvos" else load_named_model(name, weights)


def score(backend, sequences, root: Path, out: Path, budget: float | None) -> tuple[float, float]:
    """Run every sequence through ``backend``; (J&F, seconds)."""
    start = time.perf_counter()
    for seq in sequences:
        run_vos(root / "videos" / f"{seq.name}.mp4", seq.masks[0], backend, out / seq.name, budget=budget)
    seconds = time.perf_counter() - start
    result = evaluate_davis(out, root / "Annotations" / "480p", sequences=[s.name for s in sequences])
    return float(result["dataset"]["J&F-Mean"]), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a DAVIS-layout synthetic set with videos/")
    parser.add_argument("--split", default="val")
    parser.add_argument("--clips", type=int, default=5)
    parser.add_argument("--model", action="append", required=True, help="NAME=WEIGHTS, repeatable")
    parser.add_argument("--flavor", default="portable", choices=["portable", "custom"])
    parser.add_argument("--objects", type=int, default=5)
    parser.add_argument("--budget", type=float, default=None, help="spvos budget (default: the model's)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sequences = list(open_dataset(args.data, args.split))[:args.clips]
    h, w = Image.open(sequences[0].frames[0]).size[::-1]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for spec in args.model:
            name, weights = spec.split("=", 1)
            model = load_for(name, weights)
            engines = tmp / f"engines-{name}"
            manifest = export_engines(model, engines, flavor=args.flavor, height=-(-h // 16) * 16,
                                      width=-(-w // 16) * 16, objects=args.objects, weights=weights)
            budget = args.budget if name == "spvos" else None
            jf_torch, s_torch = score(TorchBackend(model, "cpu"), sequences, args.data, tmp / f"torch-{name}", budget)
            jf_ort, s_ort = score(OrtBackend(engines), sequences, args.data, tmp / f"ort-{name}", budget)
            rows.append({"model": name, "weights": weights, "flavor": args.flavor, "clips": len(sequences),
                         "size": [h, w], "J&F torch": jf_torch, "J&F ort": jf_ort, "difference": jf_ort - jf_torch,
                         "seconds torch": s_torch, "seconds ort": s_ort, "export parity": manifest["parity"]})
            print(f"{name}: J&F torch {jf_torch:.2f}  ort {jf_ort:.2f}  difference {jf_ort - jf_torch:+.3f}", flush=True)
    write_json(args.json, {"data": str(args.data), "threads": torch.get_num_threads(), "rows": rows})


if __name__ == "__main__":
    main()
