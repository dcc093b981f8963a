"""``vseg build``: TensorRT engines (plans) from an engine folder's ONNX graphs, with our plugins.

For every graph the folder's ``manifest.json`` lists, TensorRT's ONNX parser reads the graph
(custom-op nodes find their creators in ``libvseg_plugins.so``, loaded first), the builder
builds a plan for this GPU, and the plan is written to ``<folder>/trt/<engine>.plan``. One
timing cache (``trt/timing.cache``) is read before and written after, so rebuilding the same
graphs, or the other graphs of the folder, skips the kernel timings already done. The manifest
gains a ``"tensorrt"`` section (TensorRT version, precision, plugin library, device, plans with
their sha256) that the ``trt`` backend (:mod:`vseg.runtime.trt_backend`) checks.

TensorRT cannot be installed on the machines vseg is developed on, so this module and the trt
backend are the only code that imports it, and both stay small. ``--fp16`` sets the builder's
FP16 flag, which TensorRT 10 has; TensorRT 11 builds strongly typed networks only and dropped
the flag, so there an fp16 engine needs an fp16 graph, which ``vseg export`` does not write yet:
``--fp16`` then stops with one error line rather than building fp32 silently.
"""

from __future__ import annotations

import os
from pathlib import Path

from vseg.data.palette import atomic_save
from vseg.errors import InputError, VsegError
from vseg.export.manifest import MANIFEST_NAME, file_sha256, read_manifest
from vseg.jsonio import write_json

PLAN_DIR = "trt"
TIMING_CACHE = "timing.cache"


def require_tensorrt():
    """The tensorrt module, or a one-line VsegError saying how to get it."""
    try:
        import tensorrt
    except ImportError:
        raise VsegError("TensorRT's Python package is not installed here: `vseg build` and the trt backend need it "
                        "(pip install -e '.[trt]' on a machine with an NVIDIA GPU and driver; "
                        "`vseg doctor` shows what loads)") from None
    return tensorrt


def plugin_library(path: str | os.PathLike | None) -> Path:
    """``path``, else $VSEG_PLUGINS_LIB, else a libvseg_plugins.so under plugins/build*/."""
    from vseg.doctor import find_library

    found = Path(path) if path is not None else find_library("libvseg_plugins.so", "VSEG_PLUGINS_LIB")
    if found is None or not found.is_file():
        raise VsegError(f"no TensorRT plugin library at {path}" if path is not None else
                        "libvseg_plugins.so not found: build it with plugins/build.sh -DTENSORRT_ROOT=... "
                        "or pass --plugins PATH (or set VSEG_PLUGINS_LIB)")
    return found


def load_plugins(trt, path: Path) -> None:
    """Register vseg's plugin creators with TensorRT's registry (the ONNX parser looks there)."""
    if not trt.get_plugin_registry().load_library(str(path)):
        raise VsegError(f"{path}: TensorRT could not load this plugin library (built for another TensorRT?)")


def _fp16_flag(trt):
    flag = getattr(trt.BuilderFlag, "FP16", None)
    if flag is None:
        raise VsegError(f"TensorRT {trt.__version__} builds strongly typed networks only: --fp16 needs an fp16 "
                        "ONNX graph, which vseg export does not write yet; build without --fp16")
    return flag


def build_plan(trt, logger, onnx_path: Path, *, fp16: bool, timing_cache: bytes) -> tuple[bytes, bytes]:
    """(serialized plan, updated timing cache) for one ONNX graph."""
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise InputError(f"{onnx_path}: TensorRT's ONNX parser refused the graph: {errors}")
    config = builder.create_builder_config()
    if fp16:
        config.set_flag(_fp16_flag(trt))
    cache = config.create_timing_cache(timing_cache)
    config.set_timing_cache(cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise VsegError(f"{onnx_path}: TensorRT could not build an engine (its log above says why)")
    return bytes(plan), bytes(config.get_timing_cache().serialize())


def build_engines(engine_dir: str | os.PathLike, *, fp16: bool = False, plugins: str | os.PathLike | None = None,
                  progress=None) -> dict:
    """Build a plan for every graph of ``engine_dir`` (see the module docstring); returns the
    manifest's new ``"tensorrt"`` section. ``progress(engine)`` is called before each build."""
    folder = Path(engine_dir)
    manifest = read_manifest(folder)
    trt = require_tensorrt()
    library = None
    if manifest.get("custom_ops"):  # portable folders need no plugins
        library = plugin_library(plugins)
        load_plugins(trt, library)
    logger = trt.Logger(trt.Logger.WARNING)
    out = folder / PLAN_DIR
    out.mkdir(exist_ok=True)
    cache_path = out / TIMING_CACHE
    cache = cache_path.read_bytes() if cache_path.is_file() else b""
    plans = {}
    for engine, entry in manifest["engines"].items():
        if progress is not None:
            progress(engine)
        plan, cache = build_plan(trt, logger, folder / entry["file"], fp16=fp16, timing_cache=cache)
        path = out / f"{engine}.plan"
        atomic_save(path, lambda f, data=plan: f.write(data))
        plans[engine] = {"file": f"{PLAN_DIR}/{path.name}", "sha256": file_sha256(path), "onnx_sha256": entry["sha256"]}
    atomic_save(cache_path, lambda f: f.write(cache))
    section = {"version": trt.__version__, "fp16": fp16, "plugins": None if library is None else str(library),
               "device": _device_name(), "plans": plans}
    manifest["tensorrt"] = section
    write_json(folder / MANIFEST_NAME, manifest)
    return section


def _device_name() -> str | None:
    try:
        from cuda.bindings import runtime

        err, props = runtime.cudaGetDeviceProperties(0)
        return props.name.decode().rstrip("\x00") if err == runtime.cudaError_t.cudaSuccess else None
    except ImportError:
        return None
