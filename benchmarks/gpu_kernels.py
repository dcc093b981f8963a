#!/usr/bin/env python3
"""GPU check of vseg's CUDA kernels: correctness against the PyTorch references, then timings.

    python benchmarks/gpu_kernels.py --json out.json

Needs a CUDA GPU with PyTorch (CUDA build), nvcc and cmake >= 3.24 (or nvcc alone); no
TensorRT. Builds plugins/build/libvseg_kernels.so for the local GPU when it is missing
(--rebuild forces it). Then:
  1. correctness: GatedSparseConv2d over tiles 4/8/16, strides 1/2, paddings, kernels 3 and 1,
     groups (depthwise included), both coarse modes and activations, decision maps all
     REUSE / all COARSE / all DENSE / random / 90% REUSE (split-K), odd sizes, fp32 and fp16,
     outputs poisoned with NaN first, split-K results bit-identical over repeats; MVWarp over both modes, paddings and dtypes. Relative error (max |y - ref| /
     max |ref|, reference in float64) must stay below 1e-4 (fp32) and 1e-2 (fp16).
  2. timings (CUDA graphs of 20 calls, CUDA events, median of 15 replays): the sparse conv at
     0/25/50/75/90 % REUSE tiles (rest DENSE) and COARSE mixes, with and without split-K
     (VSEG_SPARSE_CONV_MAX_SPLIT=1), against cuDNN's dense
     conv2d + bias at the same precision (TF32 off), on the 1/4 (64 ch, 120x214) and 1/8
     (128 ch, 60x107) feature maps of a 480x854 frame; MVWarp throughput against the
     device's copy bandwidth (clone of a 1 GiB tensor).
Prints tables, writes JSON, exits 1 if any correctness check fails.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vseg.ops import kernels
from vseg.ops.reference import (
    COARSE,
    DENSE,
    REUSE,
    conv_output_size,
    decision_grid_shape,
    gated_sparse_conv2d_reference,
    mv_warp_reference,
)

TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2}
DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16"}


# ------------------------------------------------------------------ build


def ensure_library(rebuild: bool) -> Path:
    """Build libvseg_kernels.so for this GPU unless it is there; returns its path."""
    target = kernels.DEFAULT_BUILD_DIR / kernels.LIBRARY_NAME
    if target.is_file() and not rebuild:
        return target
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    cmd = ["bash", str(REPO / "plugins" / "build.sh"), "--arch", "native"]
    print("building:", " ".join(cmd), flush=True)
    if shutil.which("cmake") and subprocess.run(cmd, check=False).returncode == 0:
        return target
    # no (recent enough) cmake: one nvcc command builds the same library
    major, minor = torch.cuda.get_device_capability()
    plugins = REPO / "plugins"
    sources = [plugins / "common" / "kernelStatus.cpp", plugins / "gatedSparseConv2d" / "gatedSparseConv2dKernel.cu",
               plugins / "mvWarp" / "mvWarpKernel.cu"]
    target.parent.mkdir(parents=True, exist_ok=True)
    cmd = [nvcc, "-O3", "-std=c++17", "-shared", "-Xcompiler=-fPIC,-fvisibility=hidden",
           f"-gencode=arch=compute_{major}{minor},code=sm_{major}{minor}", f"-I{plugins / 'common'}",
           f"-I{plugins / 'gatedSparseConv2d'}", f"-I{plugins / 'mvWarp'}", *map(str, sources), "-o", str(target)]
    print("cmake build failed or missing; building with:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return target


# ------------------------------------------------------------------ correctness


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    if not torch.isfinite(out).all():
        return float("inf")  # a NaN left from the poison: an output nobody wrote
    return ((out.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-6)).item()


def decision_map(kind: str, n: int, grid: tuple[int, int], gen: torch.Generator, device) -> torch.Tensor:
    shape = (n, 1, *grid)
    if kind == "random":
        return torch.randint(0, 3, shape, generator=gen, dtype=torch.int32).to(device)
    if kind == "sparse":  # 90% REUSE, the rest DENSE: few live CTAs, so the K loop is split
        dense = torch.rand(shape, generator=gen) < 0.1
        return torch.where(dense, DENSE, REUSE).to(torch.int32).to(device)
    value = {"reuse": REUSE, "coarse": COARSE, "dense": DENSE}[kind]
    return torch.full(shape, value, dtype=torch.int32, device=device)


CONV_CASES = [  # n, cin, cout, h, w, kernel, stride, padding, dilation, groups
    (2, 16, 24, 19, 23, 3, 1, 1, 1, 1),
    (1, 32, 64, 33, 47, 3, 2, 1, 1, 1),
    (1, 8, 8, 17, 29, 1, 1, 0, 1, 1),
    (2, 12, 18, 21, 15, 3, 1, 2, 2, 3),
    (1, 16, 16, 24, 40, 3, 1, 1, 1, 16),
    (1, 70, 130, 13, 13, 3, 1, 0, 1, 1),
    (1, 64, 64, 120, 214, 3, 1, 1, 1, 1),
    (1, 128, 128, 60, 107, 3, 1, 1, 1, 1),  # K = 1152: split-K into 4 parts when sparse
]


def check_conv(device) -> list[dict]:
    results = []
    gen = torch.Generator().manual_seed(0)
    combos = itertools.product(
        CONV_CASES, (torch.float32, torch.float16), (4, 8, 16), ("reuse", "coarse", "dense", "random", "sparse"),
        ("nearest", "bilinear"), ("none", "relu"),
    )
    for case, dtype, tile, mix, coarse_mode, activation in combos:
        n, cin, cout, h, w, k, stride, padding, dilation, groups = case
        ho, wo = (conv_output_size(s, k, stride, padding, dilation) for s in (h, w))
        x = torch.randn(n, cin, h, w, generator=gen).to(device, dtype)
        weight = (torch.randn(cout, cin // groups, k, k, generator=gen) / (cin // groups * k * k) ** 0.5).to(device, dtype)
        bias = torch.randn(cout, generator=gen).to(device, dtype)
        y_prev = torch.randn(n, cout, ho, wo, generator=gen).to(device, dtype)
        decision = decision_map(mix, n, decision_grid_shape(ho, wo, tile), gen, device)
        attrs = dict(kernel=k, stride=stride, padding=padding, dilation=dilation, groups=groups, tile=tile,
                     coarse_mode=coarse_mode, activation=activation)
        out = torch.full_like(y_prev, float("nan"))
        kernels.gated_sparse_conv2d(x, decision, y_prev, weight, bias, out=out, **attrs)
        ref = gated_sparse_conv2d_reference(x.double(), decision, y_prev.double(), weight.double(), bias.double(), **attrs)
        err = rel_error(out, ref)
        results.append(dict(op="GatedSparseConv2d", case=list(case), dtype=DTYPE_NAMES[dtype], decisions=mix,
                            rel_error=err, ok=err < TOLERANCE[dtype], **attrs))
    # in place: y_prev doubles as the output buffer (REUSE tiles stay, the rest is overwritten)
    x = torch.randn(1, 16, 30, 30, device=device)
    weight, bias = torch.randn(16, 16, 3, 3, device=device) / 12, torch.randn(16, device=device)
    y_prev = torch.randn(1, 16, 30, 30, device=device)
    decision = decision_map("random", 1, decision_grid_shape(30, 30, 8), gen, device)
    ref = gated_sparse_conv2d_reference(x.double(), decision, y_prev.double(), weight.double(), bias.double())
    kernels.gated_sparse_conv2d(x, decision, y_prev, weight, bias, out=y_prev)
    err = rel_error(y_prev, ref)
    results.append(dict(op="GatedSparseConv2d", case="in-place out=y_prev", dtype="fp32", rel_error=err,
                        ok=err < TOLERANCE[torch.float32]))
    # split-K sums its parts in a fixed order: repeated calls must agree bit for bit (a race
    # between the parts would show here as a moving result)
    for dtype in (torch.float32, torch.float16):
        x = torch.randn(1, 128, 60, 107, generator=gen).to(device, dtype)
        weight = (torch.randn(128, 128, 3, 3, generator=gen) / 34).to(device, dtype)
        y_prev = torch.randn(1, 128, 60, 107, generator=gen).to(device, dtype)
        decision = decision_map("sparse", 1, decision_grid_shape(60, 107, 8), gen, device)
        outs = []
        for _ in range(5):
            out = torch.full_like(y_prev, float("nan"))
            kernels.gated_sparse_conv2d(x, decision, y_prev, weight, None, out=out, tile=8)
            outs.append(out)
        same = all(torch.equal(outs[0], o) for o in outs[1:])
        results.append(dict(op="GatedSparseConv2d", case="5 repeats, 90% REUSE, split-K", dtype=DTYPE_NAMES[dtype],
                            rel_error=0.0 if same else float("inf"), ok=same))
    return results


def check_warp(device) -> list[dict]:
    results = []
    gen = torch.Generator().manual_seed(1)
    cases = [  # feat shape, mv grid, block, vector scale (frame pixels), integer vectors
        ((2, 5, 17, 23), (5, 6), 4, 8.0, False),
        ((1, 3, 16, 16), (4, 4), 4, 6.0, True),
        ((1, 128, 60, 107), (120, 214), 4, 12.0, False),
    ]
    for (shape, grid, block, scale, integer), dtype, mode, padding in itertools.product(
        cases, (torch.float32, torch.float16), ("nearest", "bilinear"), ("zeros", "border")
    ):
        feat = torch.randn(*shape, generator=gen).to(device, dtype)
        mv = torch.randn(shape[0], 2, *grid, generator=gen) * scale
        mv = (mv.round() if integer else mv).to(device)
        out = torch.full_like(feat, float("nan"))
        kernels.mv_warp(feat, mv, mode=mode, padding=padding, block=block, out=out)
        ref = mv_warp_reference(feat.double(), mv, mode=mode, padding=padding, block=block)
        err = rel_error(out, ref)
        results.append(dict(op="MVWarp", case=[list(shape), list(grid), block, integer], dtype=DTYPE_NAMES[dtype],
                            mode=mode, padding=padding, rel_error=err, ok=err < TOLERANCE[dtype]))
    return results


# ------------------------------------------------------------------ timing


def time_ms(fn, calls_per_graph: int = 20, replays: int = 15) -> float:
    """Median milliseconds of one call: `calls_per_graph` calls captured in a CUDA graph (no
    Python or launch overhead between them), replayed `replays` times, timed with events."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):  # warm-up, and cuDNN picks its algorithm outside the capture
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    def run_eagerly() -> None:
        for _ in range(calls_per_graph):
            fn()

    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            run_eagerly()
        run = graph.replay
    except RuntimeError as error:  # timings then include launch overhead: say so
        print(f"  (CUDA graph capture failed, timing eager calls: {error})", flush=True)
        torch.cuda.synchronize()
        run = run_eagerly
    run()
    samples = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / calls_per_graph)
    return statistics.median(samples)


