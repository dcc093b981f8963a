"""Backends: what runs the engines. One runner interface, in the manner of Polygraphy's runners.

``activate()`` loads what the backend needs (wrappers, sessions), ``infer(engine, feeds)``
runs one engine on named inputs and returns named outputs as torch tensors, ``deactivate()``
frees it; a backend is also a context manager. Before the first frame the frame loop calls
``bind(Geometry)`` with the shapes it wants; a backend with static engines answers with its
own (K object slots and T memory slots fixed per engine folder) or a one-line InputError.

- :class:`TorchBackend` runs the export's wrappers (:mod:`vseg.export.graphs`), the exact
  computation the ONNX graphs hold, on the model's device; any frame size and object count.
- :class:`OrtBackend` runs an engine folder's ONNX graphs in onnxruntime with the best
  provider that exists (TensorRT, CUDA, then CPU) and reports which ran.
- :class:`~vseg.runtime.trt_backend.TrtBackend` runs the TensorRT plans ``vseg build`` made
  in an engine folder, with our plugins, through cuda-python buffers and a stream.

Every ``infer`` call is timed (wall clock, after the device finished); ``timing_summary()``
gives calls, total and mean milliseconds per engine.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vseg.errors import InputError, VsegError
from vseg.export.graphs import ENGINES

BACKENDS = ("torch", "ort", "trt")
_PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "int32": torch.int32, "int64": torch.int64,
           "bool": torch.bool}


@dataclass(frozen=True)
class Geometry:
    """Static engine shapes: padded frame ``height`` x ``width`` (multiples of 16), ``objects``
    object slots K, ``capacity`` memory slots T."""

    height: int
    width: int
    objects: int
    capacity: int


@dataclass(frozen=True)
class TensorSpec:
    """Shape and dtype of one engine input."""

    shape: tuple[int, ...]
    dtype: torch.dtype


class Backend:
    """Base of the backends: activation, timing, description (see the module docstring).

    Subclasses set ``name``, ``model_name`` (stm | lite | spvos), ``model_config`` (the config
    dataclass as a dict) and implement ``_activate``, ``_deactivate``, ``_run``, ``bind``,
    ``input_specs`` and ``describe``.
    """

    name = ""
    model_name: str
    model_config: dict
    device = torch.device("cpu")  # where infer() returns its tensors (and wants its feeds)
    static_size: tuple[int, int] | None = None  # (H, W) the engines take, None: any multiple of 16
    static_objects: int | None = None  # object slots K of the engines, None: any number

    def __init__(self) -> None:
        self.timings: dict[str, list[float]] = {engine: [] for engine in ENGINES}
        self.geometry: Geometry | None = None
        self.active = False

    def activate(self) -> Backend:
        if not self.active:
            self._activate()
            self.active = True
        return self

    def deactivate(self) -> None:
        if self.active:
            self._deactivate()
            self.active = False

    def __enter__(self) -> Backend:
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def infer(self, engine: str, feeds: dict[str, np.ndarray | torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run ``engine`` on ``feeds`` (every input by name) -> {output name: tensor}."""
        if not self.active:
            raise RuntimeError(f"{self.name} backend: activate() before infer()")
        start = time.perf_counter()
        outputs = self._run(engine, feeds)
        self._synchronize()
        self.timings[engine].append(time.perf_counter() - start)
        return outputs

    def timing_summary(self) -> dict[str, dict[str, float]]:
        """{engine: {"calls", "total_ms", "mean_ms"}} over every infer() so far."""
        out = {}
        for engine, times in self.timings.items():
            total = 1000 * sum(times)
            out[engine] = {"calls": len(times), "total_ms": round(total, 3),
                           "mean_ms": round(total / len(times), 3) if times else None}
        return out

    def reset_timings(self) -> None:
        for times in self.timings.values():
            times.clear()

    def _synchronize(self) -> None:
        """Wait for the device, so a timing covers the work and not just its launch."""

    def _activate(self) -> None:
        raise NotImplementedError

    def _deactivate(self) -> None:
        raise NotImplementedError

    def _run(self, engine: str, feeds: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def bind(self, wanted: Geometry) -> Geometry:
        raise NotImplementedError

    def input_specs(self, engine: str) -> dict[str, TensorSpec]:
        raise NotImplementedError

    def describe(self) -> dict:
        raise NotImplementedError

    def weights_id(self) -> str:
        """sha256 of the model's tensors (:func:`vseg.export.manifest.state_sha256`): equal for
        a torch model and an engine folder exported from it."""
        raise NotImplementedError


class TorchBackend(Backend):
    """The export's torch wrappers of ``model`` on ``device`` (default: where the model is).

    The wrappers snapshot folded weights when built (on activate), so change the model's
    weights before activating, not after.
    """

    name = "torch"

    def __init__(self, model: torch.nn.Module, device: str | torch.device | None = None) -> None:
        from vseg.export.manifest import model_config
        from vseg.models.registry import model_name

        super().__init__()
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device).eval()
        self.model_name = model_name(model)
        self.model_config = model_config(model)
        self._graphs: dict[str, torch.nn.Module] = {}
        self._specs: dict[str, dict[str, TensorSpec]] = {}

    def weights_id(self) -> str:
        from vseg.export.manifest import state_sha256

        return state_sha256(self.model)

    def _activate(self) -> None:
        from vseg.export.graphs import engine_graphs

        self._graphs = engine_graphs(self.model)

    def _deactivate(self) -> None:
        self._graphs = {}

    def bind(self, wanted: Geometry) -> Geometry:
        from vseg.export.graphs import example_inputs

        # Any size works; example_inputs gives the shapes of the state inputs at this one.
        with torch.inference_mode():
            examples = example_inputs(self.model, wanted.height, wanted.width, wanted.objects, wanted.capacity)
        self._specs = {engine: {name: TensorSpec(tuple(t.shape), t.dtype) for name, t in inputs.items()}
                       for engine, inputs in examples.items()}
        self.geometry = wanted
        return wanted

    def input_specs(self, engine: str) -> dict[str, TensorSpec]:
        if not self._specs:
            raise RuntimeError("torch backend: bind() before input_specs()")
        return self._specs[engine]

    def _run(self, engine: str, feeds: dict) -> dict[str, torch.Tensor]:
        graph = self._graphs[engine]
        args = [torch.as_tensor(_required(feeds, name, engine)).to(self.device) for name in graph.input_names]
        with torch.inference_mode():
            outputs = graph(*args)
        return dict(zip(graph.output_names, outputs))

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def describe(self) -> dict:
        if self.device.type == "cuda":
            device = torch.cuda.get_device_name(self.device)
        else:
            device = f"cpu ({torch.get_num_threads()} threads)"
        return {"backend": self.name, "model": self.model_name, "device": device,
                "providers": [f"torch-{self.device.type}"], "torch": torch.__version__}


