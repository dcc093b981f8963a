#!/usr/bin/env python3
"""spvos on the CPU: the tile-sparse GatedSparseConv2d against the same convolutions run densely.

    python benchmarks/sparse_conv_cpu.py --json sparse_conv_cpu.json

Everything is measured side by side in one run (``--threads`` 2 by default, warm-up calls
first, then ``--repeats`` rounds in which every candidate runs once, interleaved, so that
machine load hits all candidates alike; the figure is the median, the minimum is kept too).
Weights are random: the speed of a convolution does not depend on their values.

1. Layers: every gated conv of spvos at a 480x854 frame (padded to 480x864, as the inference
   core pads it): the key encoder's with the BatchNorm folded in as the gated path runs them,
   and the decoder's per-object ones at ``--objects`` objects (objects in the batch). Dense
   baselines: F.conv2d (+ReLU) on NCHW tensors (how stm runs) and on channels-last tensors (the
   faster layout here). Sparse: the custom op on channels-last tensors at several decision
   mixes (spatially random tiles). Reported per mix: the FLOP ratio (REUSE 0, COARSE 0.25,
   DENSE 1, by output pixels), the speed-up, and the acceptance criterion speed-up >= 0.6 /
   FLOP ratio, per layer and for all gated layers together.
2. The whole encode_key and decode stages: dense (stm's path, and channels-last) against sparse
   at one realistic mix: the gates run as usual but their decisions are replaced by tiles drawn
   with the mix's probabilities (per object in the decoder), fresh every frame (so the active
   counts vary as on video); the FLOP ratio is the mean realized GFLOPs (ungated layers, the
   memory read and the gates included) over dense.
3. With ``--shares spvos_budgets.json --budget B`` (the JSON of benchmarks/spvos_budget_curve.py):
   each layer also runs at the REUSE/COARSE/DENSE shares the trained gates took at budget B on
   the held-out clips (its gated frames), the "realized" mix; the stages then use those
   per-layer shares instead of ``--mix``. This is the speed a user gets from the decisions the
   trained model takes (tiles placed at random: the shares, not the places, set the work).

Prints tables; ``--json`` writes everything (machine, load average, settings, figures).
On a machine shared with other work, 2-thread wall-clock figures mostly measure OpenMP threads
waiting for a core (the sparse path has more, smaller parallel regions than one dense conv);
``--threads 1 --clock cpu`` (this thread's CPU time) is the steadier reading there.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vseg.models.cost import SparseCostModel, tile_area_weights
from vseg.models.registry import step_gflops
from vseg.models.spvos import SpVOS, SpVOSConfig, fold_batchnorm
from vseg.ops.gated_sparse_conv import gated_sparse_conv2d
from vseg.ops.reference import COARSE, DENSE, REUSE

MIXES = [  # (REUSE share, COARSE share); the rest is DENSE
    (0.0, 0.0), (0.25, 0.0), (0.5, 0.0), (0.75, 0.0), (0.9, 0.0), (0.5, 0.25), (0.25, 0.5), (0.6, 0.15),
]


def random_decisions(grid: tuple[int, int], reuse: float, coarse: float, seed: int, batch: int = 1) -> torch.Tensor:
    """int32 [batch, 1, th, tw]: exactly round(share * tiles) tiles of each choice, at random places."""
    tiles = batch * grid[0] * grid[1]
    order = torch.randperm(tiles, generator=torch.Generator().manual_seed(seed))
    values = torch.full((tiles,), DENSE, dtype=torch.int32)
    n_reuse, n_coarse = round(reuse * tiles), round(coarse * tiles)
    values[order[:n_reuse]] = REUSE
    values[order[n_reuse:n_reuse + n_coarse]] = COARSE
    return values.view(batch, 1, *grid)


Mix = tuple[float, float]  # (REUSE share, COARSE share)


def realized_mixes(path: str, budget: float) -> dict[str, Mix]:
    """Per gated conv name, the (REUSE, COARSE) shares of spvos_budget_curve.py's row at ``budget``."""
    with open(path, encoding="utf-8") as f:
        rows = json.load(f)["rows"]
    for row in rows:
        if row["model"] == "spvos" and row["budget"] is not None and abs(row["budget"] - budget) < 1e-9:
            return {name: (s["reuse"], s["coarse"]) for name, s in row["layer_shares"].items()}
    raise SystemExit(f"{path}: no spvos row at budget {budget:g}")


