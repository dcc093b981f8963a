"""`vseg profile` for stm, lite and spvos on the torch and ort backends, side by side in one run.

Each model is built at its default size with random weights (speed does not depend on the
weights; spvos's realized GFLOPs do, through its untrained gates, so read those as a check of
the accounting, not as the trained model's savings), exported to an engine folder at the
benchmark size (``vseg.export.export_engines``), then profiled on the same synthetic clip by
both backends (:func:`vseg.runtime.profile.profile_vos`). The ort engines use the ``portable``
flavour by default: the ``custom`` flavour's vseg ops run as Python kernels in onnxruntime,
which is for parity checks, not for speed.

    python benchmarks/profile_backends.py --json profile_backends.json            # 240x432
    python benchmarks/profile_backends.py --height 480 --width 864 --json big.json
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from vseg.export.export_vos import export_engines
from vseg.jsonio import write_json
from vseg.models.registry import build_model, count_parameters
from vseg.runtime.backends import OrtBackend, TorchBackend
from vseg.runtime.profile import profile_vos


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="stm,lite,spvos", help="comma-separated model names")
    parser.add_argument("--height", type=int, default=240, help="frame height (multiple of 16; 480 for DAVIS)")
    parser.add_argument("--width", type=int, default=432, help="frame width (multiple of 16; 864 for DAVIS)")
    parser.add_argument("--objects", type=int, default=2, help="objects tracked (and object slots of the engines)")
    parser.add_argument("--frames", type=int, default=30, help="frames measured per pass")
    parser.add_argument("--warmup", type=int, default=3, help="frames run before measuring")
    parser.add_argument("--flavor", default="portable", choices=("portable", "custom"), help="ort engine flavour")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = []
    with tempfile.TemporaryDirectory(prefix="vseg-bench-") as tmp:
        for name in [n for n in args.models.split(",") if n]:
            torch.manual_seed(0)
            model = build_model(name).eval()
            engines = Path(tmp) / name
            export_engines(model, engines, flavor=args.flavor, height=args.height, width=args.width,
                           objects=args.objects, parity_frames=2)
            for backend in (TorchBackend(model, device), OrtBackend(engines)):
                with backend:
                    result = profile_vos(backend, frames=args.frames, warmup=args.warmup, height=args.height,
                                         width=args.width, max_objects=args.objects)
                described = result["backend"]
                rows.append({"model": name, "backend": backend.name, "providers": described["providers"],
                             "device": described["device"], "parameters": count_parameters(model),
                             **{k: v for k, v in result.items() if k not in ("per_frame", "backend")}})
                print_row(rows[-1])
    payload = {"height": args.height, "width": args.width, "objects": args.objects, "frames": args.frames,
               "warmup": args.warmup, "flavor": args.flavor, "torch_threads": torch.get_num_threads(),
               "weights": "random init", "rows": rows}
    if args.json:
        write_json(args.json, payload)
        print(f"wrote {args.json}")
    return payload


def print_row(r: dict) -> None:
    lat, key = r["latency_ms"], r["keyframe_latency_ms"]
    engines = " ".join(f"{e}={t['mean_ms']:.1f}" for e, t in r["engine_ms"].items() if t["calls"])
    print(f"{r['model']:6} {r['backend']:5} fps {r['fps_end_to_end']:6.2f} e2e {r['fps_without_decoding']:6.2f} "
          f"no-decode | p50 {lat['p50']:7.1f} p90 {lat['p90']:7.1f} p99 {lat['p99']:7.1f} ms | "
          f"keyframe p50 {key['p50']:7.1f} ms | GFLOPs/frame {r['gflops']['dense_per_frame']:.2f} dense "
          f"{r['gflops']['realized_per_frame']:.2f} realized | RSS {r['memory']['peak_rss_mib']:.0f} MiB | "
          f"ms/call {engines}", flush=True)


if __name__ == "__main__":
    main()