class OrtBackend(Backend):
    """An engine folder (``vseg export``) run by onnxruntime.

    providers: onnxruntime execution providers to use, in order (default: the best available
    of TensorRT, CUDA and CPU). ``describe()`` reports what the sessions actually run on.
    """

    name = "ort"

    def __init__(self, engine_dir: str | os.PathLike, providers: list[str] | None = None) -> None:
        from vseg.export.manifest import read_manifest

        super().__init__()
        self.engine_dir = Path(engine_dir)
        self.manifest = read_manifest(self.engine_dir)
        self.model_name = self.manifest["model"]
        self.model_config = self.manifest["config"]
        self.providers = choose_providers(providers)
        self.static_size = (self.manifest["height"], self.manifest["width"])
        self.static_objects = self.manifest["objects"]
        engines = self.manifest.get("engines", {})
        missing = [e for e in ENGINES if e not in engines]
        if missing:
            raise InputError(f"{self.engine_dir}: manifest lists no {', '.join(missing)} engine")
        self._specs = {engine: {s["name"]: TensorSpec(tuple(s["shape"]), _DTYPES[s["dtype"]])
                                for s in engines[engine]["inputs"]} for engine in ENGINES}
        self._sessions: dict = {}
        self._output_names: dict[str, list[str]] = {}

    def _activate(self) -> None:
        from vseg.export.ort_custom_ops import make_session

        for engine in ENGINES:
            path = self.engine_dir / self.manifest["engines"][engine]["file"]
            session = make_session(path, self.providers)
            declared = set(self._specs[engine])
            found = {i.name for i in session.get_inputs()}
            if found != declared:
                raise InputError(f"{path}: graph inputs {sorted(found)} differ from the manifest's {sorted(declared)}")
            self._sessions[engine] = session
            self._output_names[engine] = [o.name for o in session.get_outputs()]

    def _deactivate(self) -> None:
        self._sessions = {}

    def bind(self, wanted: Geometry) -> Geometry:
        m = self.manifest
        have = Geometry(m["height"], m["width"], m["objects"], m["capacity"])
        if (wanted.height, wanted.width) != (have.height, have.width):
            raise InputError(f"{self.engine_dir}: engines take {have.height}x{have.width} frames but this video "
                             f"pads to {wanted.height}x{wanted.width}; export with --height {wanted.height} "
                             f"--width {wanted.width}")
        if wanted.objects > have.objects:
            raise InputError(f"{self.engine_dir}: engines track at most {have.objects} object(s), the mask has "
                             f"{wanted.objects}; export with --objects {wanted.objects}")
        self.geometry = have
        return have

    def input_specs(self, engine: str) -> dict[str, TensorSpec]:
        return self._specs[engine]

    def weights_id(self) -> str:
        return self.manifest["weights"]["state_sha256"]

    def _run(self, engine: str, feeds: dict) -> dict[str, torch.Tensor]:
        arrays = {name: _to_numpy(_required(feeds, name, engine), spec.dtype)
                  for name, spec in self._specs[engine].items()}
        outputs = self._sessions[engine].run(self._output_names[engine], arrays)
        return {name: torch.from_numpy(np.asarray(value)) for name, value in zip(self._output_names[engine], outputs)}

    def describe(self) -> dict:
        import onnxruntime as ort

        ran = self._sessions["encode_key"].get_providers() if self._sessions else list(self.providers)
        device = ort.get_device()
        if ran[0] == "CPUExecutionProvider":
            device = f"cpu ({os.cpu_count()} cores)"
        return {"backend": self.name, "model": self.model_name, "engines": str(self.engine_dir),
                "flavor": self.manifest.get("flavor"), "device": device, "providers": ran,
                "onnxruntime": ort.__version__}


