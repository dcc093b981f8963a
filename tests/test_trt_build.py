"""`vseg build` and the trt backend where TensorRT is not installed (every machine this project
is developed and tested on): each mistake and each missing piece is one error line, and
nothing is written. The TensorRT calls themselves can only run where TensorRT is installed."""

import importlib.util
import json
import types

import pytest
from cli_helpers import one_error_line, vseg

from vseg.errors import InputError, VsegError
from vseg.export.build_trt import _fp16_flag, build_engines, plugin_library
from vseg.export.manifest import FORMAT, FORMAT_VERSION, MANIFEST_NAME
from vseg.runtime.trt_backend import TrtBackend

NO_TENSORRT = importlib.util.find_spec("tensorrt") is None


def fake_engine_folder(path, **extra):
    """A manifest with no graphs: enough for the checks that come before TensorRT."""
    path.mkdir()
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": "lite", "config": {},
                "height": 160, "width": 288, "objects": 2, "capacity": 4, "custom_ops": [], "engines": {}, **extra}
    (path / MANIFEST_NAME).write_text(json.dumps(manifest))
    return path


def test_build_refuses_a_folder_that_is_not_an_engine_folder(tmp_path):
    line = one_error_line(vseg("build", str(tmp_path)))
    assert "not an engine folder" in line and "vseg export" in line


@pytest.mark.skipif(not NO_TENSORRT, reason="TensorRT is installed here")
def test_build_without_tensorrt_is_one_line_and_writes_nothing(tmp_path):
    folder = fake_engine_folder(tmp_path / "engines")
    before = (folder / MANIFEST_NAME).read_text()
    line = one_error_line(vseg("build", str(folder)))
    assert "TensorRT's Python package is not installed" in line and "vseg doctor" in line
    assert sorted(p.name for p in folder.iterdir()) == [MANIFEST_NAME]
    assert (folder / MANIFEST_NAME).read_text() == before
    with pytest.raises(VsegError, match="not installed"):
        build_engines(folder)


def test_plugin_library_names_what_is_missing(tmp_path, monkeypatch):
    with pytest.raises(VsegError, match="no TensorRT plugin library at .*nowhere.so"):
        plugin_library(tmp_path / "nowhere.so")
    monkeypatch.setenv("VSEG_PLUGINS_LIB", str(tmp_path / "missing.so"))
    with pytest.raises(VsegError, match="libvseg_plugins.so not found"):
        plugin_library(None)
    library = tmp_path / "libvseg_plugins.so"
    library.write_bytes(b"")
    monkeypatch.setenv("VSEG_PLUGINS_LIB", str(library))
    assert plugin_library(None) == library


def test_fp16_needs_the_builder_flag_that_tensorrt_11_dropped():
    # the two shapes of TensorRT's BuilderFlag: 10.x has FP16, 11.x (strongly typed only) not
    trt10 = types.SimpleNamespace(__version__="10.3.0", BuilderFlag=types.SimpleNamespace(FP16="fp16-flag"))
    trt11 = types.SimpleNamespace(__version__="11.1.0", BuilderFlag=types.SimpleNamespace(TF32="tf32-flag"))
    assert _fp16_flag(trt10) == "fp16-flag"
    with pytest.raises(VsegError, match="TensorRT 11.1.0 builds strongly typed networks only"):
        _fp16_flag(trt11)


def test_trt_backend_needs_plans_from_vseg_build(tmp_path):
    folder = fake_engine_folder(tmp_path / "engines")
    with pytest.raises(InputError, match="manifest lists no encode_key"):
        TrtBackend(folder)
    engines = {name: {"file": f"{name}.onnx", "sha256": "0", "inputs": [], "outputs": []}
               for name in ("encode_key", "encode_value", "decode")}
    built = fake_engine_folder(tmp_path / "built", engines=engines)
    with pytest.raises(InputError, match="no TensorRT plans; build them with `vseg build"):
        TrtBackend(built)