def flop_ratio(decision: torch.Tensor, out_h: int, out_w: int, tile: int) -> float:
    """Fraction of the dense FLOPs the decisions [N, 1, th, tw] spend (by output pixels)."""
    cost = torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64)[decision[:, 0].long()]
    return float((cost * tile_area_weights(out_h, out_w, tile)).sum() / decision.shape[0])


CLOCK = time.perf_counter  # --clock cpu: time.thread_time (one thread only; see main)


def measure(candidates: dict[str, Callable[[], object]], repeats: int, warmup: int) -> dict[str, dict]:
    """Interleaved timing: ``warmup`` untimed rounds, then ``repeats`` rounds of every candidate
    once each. Returns {name: {"median_ms", "min_ms"}}."""
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            start = CLOCK()
            fn()
            times[name].append(CLOCK() - start)
    return {name: {"median_ms": 1e3 * statistics.median(t), "min_ms": 1e3 * min(t)} for name, t in times.items()}


def gated_layers(model: SpVOS, height: int, width: int, objects: int) -> list[dict]:
    """Per gated conv: name, input x [N, Cin, H, W] (N = 1 in the key encoder, ``objects`` in the
    decoder), folded weight/bias, stride, activation, out size."""
    with torch.no_grad():
        out = model.encode_key(torch.rand(1, 3, height, width), dense=True)
        f = out.features
        readout = torch.randn(1, objects, model.value_dim, *f.feat16.shape[2:])
        decoder_state = model.decode_sparse(readout, f.feat16, f.skip8, f.skip4, dense=True).state
    state = out.state
    layers = []
    for b, (stage, index) in enumerate(model.gated_blocks()):
        block = getattr(model.key_encoder, stage)[index]
        x, y1, y2 = state[3 * b: 3 * b + 3]
        for conv_bn, inp, out, act, part in ((block.conv1, x, y1, "relu", 1), (block.conv2, y1, y2, "none", 2)):
            weight, bias = (t.detach() for t in fold_batchnorm(conv_bn))
            layers.append({"name": f"{stage}.{index}.conv{part}", "x": inp, "y_shape": tuple(out.shape), "weight": weight,
                               "bias": bias, "stride": conv_bn[0].stride[0], "activation": act})
    for b, name in enumerate(model.decoder_conv_names()[::2]):  # per gated block: its conv1
        block_path = name.rsplit(".", 1)[0]
        block = model.get_submodule(block_path)
        x, y1, y2 = decoder_state[3 * b: 3 * b + 3]
        for conv, inp, out, act, part in ((block.conv1, x, y1, "relu", 1), (block.conv2, y1, y2, "none", 2)):
            layers.append({"name": f"{block_path}.conv{part}", "x": inp, "y_shape": tuple(out.shape),
                           "weight": conv.weight.detach(), "bias": conv.bias.detach(), "stride": 1, "activation": act})
    return layers


def dense_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int, relu: bool) -> torch.Tensor:
    """The dense baseline of one gated conv: conv + bias (+ ReLU), as the stm layer computes it."""
    y = F.conv2d(x, weight, bias, stride=stride, padding=1)
    return torch.relu_(y) if relu else y