def choose_providers(requested: list[str] | None) -> list[str]:
    """onnxruntime providers to use: ``requested`` (each must exist) or the best available."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if requested is not None:
        missing = [p for p in requested if p not in available]
        if missing:
            raise VsegError(f"onnxruntime here has no {', '.join(missing)} (available: {', '.join(available)})")
        return list(requested)
    return [p for p in _PREFERRED_PROVIDERS if p in available]


def open_backend(name: str, model_name: str, *, weights: str | os.PathLike | None = None,
                 engines: str | os.PathLike | None = None, device: str | None = None,
                 providers: list[str] | None = None) -> Backend:
    """The backend ``name`` (torch | ort | trt) for model ``model_name``, as the CLI asks for it.

    torch: the model from ``weights`` (default: the shipped weights) on ``device`` (default:
    the GPU if torch has one). ort: the engine folder ``engines``; a folder exported from
    another model is an InputError. trt: the same folder once ``vseg build`` has added plans.
    """
    if name == "torch":
        if engines is not None:
            raise VsegError("--engines runs an exported folder with --backend ort; the torch backend takes --weights")
        from vseg.models.weights import load_named_model

        model = load_named_model(model_name, weights)
        return TorchBackend(model, device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if name in ("ort", "trt"):
        made_by = "`vseg export`" if name == "ort" else "`vseg export`, then `vseg build`"
        if engines is None:
            raise VsegError(f"the {name} backend runs an engine folder: pass --engines DIR (made by {made_by})")
        if weights is not None:
            raise VsegError("--weights is for the torch backend; an engine folder carries its own weights")
        if name == "ort":
            backend = OrtBackend(engines, providers)
        else:
            from vseg.runtime.trt_backend import TrtBackend

            backend = TrtBackend(engines)
        if backend.model_name != model_name:
            raise InputError(f"{engines}: engines of a {backend.model_name!r} model, not {model_name!r} "
                             f"(pass --model {backend.model_name} or export {model_name})")
        return backend
    raise VsegError(f"unknown backend {name!r} (choose one of {', '.join(BACKENDS)})")


def _required(feeds: dict, name: str, engine: str):
    try:
        return feeds[name]
    except KeyError:
        raise KeyError(f"engine {engine}: no feed for input {name!r} (got {sorted(feeds)})") from None


def _to_numpy(value, dtype: torch.dtype) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu", dtype).contiguous().numpy()
    return np.ascontiguousarray(value, dtype=torch.empty((), dtype=dtype).numpy().dtype)
