"""The plugin build: schema header generation, the C ABI, and compiling the kernels.

Runs without a GPU. The CUDA build is skipped (with the reason) when nvcc or cmake is
missing; the TensorRT plugin compile check runs only when VSEG_TENSORRT_ROOT names a folder
with include/NvInfer.h.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vseg.ops import load_schema

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "plugins"
GENERATOR = PLUGINS / "tools" / "gen_schema_header.py"
ABI_HEADER = PLUGINS / "common" / "vseg_kernels.h"
ARCHITECTURES = "87;89;90"


def _generate(folder: Path) -> Path:
    header = folder / "vseg_schema.h"
    subprocess.run([sys.executable, str(GENERATOR), str(REPO / "vseg" / "ops" / "schema.json"), str(header)], check=True)
    return header


def _op_block(text: str, op_name: str) -> str:
    match = re.search(rf"namespace {op_name}\n\{{\n(.*?)\}} // namespace {op_name}\n", text, re.DOTALL)
    assert match, f"no block for {op_name}"
    return match.group(1)


def _allowed_arrays(block: str) -> dict[str, list]:
    arrays = {}
    for name, body in re.findall(r"inline constexpr (?:int32_t|char const\*) k(\w+)Allowed\[\] = \{(.*?)\};", block):
        arrays[name] = [json.loads(v) for v in (s.strip() for s in body.split(","))]
    return arrays


def _camel(name: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in name.split("_"))


def test_generated_header_lists_the_schema_attributes(tmp_path):
    text = _generate(tmp_path).read_text()
    schema = load_schema()
    assert f'kPluginNamespace[] = "{schema["plugin_namespace"]}"' in text
    assert f'kPluginVersion[] = "{schema["plugin_version"]}"' in text
    spec_line = re.compile(r'\{"(\w+)", AttrType::k(Int|String), (-?\d+), (-?\d+), (\w+), (\d+), (\w+), (\d+)\},')
    for op_name, op in schema["ops"].items():
        block = _op_block(text, op_name)
        assert f'kOpType[] = "{op["op_type"]}"' in block
        assert f'kPluginName[] = "{op["plugin_name"]}"' in block
        entries = spec_line.findall(block)
        assert [e[0] for e in entries] == [a["name"] for a in op["attributes"]]
        arrays = _allowed_arrays(block)
        for entry, attr in zip(entries, op["attributes"]):
            allowed = attr.get("allowed")
            if attr["type"] == "int":
                assert entry[1] == "Int" and int(entry[2]) == attr["default"]
                assert int(entry[3]) == attr.get("min", min(allowed) if allowed else -(2**31))
            else:
                assert entry[1] == "String" and int(entry[2]) == allowed.index(attr["default"])
            assert arrays.get(_camel(attr["name"])) == allowed


@pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler to compile the generated header")
def test_generated_header_compiles_and_reads_back_as_the_schema(tmp_path):
    _generate(tmp_path)
    dump = tmp_path / "dump.cpp"
    # prints the header's tables as JSON, so the comparison is made on what C++ sees
    dump.write_text(
        """#include "vseg_schema.h"