def mixed_decisions(n_tiles: int, fractions: dict[int, float], gen: torch.Generator) -> torch.Tensor:
    """A random permutation of tiles with exact shares of REUSE / COARSE (rest DENSE)."""
    values = torch.full((n_tiles,), DENSE, dtype=torch.int32)
    start = 0
    for value, share in fractions.items():
        count = round(share * n_tiles)
        values[start:start + count] = value
        start += count
    return values[torch.randperm(n_tiles, generator=gen)]


MIXES = [  # label, {decision: share of tiles}
    ("0% reuse", {}), ("25% reuse", {REUSE: 0.25}), ("50% reuse", {REUSE: 0.5}), ("75% reuse", {REUSE: 0.75}),
    ("90% reuse", {REUSE: 0.9}), ("50% reuse 25% coarse", {REUSE: 0.5, COARSE: 0.25}),
    ("100% coarse", {COARSE: 1.0}),
]
FEATURE_MAPS = [("1/4 of 480x854", 64, 120, 214), ("1/8 of 480x854", 128, 60, 107)]


def time_conv(device) -> list[dict]:
    rows = []
    gen = torch.Generator().manual_seed(2)
    for (label, channels, h, w), dtype, tile in itertools.product(FEATURE_MAPS, (torch.float32, torch.float16), (8, 16)):
        x = torch.randn(1, channels, h, w, device=device, dtype=dtype)
        weight = torch.randn(channels, channels, 3, 3, device=device, dtype=dtype) / (9 * channels) ** 0.5
        bias = torch.randn(channels, device=device, dtype=dtype)
        y_prev = torch.randn(1, channels, h, w, device=device, dtype=dtype)
        y = torch.empty_like(y_prev)
        dense_ms = time_ms(lambda x=x, weight=weight, bias=bias: F.conv2d(x, weight, bias, padding=1))
        grid = decision_grid_shape(h, w, tile)
        for mix_label, shares in MIXES:
            decision = mixed_decisions(grid[0] * grid[1], shares, gen).view(1, 1, *grid).to(device)
            call = dict(x=x, decision=decision, y_prev=y_prev, weight=weight, bias=bias, tile=tile, out=y)
            sparse_ms = time_ms(lambda call=call: kernels.gated_sparse_conv2d(**call))
            os.environ["VSEG_SPARSE_CONV_MAX_SPLIT"] = "1"  # the same kernel without split-K
            try:
                no_split_ms = time_ms(lambda call=call: kernels.gated_sparse_conv2d(**call))
            finally:
                del os.environ["VSEG_SPARSE_CONV_MAX_SPLIT"]
            active = (decision == DENSE).float().mean().item() + 0.25 * (decision == COARSE).float().mean().item()
            rows.append(dict(map=label, channels=channels, height=h, width=w, dtype=DTYPE_NAMES[dtype], tile=tile,
                             mix=mix_label, active_cost=round(active, 4), sparse_ms=sparse_ms,
                             no_split_ms=no_split_ms, cudnn_dense_ms=dense_ms,
                             speedup_vs_cudnn=dense_ms / sparse_ms))
    return rows


