"""`vseg doctor`: what this machine can run.

Each check returns a row (name, ok, detail). Optional pieces (CUDA, TensorRT, the plugin
library) are reported as missing, not as failures: a CPU machine is a valid place to train,
export and run with onnxruntime. ``required`` marks what every vseg command needs.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    required: bool = False


def _torch() -> list[Check]:
    try:
        import torch
    except Exception as e:  # a broken install is exactly what doctor is for
        return [Check("torch", False, f"not importable: {e}", required=True)]
    rows = [Check("torch", True, f"{torch.__version__} ({os.cpu_count()} CPU threads available, "
                  f"{torch.get_num_threads()} used)", required=True)]
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        rows.append(Check("torch CUDA", True, f"CUDA {torch.version.cuda}: " + ", ".join(names)))
    else:
        built = torch.version.cuda or "none"
        rows.append(Check("torch CUDA", False, f"no CUDA device (torch built for CUDA: {built})"))
    return rows


def _onnx() -> list[Check]:
    rows = []
    for mod, required in (("onnx", True), ("onnxscript", True)):
        try:
            m = importlib.import_module(mod)
            rows.append(Check(mod, True, m.__version__, required))
        except Exception as e:
            rows.append(Check(mod, False, f"not importable: {e}", required))
    try:
        import onnxruntime as ort
        rows.append(Check("onnxruntime", True,
                          f"{ort.__version__}; providers: {', '.join(ort.get_available_providers())}", True))
    except Exception as e:
        rows.append(Check("onnxruntime", False, f"not importable: {e}", True))
    try:
        import onnxruntime_extensions as ortx
        rows.append(Check("onnxruntime-extensions", True,
                          f"{ortx.__version__} (runs the custom-flavour graphs on the CPU)"))
    except Exception:
        rows.append(Check("onnxruntime-extensions", False, "missing: pip install -e '.[dev]'"))
    return rows


def _pyav() -> list[Check]:
    try:
        import av
    except Exception as e:
        return [Check("PyAV", False, f"not importable: {e}", required=True)]
    ffmpeg = ".".join(str(v) for v in av.library_versions.get("libavcodec", ()))
    rows = [Check("PyAV", True, f"{av.__version__} (libavcodec {ffmpeg})", required=True)]
    codecs = av.codecs_available
    for codec, role in (("h264", "H.264 decoding with motion vectors"), ("libx264", "H.264 encoding (transcode, synthetic data)")):
        rows.append(Check(f"codec {codec}", codec in codecs, role if codec in codecs else f"missing: {role} unavailable",
                          required=True))
    return rows


def _cuda_python() -> Check:
    try:
        import cuda.bindings
        from cuda.bindings import runtime  # noqa: F401
        return Check("cuda-python", True, getattr(cuda.bindings, "__version__", "cuda.bindings importable"))
    except Exception:
        return Check("cuda-python", False, "missing (needed by the trt backend): pip install -e '.[trt]'")


def _tensorrt() -> Check:
    try:
        import tensorrt as trt
        return Check("TensorRT", True, trt.__version__)
    except Exception:
        return Check("TensorRT", False, "not installed (needed by `vseg build` and the trt backend)")


def find_library(name: str, env_var: str) -> Path | None:
    """Where a library of ours is: $env_var, else plugins/build*/ in the source tree."""
    explicit = os.environ.get(env_var)
    if explicit:
        return Path(explicit) if Path(explicit).is_file() else None
    for build in sorted(REPO_ROOT.glob("plugins/build*")):
        for hit in sorted(build.rglob(name)):
            return hit
    return None


def _library(name: str, env_var: str, what: str) -> Check:
    path = find_library(name, env_var)
    if path is None:
        return Check(name, False, f"not found (set {env_var} or build with plugins/build.sh): {what}")
    import ctypes
    try:
        ctypes.CDLL(str(path))
        return Check(name, True, f"loads from {path}")
    except OSError as e:
        return Check(name, False, f"found at {path} but does not load: {e}")


def run_checks() -> list[Check]:
    rows = _torch() + _onnx() + _pyav()
    rows.append(_cuda_python())
    rows.append(_tensorrt())
    rows.append(_library("libvseg_kernels.so", "VSEG_KERNELS_LIB", "CUDA kernels for tests and benchmarks"))
    rows.append(_library("libvseg_plugins.so", "VSEG_PLUGINS_LIB", "TensorRT plugins for the trt backend"))
    return rows


def as_json(rows: list[Check]) -> dict:
    return {"checks": [asdict(r) for r in rows], "ok": all(r.ok for r in rows if r.required)}