def bench_layers(model: SpVOS, height: int, width: int, objects: int, repeats: int, warmup: int,
                 layer_mixes: dict[str, Mix] | None = None) -> list[dict]:
    """Every gated conv, dense against sparse at each of MIXES (and, with ``layer_mixes``, at its
    own realized mix, the "realized" column)."""
    tile = model.config.tile
    rows = []
    for number, layer in enumerate(gated_layers(model, height, width, objects)):
        x, w, b, s, act = layer["x"], layer["weight"], layer["bias"], layer["stride"], layer["activation"]
        x_cl, w_cl = x.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)
        y_prev = torch.randn(layer["y_shape"]).contiguous(memory_format=torch.channels_last)
        _, _, out_h, out_w = layer["y_shape"]
        grid = (-(-out_h // tile), -(-out_w // tile))
        candidates = {"dense_nchw": functools.partial(dense_conv, x, w, b, s, act == "relu"),
                      "dense_channels_last": functools.partial(dense_conv, x_cl, w_cl, b, s, act == "relu")}
        ratios = {}
        mixes = [(f"reuse{reuse:.2f}_coarse{coarse:.2f}", (reuse, coarse)) for reuse, coarse in MIXES]
        if layer_mixes is not None:
            mixes.append(("realized", layer_mixes[layer["name"]]))
        for key, (reuse, coarse) in mixes:
            d = random_decisions(grid, reuse, coarse, seed=number, batch=x.shape[0])
            ratios[key] = flop_ratio(d, out_h, out_w, tile)
            candidates[key] = functools.partial(gated_sparse_conv2d, x_cl, d, y_prev, w_cl, b, stride=s, tile=tile,
                                                coarse_mode=model.config.coarse_mode, activation=act)
        with torch.no_grad():
            times = measure(candidates, repeats, warmup)
        rows.append({"layer": layer["name"], "input": list(x.shape), "output": list(layer["y_shape"]),
                     "times": times, "flop_ratio": ratios})
    return rows


def summarise_layers(rows: list[dict]) -> list[dict]:
    """All gated layers together, per mix: summed medians and FLOP-weighted ratio."""
    summary = []
    for key in rows[0]["flop_ratio"]:
        dense_nchw = sum(r["times"]["dense_nchw"]["median_ms"] for r in rows)
        dense_cl = sum(r["times"]["dense_channels_last"]["median_ms"] for r in rows)
        sparse = sum(r["times"][key]["median_ms"] for r in rows)
        weights = [r["output"][0] * r["output"][1] * r["output"][2] * r["output"][3] * r["input"][1] for r in rows]
        ratio = sum(w * r["flop_ratio"][key] for w, r in zip(weights, rows)) / sum(weights)
        summary.append(_verdict({"mix": key, "dense_nchw_ms": dense_nchw, "dense_channels_last_ms": dense_cl,
                                     "sparse_ms": sparse, "flop_ratio": ratio}))
    return summary


def _verdict(row: dict) -> dict:
    need = 0.6 / max(row["flop_ratio"], 1e-9)
    row["required_speedup"] = need
    row["speedup_vs_nchw"] = row["dense_nchw_ms"] / row["sparse_ms"]
    row["speedup_vs_channels_last"] = row["dense_channels_last_ms"] / row["sparse_ms"]
    row["passes_vs_nchw"] = row["speedup_vs_nchw"] >= need
    row["passes_vs_channels_last"] = row["speedup_vs_channels_last"] >= need
    return row


class ReplayGate(nn.Module):
    """Runs a gate as usual (its cost stays in the timing) but answers the next of a list of
    decision maps, one per call, cycling."""

    def __init__(self, gate: nn.Module, decisions: list[torch.Tensor]) -> None:
        super().__init__()
        self.gate, self.decisions, self.calls = gate, decisions, 0

    def forward(self, x, x_prev, budget, tau=1.0, generator=None):
        out = self.gate(x, x_prev, budget, tau, generator)
        decision = self.decisions[self.calls % len(self.decisions)]
        self.calls += 1
        return out._replace(decision=decision)


def sampled_decisions(grid: tuple[int, int], reuse: float, coarse: float, seed: int, batch: int = 1) -> torch.Tensor:
    """int32 [batch, 1, th, tw], each tile drawn independently with the mix's probabilities, so
    the number of active tiles varies from frame to frame as it does on video."""
    u = torch.rand(batch, 1, *grid, generator=torch.Generator().manual_seed(seed))
    d = torch.full(u.shape, DENSE, dtype=torch.int32)
    d[u < reuse + coarse] = COARSE
    d[u < reuse] = REUSE
    return d


def per_layer(mix: Mix | dict[str, Mix], names: list[str]) -> list[Mix]:
    """One mix for every layer, or each named layer's own."""
    return [mix[name] for name in names] if isinstance(mix, dict) else [mix] * len(names)


def bench_encode_key(model: SpVOS, height: int, width: int, mix: Mix | dict[str, Mix], repeats: int,
                     warmup: int) -> dict:
    frame0, frame1 = torch.rand(1, 3, height, width), torch.rand(1, 3, height, width)
    with torch.no_grad():
        first = model.encode_key(frame0, dense=True)
    tile = model.config.tile
    outputs = [t for b in range(len(first.state) // 3) for t in first.state[3 * b + 1: 3 * b + 3]]
    grids = [(-(-y.shape[2] // tile), -(-y.shape[3] // tile)) for y in outputs]
    frames = warmup + repeats
    mixes = per_layer(mix, model.gated_conv_names())
    per_frame = [[sampled_decisions(g, *m, seed=1000 * f + i) for i, (g, m) in enumerate(zip(grids, mixes))]
                 for f in range(frames)]
    # The sparse path runs as the inference core runs it (NCHW frame and weights: the gated path
    # switches to channels-last after the stem by itself), its gates replaying the sampled
    # decisions. Dense: stm's path as it is, and a channels-last copy of it.
    replay = copy.deepcopy(model)
    for i, name in enumerate(list(replay.gates.keys())):
        replay.gates[name] = ReplayGate(replay.gates[name], [per_frame[f][i] for f in range(frames)])
    dense_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    frame_cl = frame1.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():  # steady state: the state of a sparse frame (channels-last, like its maps)
        state = replay.encode_key(frame0, replay.encode_key(frame0, dense=True).state, model.config.budget).state
    candidates = {
        "dense": lambda: model.encode_key(frame1, dense=True),
        "dense_channels_last": lambda: dense_cl.encode_key(frame_cl, dense=True),
        "sparse": lambda: replay.encode_key(frame1, state, model.config.budget),
    }
    with torch.no_grad():
        times = measure(candidates, repeats, warmup)
    cost = SparseCostModel(model, height, width)
    realized = statistics.mean(cost.frame_cost(decisions, key_dense=False).realized_gflops for decisions in per_frame)
    return _stage_row(mix, times, cost.key_dense_flops / 1e9, realized)


def _stage_row(mix: Mix | dict[str, Mix], times: dict, dense_gflops: float, realized_gflops: float) -> dict:
    shown = "realized" if isinstance(mix, dict) else {"reuse": mix[0], "coarse": mix[1]}
    row = {"mix": shown, "times": times, "dense_gflops": dense_gflops,
           "realized_gflops": realized_gflops}
    row.update(_verdict({"dense_nchw_ms": times["dense"]["median_ms"],
                         "dense_channels_last_ms": times["dense_channels_last"]["median_ms"],
                         "sparse_ms": times["sparse"]["median_ms"], "flop_ratio": realized_gflops / dense_gflops}))
    return row


def bench_decode(model: SpVOS, height: int, width: int, objects: int, capacity: int, mix: Mix | dict[str, Mix],
                 repeats: int, warmup: int) -> dict:
    """The whole ``decode`` stage (memory read + decoder, ``objects`` objects, ``capacity`` memory
    slots) dense against gated, the decoder gates replaying decisions sampled per object."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        f = model.encode_key(torch.rand(1, 3, height, width, generator=g), dense=True).features
    h, w = f.key.shape[2:]
    memory = (torch.randn(1, model.key_dim, capacity, h, w, generator=g),
              torch.randn(1, objects, model.value_dim, capacity, h, w, generator=g),
              torch.ones(1, capacity, dtype=torch.bool), torch.ones(1, objects, dtype=torch.bool))
    inputs = (f.key, f.feat16, f.skip8, f.skip4, *memory)
    with torch.no_grad():
        first = model.segment_sparse(*inputs, dense=True)
    tile = model.config.tile
    outputs = [t for b in range(len(first.state) // 3) for t in first.state[3 * b + 1: 3 * b + 3]]
    grids = [(-(-y.shape[2] // tile), -(-y.shape[3] // tile)) for y in outputs]
    frames = warmup + repeats
    mixes = per_layer(mix, model.decoder_conv_names())
    per_frame = [[sampled_decisions(gr, *m, seed=2000 * fr + i, batch=objects) for i, (gr, m) in enumerate(zip(grids, mixes))]
                 for fr in range(frames)]
    replay = copy.deepcopy(model)
    for i, name in enumerate(list(replay.decoder_gates.keys())):
        replay.decoder_gates[name] = ReplayGate(replay.decoder_gates[name], [per_frame[fr][i] for fr in range(frames)])
    dense_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    inputs_cl = tuple(t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t for t in inputs)
    budget = model.config.budget
    with torch.no_grad():  # steady state: the state a sparse decode leaves (channels-last, like its maps)
        state = replay.segment_sparse(*inputs, first.state, budget).state
    candidates = {
        "dense": lambda: model.segment(*inputs),
        "dense_channels_last": lambda: dense_cl.segment(*inputs_cl),
        "sparse": lambda: replay.segment_sparse(*inputs, state, budget),
    }
    with torch.no_grad():
        times = measure(candidates, repeats, warmup)
    cost = SparseCostModel(model, height, width, objects)
    segment = step_gflops(model, height, width, objects, capacity)["segment"]
    read = segment - cost.decode_dense_flops / 1e9  # the memory read, not gated
    dec = cost.decoder
    realized = statistics.mean(read + (cost.decode_dense_flops - dec.dense_flops + dec.gate_flops
                                       + dec.spent_flops(decisions)) / 1e9 for decisions in per_frame)
    return _stage_row(mix, times, segment, realized)


def print_tables(layers: list[dict], together: list[dict], stages: dict[str, dict]) -> None:
    print("\nper layer: median ms (dense NCHW | dense channels-last) and sparse speed-up vs channels-last "
          "(FLOP ratio), * = meets 0.6 / ratio")
    for r in layers:
        cells = []
        for key, ratio in r["flop_ratio"].items():
            speed = r["times"]["dense_channels_last"]["median_ms"] / r["times"][key]["median_ms"]
            cells.append(f"{speed:5.2f}x({ratio:.2f}){'*' if speed >= 0.6 / max(ratio, 1e-9) else ' '}")
        print(f"{r['layer']:24s} {r['times']['dense_nchw']['median_ms']:6.2f} | "
              f"{r['times']['dense_channels_last']['median_ms']:6.2f}  " + " ".join(cells))
    print("\nall gated layers together")
    print(f"{'mix':24s} {'ratio':>6s} {'nchw ms':>8s} {'cl ms':>8s} {'sparse':>8s} {'x nchw':>7s} {'x cl':>7s} "
          f"{'need':>6s}  pass(nchw/cl)")
    for r in together:
        print(f"{r['mix']:24s} {r['flop_ratio']:6.3f} {r['dense_nchw_ms']:8.2f} {r['dense_channels_last_ms']:8.2f} "
              f"{r['sparse_ms']:8.2f} {r['speedup_vs_nchw']:7.2f} {r['speedup_vs_channels_last']:7.2f} "
              f"{r['required_speedup']:6.2f}  {r['passes_vs_nchw']}/{r['passes_vs_channels_last']}")
    for stage, e in stages.items():
        print(f"\n{stage} at mix {e['mix']}: dense {e['dense_gflops']:.2f} GFLOPs, realized {e['realized_gflops']:.2f} "
              f"(ratio {e['flop_ratio']:.3f}); median ms dense {e['dense_nchw_ms']:.1f}, dense channels-last "
              f"{e['dense_channels_last_ms']:.1f}, sparse {e['sparse_ms']:.1f}; speed-up {e['speedup_vs_nchw']:.2f}x "
              f"(vs channels-last {e['speedup_vs_channels_last']:.2f}x), needed {e['required_speedup']:.2f}x")
    dense = sum(e["dense_gflops"] for e in stages.values())
    realized = sum(e["realized_gflops"] for e in stages.values())
    print(f"whole step (encode_key + decode): {dense:.1f} -> {realized:.1f} GFLOPs ({realized / dense:.3f})")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=854)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--tile", type=int, default=SpVOSConfig.tile)
    ap.add_argument("--stages", default=",".join(SpVOSConfig.gated_stages), help="gated stages, comma-separated")
    ap.add_argument("--decoder", default=",".join(SpVOSConfig.gated_decoder),
                    help="gated decoder blocks, comma-separated (compress, up8, up4)")
    ap.add_argument("--objects", type=int, default=2, help="objects in the decoder layers and the decode stage")
    ap.add_argument("--capacity", type=int, default=8, help="memory slots of the decode stage")
    ap.add_argument("--mix", default="0.6,0.15", help="REUSE,COARSE shares for the whole-stage figures")
    ap.add_argument("--shares", help="spvos_budget_curve.py JSON: also time every layer and the stages at the "
                                     "shares its trained gates took (with --budget)")
    ap.add_argument("--budget", type=float, default=None, help="the budget row of --shares")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="cpu: this thread's CPU time instead of wall time (needs --threads 1); less "
                         "sensitive to other processes on a busy machine, blind to waiting")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    if args.clock == "cpu" and args.threads != 1:
        ap.error("--clock cpu measures one thread: use it with --threads 1")
    if (args.shares is None) != (args.budget is None):
        ap.error("--shares and --budget go together")
    global CLOCK
    CLOCK = time.thread_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    height, width = -(-args.height // 16) * 16, -(-args.width // 16) * 16  # the inference core's padding
    decoder = tuple(b for b in args.decoder.split(",") if b)
    model = SpVOS(SpVOSConfig(tile=args.tile, gated_stages=tuple(args.stages.split(",")), gated_decoder=decoder)).eval()
    load_before = os.getloadavg()
    layer_mixes = realized_mixes(args.shares, args.budget) if args.shares else None
    layers = bench_layers(model, height, width, args.objects, args.repeats, args.warmup, layer_mixes)
    together = summarise_layers(layers)
    mix = layer_mixes or tuple(float(v) for v in args.mix.split(","))
    stages = {"encode_key": bench_encode_key(model, height, width, mix, args.repeats, args.warmup),
              "decode": bench_decode(model, height, width, args.objects, args.capacity, mix, args.repeats,
                                     args.warmup)}
    result = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
                     "torch": torch.__version__, "threads": torch.get_num_threads(), "load_average_before": load_before,
                     "load_average_after": os.getloadavg()},
        "settings": {"frame": [args.height, args.width], "padded": [height, width], "tile": args.tile, "clock": args.clock,
                      "stages": args.stages.split(","), "decoder": list(decoder), "objects": args.objects,
                      "capacity": args.capacity, "repeats": args.repeats, "warmup": args.warmup,
                      "shares": args.shares, "budget": args.budget, "realized_mixes": layer_mixes},
        "layers": layers, "gated_layers_together": together, **stages,
    }
    print_tables(layers, together, stages)
    print(f"\nload average before/after: {load_before} / {result['machine']['load_average_after']} "
          f"({os.cpu_count()} CPUs; other work on the machine makes these figures noisy)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