def time_warp(device) -> dict:
    big = torch.empty(1 << 30, dtype=torch.uint8, device=device)
    copy_ms = time_ms(big.clone, calls_per_graph=5, replays=7)
    copy_gbps = 2 * big.numel() / copy_ms / 1e6
    rows = []
    for shape, dtype, mode in itertools.product(
        [(1, 128, 60, 107), (1, 64, 120, 214), (8, 256, 120, 214)], (torch.float32, torch.float16),
        ("bilinear", "nearest"),
    ):
        feat = torch.randn(*shape, device=device, dtype=dtype)
        mv = torch.randn(shape[0], 2, 120, 214, device=device) * 8
        out = torch.empty_like(feat)
        ms = time_ms(lambda feat=feat, mv=mv, mode=mode, out=out: kernels.mv_warp(feat, mv, mode=mode, out=out))
        moved = 2 * feat.numel() * feat.element_size() + mv.numel() * 4
        rows.append(dict(shape=list(shape), dtype=DTYPE_NAMES[dtype], mode=mode, ms=ms, gbps=moved / ms / 1e6,
                         fraction_of_copy=moved / ms / 1e6 / copy_gbps))
    return dict(copy_gbps=copy_gbps, runs=rows)


# ------------------------------------------------------------------ main


def print_table(title: str, rows: list[dict], columns: list[str]) -> None:
    print(f"\n{title}")
    print("  ".join(f"{c:>14}" for c in columns))
    for row in rows:
        cells = [f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in columns]
        print("  ".join(f"{c:>14}" for c in cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="write all results here")
    parser.add_argument("--rebuild", action="store_true", help="rebuild libvseg_kernels.so even if present")
    parser.add_argument("--skip-timing", action="store_true", help="correctness only")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_kernels.py: no CUDA device visible to PyTorch", file=sys.stderr)
        return 2
    library = ensure_library(args.rebuild)
    os.environ["VSEG_KERNELS_LIB"] = str(library)  # the library just checked or built, nothing else
    kernels.load_library.cache_clear()
    kernels.load_library()
    device = torch.device("cuda")
    torch.backends.cudnn.allow_tf32 = False  # "same precision": true fp32 for the fp32 baseline
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = True

    checks = check_conv(device) + check_warp(device)
    failures = [c for c in checks if not c["ok"]]
    worst = {}
    for c in checks:
        key = (c["op"], c["dtype"])
        worst[key] = max(worst.get(key, 0.0), c["rel_error"])
    print(f"correctness: {len(checks) - len(failures)}/{len(checks)} passed")
    limits = {DTYPE_NAMES[dtype]: limit for dtype, limit in TOLERANCE.items()}
    for (op, dtype), err in sorted(worst.items()):
        print(f"  {op:18} {dtype}: worst relative error {err:.3g} (limit {limits[dtype]:g})")
    for c in failures[:20]:
        print("  FAILED:", json.dumps(c))

    report = dict(
        device=torch.cuda.get_device_name(), capability=list(torch.cuda.get_device_capability()),
        torch=torch.__version__, cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
        python=platform.python_version(), library=str(library),
        correctness=dict(passed=len(checks) - len(failures), total=len(checks), checks=checks),
    )
    if not args.skip_timing:
        report["conv_timing"] = time_conv(device)
        report["warp_timing"] = time_warp(device)
        print_table("GatedSparseConv2d vs cuDNN dense conv2d+bias (ms per call)", report["conv_timing"],
                    ["map", "dtype", "tile", "mix", "active_cost", "sparse_ms", "no_split_ms", "cudnn_dense_ms",
                     "speedup_vs_cudnn"])
        print(f"\ndevice copy bandwidth (clone of 1 GiB): {report['warp_timing']['copy_gbps']:.0f} GB/s")
        print_table("MVWarp", report["warp_timing"]["runs"], ["shape", "dtype", "mode", "ms", "gbps", "fraction_of_copy"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str))
        print(f"\nwrote {args.json}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