#include <cstdio>
using namespace vseg::schema;
int main() {
    std::printf("{");
    for (int o = 0; o < kNbOps; ++o) {
        OpSpec const& op = *kOps[o];
        std::printf("%s\\"%s\\": {\\"plugin_name\\": \\"%s\\", \\"attributes\\": [", o ? ", " : "", op.opType, op.pluginName);
        for (int a = 0; a < op.nbAttrs; ++a) {
            AttrSpec const& s = op.attrs[a];
            bool const isInt = s.type == AttrType::kInt;
            std::printf("%s{\\"name\\": \\"%s\\", \\"type\\": \\"%s\\", ", a ? ", " : "", s.name, isInt ? "int" : "string");
            if (isInt) std::printf("\\"default\\": %d, \\"min\\": %d, \\"allowed\\": [", s.defaultValue, s.minValue);
            else std::printf("\\"default\\": \\"%s\\", \\"allowed\\": [", s.allowedStrings[s.defaultValue]);
            int const n = isInt ? s.nbAllowedInts : s.nbAllowedStrings;
            for (int i = 0; i < n; ++i) {
                if (isInt) std::printf("%s%d", i ? ", " : "", s.allowedInts[i]);
                else std::printf("%s\\"%s\\"", i ? ", " : "", s.allowedStrings[i]);
            }
            std::printf("]}");
        }
        std::printf("]}");
    }
    std::printf("}\\n");
}
"""
    )
    exe = tmp_path / "dump"
    subprocess.run(["c++", "-std=c++17", "-Wall", "-Werror", f"-I{tmp_path}", str(dump), "-o", str(exe)], check=True)
    seen = json.loads(subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout)
    for op_name, op in load_schema()["ops"].items():
        assert seen[op_name]["plugin_name"] == op["plugin_name"]
        for got, attr in zip(seen[op_name]["attributes"], op["attributes"], strict=True):
            assert got["name"] == attr["name"] and got["type"] == attr["type"]
            assert got["default"] == attr["default"]
            if attr["type"] == "int" and "min" in attr:
                assert got["min"] == attr["min"]
            assert got["allowed"] == attr.get("allowed", [])


def test_c_abi_enums_follow_the_schema_order():
    # the Python binding passes a string attribute as its index in the schema's allowed list
    text = ABI_HEADER.read_text()
    values = {name: int(v) for name, v in re.findall(r"(VSEG_\w+) = (\d+)", text)}
    ops = load_schema()["ops"]
    prefixes = [
        ("GatedSparseConv2d", "coarse_mode", "VSEG_COARSE_"),
        ("GatedSparseConv2d", "activation", "VSEG_ACTIVATION_"),
        ("MVWarp", "mode", "VSEG_WARP_"),
        ("MVWarp", "padding", "VSEG_WARP_"),
    ]
    for op, attr, prefix in prefixes:
        allowed = next(a["allowed"] for a in ops[op]["attributes"] if a["name"] == attr)
        for index, value in enumerate(allowed):
            assert values[prefix + value.upper()] == index, (op, attr, value)
    for name, value in ops["GatedSparseConv2d"]["decision_values"].items():
        assert values["VSEG_TILE_" + name] == value


# ---------------------------------------------------------------- the CUDA build


def _nvcc() -> str | None:
    return shutil.which("nvcc") or next((p for p in ["/usr/local/cuda/bin/nvcc"] if os.access(p, os.X_OK)), None)


def _cmake_build(build_dir: Path, *extra: str, target: str | None = None) -> subprocess.CompletedProcess:
    configure = ["cmake", "-S", str(PLUGINS), "-B", str(build_dir), f"-DCMAKE_CUDA_ARCHITECTURES={ARCHITECTURES}",
                 f"-DCMAKE_CUDA_COMPILER={_nvcc()}", f"-DPython3_EXECUTABLE={sys.executable}", *extra]
    build = ["cmake", "--build", str(build_dir), "-j", str(os.cpu_count() or 2)] + (["--target", target] if target else [])
    out = subprocess.run(configure, capture_output=True, text=True, check=False)
    if out.returncode == 0:
        out = subprocess.run(build, capture_output=True, text=True, check=False)
    return out


def _our_warnings(log: str) -> list[str]:
    return [line for line in log.splitlines() if "warning" in line.lower() and str(PLUGINS) in line]


needs_cuda_toolchain = pytest.mark.skipif(
    shutil.which("cmake") is None or _nvcc() is None, reason="nvcc or cmake not found: CUDA build not checked"
)


@pytest.fixture(scope="module")
def kernels_build(tmp_path_factory):
    build_dir = tmp_path_factory.mktemp("plugins-build")
    result = _cmake_build(build_dir)
    return build_dir, result


@pytest.mark.slow
@needs_cuda_toolchain
def test_kernels_library_builds_for_three_architectures_without_warnings(kernels_build):
    build_dir, result = kernels_build
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert (build_dir / "libvseg_kernels.so").is_file()
    assert _our_warnings(log) == []
    flags = (build_dir / "CMakeFiles" / "vseg_kernel_objects.dir" / "flags.make").read_text()
    for arch in ARCHITECTURES.split(";"):
        assert f"sm_{arch}" in flags


@pytest.mark.slow
@needs_cuda_toolchain
def test_built_library_answers_through_ctypes_without_a_gpu(kernels_build):
    from vseg.ops.kernels import ABI_VERSION, load_library

    build_dir, result = kernels_build
    assert result.returncode == 0
    lib = load_library(str(build_dir / "libvseg_kernels.so"))
    assert lib.vseg_kernels_abi_version() == ABI_VERSION
    # 120 x 214 outputs in 8 x 8 tiles, 15 * 27 = 405 tiles -> 405 CTAs of 64 positions at most:
    # 256 bytes of counters; split-K semaphores for min(405, 256) slots = 1024 bytes; the tile
    # list, 1620 bytes padded to 1792; 64 x 64 x 3 x 3 fp32 weights = 147456 bytes; 256 slots x
    # 4 parts of 64 x 64 float partials
    assert lib.vseg_gated_sparse_conv2d_workspace_size(1, 64, 64, 120, 214, 3, 1, 8, 0) == (
        256 + 1024 + 1792 + 147456 + 256 * 4 * 64 * 64 * 4)
    # grouped convolutions never split: no semaphores, no partials
    assert lib.vseg_gated_sparse_conv2d_workspace_size(1, 64, 64, 120, 214, 3, 4, 8, 1) == 256 + 1792 + 18432
    # a small map: 2 x 3 tiles of 16 x 16 -> 24 CTAs, so 24 slots
    assert lib.vseg_gated_sparse_conv2d_workspace_size(1, 8, 8, 20, 40, 3, 1, 16, 0) == (
        256 + 256 + 256 + 2304 + 24 * 4 * 64 * 64 * 4)
    assert lib.vseg_gated_sparse_conv2d_workspace_size(1, 64, 64, 120, 214, 3, 1, 6, 0) == 0  # tile 6
    header = ABI_HEADER.read_text()
    for name in ("vseg_gated_sparse_conv2d_workspace_size", "vseg_gated_sparse_conv2d", "vseg_mv_warp"):
        params = re.search(rf"VSEG_API \w+ {name}\((.*?)\);", header, re.DOTALL).group(1)
        assert len(getattr(lib, name).argtypes) == params.count(",") + 1, name
    args = [None] * 7 + [0] + [1] * 14 + [None]
    assert lib.vseg_gated_sparse_conv2d(*args) == 1  # VSEG_ERROR_INVALID_ARGUMENT, before any CUDA call
    assert b"null pointer" in lib.vseg_last_error()


@pytest.mark.slow
@needs_cuda_toolchain
@pytest.mark.skipif(not os.environ.get("VSEG_TENSORRT_ROOT"), reason="set VSEG_TENSORRT_ROOT to TensorRT headers")
def test_plugins_compile_against_tensorrt_headers(tmp_path):
    root = os.environ["VSEG_TENSORRT_ROOT"]
    result = _cmake_build(tmp_path / "trt", f"-DTENSORRT_ROOT={root}", target="vseg_plugins")
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert _our_warnings(log) == []
    assert (tmp_path / "trt" / "libvseg_plugins.so").is_file()
