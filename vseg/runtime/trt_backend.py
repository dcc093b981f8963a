"""The ``trt`` backend: an engine folder's TensorRT plans (``vseg build``) with vseg's plugins.

Symmetric with :class:`~vseg.runtime.backends.OrtBackend`: the same manifest gives the model,
the static geometry and the input specs; ``infer`` takes host feeds and returns host torch
tensors. Device memory and the stream come from cuda-python (``cuda.bindings.runtime``): one
device buffer per engine input and output, allocated once on activate, filled by
``cudaMemcpyAsync`` and read back the same way around ``execute_async_v3`` on one stream.

TensorRT cannot be installed where vseg is developed: this module and
:mod:`vseg.export.build_trt` are the only code that imports it (see the README's "What ran where").
"""

from __future__ import annotations

import os

import numpy as np
import torch

from vseg.errors import InputError, VsegError
from vseg.export.build_trt import load_plugins, plugin_library, require_tensorrt
from vseg.export.graphs import ENGINES
from vseg.export.manifest import file_sha256
from vseg.runtime.backends import OrtBackend, _required, _to_numpy


def _runtime():
    try:
        from cuda.bindings import runtime
    except ImportError:
        raise VsegError("cuda-python is not installed here: the trt backend needs it "
                        "(pip install -e '.[trt]')") from None
    return runtime


def _check(result, what: str):
    """cuda-python returns (error, *values): raise on an error, else the values."""
    runtime = _runtime()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != runtime.cudaError_t.cudaSuccess:
        raise VsegError(f"CUDA error in {what}: {runtime.cudaGetErrorString(err)[1].decode()}")
    return values[0] if len(values) == 1 else values


class TrtBackend(OrtBackend):
    """The plans of an engine folder built by ``vseg build`` (its manifest's ``"tensorrt"``
    section). Geometry, input specs and weights come from the manifest exactly as for ``ort``;
    only activation and running differ."""

    name = "trt"

    def __init__(self, engine_dir: str | os.PathLike, plugins: str | os.PathLike | None = None) -> None:
        super().__init__(engine_dir, providers=[])
        section = self.manifest.get("tensorrt")
        if not section:
            raise InputError(f"{self.engine_dir}: no TensorRT plans; build them with `vseg build {self.engine_dir}`")
        self.section = section
        self.plugins = plugins
        self._trt = None
        self._stream = None
        self._engines: dict = {}  # engine -> (ICudaEngine, IExecutionContext)
        self._buffers: dict[str, dict[str, tuple[int, np.ndarray]]] = {}  # engine -> name -> (device ptr, host array)
        self._inputs: dict[str, list[str]] = {}

    def _activate(self) -> None:
        trt = require_tensorrt()
        runtime = _runtime()
        if self.manifest.get("custom_ops"):
            # --plugins, else $VSEG_PLUGINS_LIB, else the library the plans were built with
            chosen = self.plugins or os.environ.get("VSEG_PLUGINS_LIB") or self.section.get("plugins")
            load_plugins(trt, plugin_library(chosen))
        self._trt = trt
        logger = trt.Logger(trt.Logger.WARNING)
        trt_runtime = trt.Runtime(logger)
        self._stream = _check(runtime.cudaStreamCreate(), "cudaStreamCreate")
        try:
            self._load_plans(trt, trt_runtime)
        except BaseException:
            self._deactivate()  # a plan that fails to load must not leak the buffers of the others
            raise

    def _load_plans(self, trt, trt_runtime) -> None:
        for engine in ENGINES:
            entry = self.section["plans"].get(engine)
            if entry is None:
                raise InputError(f"{self.engine_dir}: the TensorRT section has no {engine} plan; "
                                 "run `vseg build` again")
            path = self.engine_dir / entry["file"]
            if not path.is_file() or file_sha256(path) != entry["sha256"]:
                raise InputError(f"{path}: missing or changed since `vseg build`; build again")
            cuda_engine = trt_runtime.deserialize_cuda_engine(path.read_bytes())
            if cuda_engine is None:
                raise InputError(f"{path}: TensorRT {trt.__version__} could not load this plan "
                                 f"(built with {self.section.get('version')} on {self.section.get('device')})")
            context = cuda_engine.create_execution_context()
            self._engines[engine] = (cuda_engine, context)
            buffers, inputs, outputs = self._allocate(cuda_engine, context)
            self._buffers[engine], self._inputs[engine], self._output_names[engine] = buffers, inputs, outputs

    def _allocate(self, cuda_engine, context):
        """A device buffer and a host array per I/O tensor (static shapes), bound to the context."""
        trt, runtime = self._trt, _runtime()
        buffers, inputs, outputs = {}, [], []
        for i in range(cuda_engine.num_io_tensors):
            name = cuda_engine.get_tensor_name(i)
            dtype = trt.nptype(cuda_engine.get_tensor_dtype(name))
            host = np.empty(tuple(cuda_engine.get_tensor_shape(name)), dtype=dtype)
            pointer = _check(runtime.cudaMalloc(max(host.nbytes, 1)), "cudaMalloc")
            context.set_tensor_address(name, int(pointer))
            buffers[name] = (int(pointer), host)
            (inputs if cuda_engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(name)
        return buffers, inputs, outputs

    def _deactivate(self) -> None:
        runtime = _runtime()
        for buffers in self._buffers.values():
            for pointer, _ in buffers.values():
                runtime.cudaFree(pointer)
        if self._stream is not None:
            runtime.cudaStreamDestroy(self._stream)
        self._engines, self._buffers, self._stream = {}, {}, None

    def _run(self, engine: str, feeds: dict) -> dict[str, torch.Tensor]:
        """Copy the feeds in, run, copy the outputs out, and wait for the stream: the host
        arrays are only read after the copies finished."""
        runtime = _runtime()
        to_device = runtime.cudaMemcpyKind.cudaMemcpyHostToDevice
        to_host = runtime.cudaMemcpyKind.cudaMemcpyDeviceToHost
        buffers = self._buffers[engine]
        for name in self._inputs[engine]:
            pointer, host = buffers[name]
            host[...] = _to_numpy(_required(feeds, name, engine), _torch_dtype(host.dtype))
            _check(runtime.cudaMemcpyAsync(pointer, host.ctypes.data, host.nbytes, to_device, self._stream), "copy in")
        if not self._engines[engine][1].execute_async_v3(int(self._stream)):
            raise VsegError(f"trt backend: TensorRT failed to run {engine} (its log above says why)")
        for name in self._output_names[engine]:
            pointer, host = buffers[name]
            _check(runtime.cudaMemcpyAsync(host.ctypes.data, pointer, host.nbytes, to_host, self._stream), "copy out")
        _check(runtime.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return {name: torch.from_numpy(buffers[name][1].copy()) for name in self._output_names[engine]}

    def describe(self) -> dict:
        return {"backend": self.name, "model": self.model_name, "engines": str(self.engine_dir),
                "flavor": self.manifest.get("flavor"), "device": self.section.get("device"),
                "providers": [f"tensorrt-{'fp16' if self.section.get('fp16') else 'fp32'}"],
                "tensorrt": self._trt.__version__ if self._trt is not None else self.section.get("version"),
                "plugins": self.section.get("plugins")}


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype=dtype)).dtype
