"""Parity of exported engines with their torch wrappers, on real inputs.

Real inputs: the frames of a synthetic clip (:func:`vseg.data.synth_vos.generate_vos` at the
export size), its first-frame mask, and the memory / STFF / gate state that running the torch
wrappers over those frames produces (:func:`record_vos_cases`). Every engine call of that run
is a case; :func:`check_parity` runs each case through onnxruntime and through the torch
wrapper and compares every output.

Figures per output (the maximum over the cases):
- float outputs: ``max_abs`` = max |onnx - torch|, ``max_rel`` = max_abs / max |torch|.
  Checked: max_abs <= tolerance * max(1, max |torch|).
- ``logits`` additionally ``prob_max_abs``, the max abs error of softmax(logits, 1), which is
  what is checked: where an object's probability saturates (1 - p near float eps) a 1-ulp
  difference in the sigmoid moves its logit by 1e-2 or more while the probabilities, which
  the runtime uses, agree to 1e-7.
- integer outputs (spvos decisions): ``mismatches`` out of ``elements``; checked: none.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vseg.data.palette import read_mask
from vseg.data.synth_vos import generate_vos, sequence_name
from vseg.errors import VsegError
from vseg.export.graphs import DECISION, STATE_IN, STATE_OUT, example_inputs
from vseg.models.stm import MemoryNetwork

Cases = dict[str, list[dict[str, torch.Tensor]]]


def synthetic_clip(height: int, width: int, frames: int, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """A synthetic VOS clip at H x W: (frames float32 [T, 1, 3, H, W] in [0, 1], first-frame
    ids uint8 [H, W]), rendered by generate_vos into a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="vseg-parity-") as tmp:
        generate_vos(tmp, clips=1, seed=seed, frames=frames, height=height, width=width, val_fraction=0.0)
        name = sequence_name(seed, 0)
        images = [np.asarray(Image.open(p).convert("RGB"))
                  for p in sorted((Path(tmp) / "JPEGImages" / "480p" / name).glob("*.jpg"))]
        ids, _ = read_mask(Path(tmp) / "Annotations" / "480p" / name / "00000.png")
    rgb = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255.0)
    return rgb.unsqueeze(1), ids


def first_frame_masks(ids: np.ndarray, objects: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids [H, W] -> (masks float32 [1, K, H, W] of the first K object ids ascending, zeros for
    the rest; object_valid bool [1, K])."""
    present = [int(v) for v in np.unique(ids) if v != 0][:objects]
    masks = torch.zeros(1, objects, *ids.shape)
    for k, v in enumerate(present):
        masks[0, k] = torch.from_numpy(ids == v).float()
    valid = torch.zeros(1, objects, dtype=torch.bool)
    valid[0, :len(present)] = True
    return masks, valid


def _budgets(model: MemoryNetwork) -> list[float]:
    """Budgets the sparse frames cycle through: the default, then the trained range's ends."""
    cfg = model.config
    return [cfg.budget, cfg.budget_low, cfg.budget_high]


@torch.inference_mode()
def record_vos_cases(graphs: dict[str, torch.nn.Module], model: MemoryNetwork, frames: torch.Tensor,
                     masks: torch.Tensor, object_valid: torch.Tensor, capacity: int) -> Cases:
    """Run the torch wrappers over a clip and record every engine call's inputs.

    frames [T, 1, 3, H, W]; masks [1, K, H, W] (frame 0's objects); object_valid [1, K].
    Frame 0 is encoded (spvos: all-DENSE) and written to memory with its mask; every later
    frame is encoded (lite: with the previous frame's feature and foreground; spvos: sparse,
    with the previous state, at budgets cycling through the default and the trained range's
    ends), decoded against the memory so far (spvos's gated decoder: the first decode dense,
    later ones sparse from the previous decode's state), and written to the next free slot while any is
    left. Returns {engine: [inputs by name, ...]}.
    """
    height, width = frames.shape[-2:]
    key_graph, value_graph, decode_graph = graphs["encode_key"], graphs["encode_value"], graphs["decode"]
    base = example_inputs(model, height, width, masks.shape[1], capacity)
    key_inputs = dict(base["encode_key"])
    memory = {name: torch.zeros_like(base["decode"][name]) for name in ("mem_keys", "mem_values", "mem_valid")}
    cases: Cases = {"encode_key": [], "encode_value": [], "decode": []}
    budgets = _budgets(model) if "budget" in key_inputs else []
    # spvos's gated decoder: dense, budget and state inputs after the standard ones
    decode_extra = {n: v for n, v in base["decode"].items() if n in ("dense", "budget") or n.startswith(STATE_IN)}
    for t, frame in enumerate(frames):
        key_inputs["frame"] = frame
        cases["encode_key"].append(dict(key_inputs))
        feats = dict(zip(key_graph.output_names, key_graph(*key_inputs.values())))
        if t == 0:
            object_probs = masks
            probs = torch.cat([1 - masks.sum(1, keepdim=True), masks], 1)
        else:
            decode_inputs = {**{n: feats[n] for n in ("key", "feat16", "skip8", "skip4")}, **memory,
                             "object_valid": object_valid, **decode_extra}
            cases["decode"].append(decode_inputs)
            decoded = dict(zip(decode_graph.output_names, decode_graph(*decode_inputs.values())))
            probs = torch.softmax(decoded["logits"], 1)
            if decode_extra:  # the next decode is sparse, from this one's state
                decode_extra.update(dense=torch.zeros(1, dtype=torch.bool),
                                    budget=torch.tensor([budgets[t % len(budgets)]], dtype=torch.float32))
                for name in decode_extra:
                    if name.startswith(STATE_IN):
                        decode_extra[name] = decoded[STATE_OUT + name[len(STATE_IN):]]
            object_probs = probs[:, 1:]
        if t < capacity:
            value_inputs = {"frame": frame, "masks": object_probs, "feat16": feats["feat16"]}
            cases["encode_value"].append(value_inputs)
            (values,) = value_graph(*value_inputs.values())
            memory = {"mem_keys": memory["mem_keys"].clone(), "mem_values": memory["mem_values"].clone(),
                      "mem_valid": memory["mem_valid"].clone()}
            memory["mem_keys"][:, :, t] = feats["key"]
            memory["mem_values"][:, :, :, t] = values
            memory["mem_valid"][:, :, t] = True
            if t > 0:  # an object missing from some frames, so the per-object read is exercised
                memory["mem_valid"][:, t % masks.shape[1], t] = t % 3 != 0
        # the next frame's key-encoder inputs: the state this frame leaves behind
        if "prev_feat16" in key_inputs:
            key_inputs.update(prev_feat16=feats["next_feat16"], prev_fg=probs[:, :1].neg().add(1))
        if budgets:
            key_inputs.update(dense=torch.zeros(1, dtype=torch.bool),
                              budget=torch.tensor([budgets[t % len(budgets)]], dtype=torch.float32))
            for name in key_inputs:
                if name.startswith(STATE_IN):
                    key_inputs[name] = feats[STATE_OUT + name[len(STATE_IN):]]
    return cases


def decision_shares(cases: Cases, graphs: dict[str, torch.nn.Module]) -> dict[str, dict[str, float]] | None:
    """Per gated engine (encode_key, decode), the share of REUSE / COARSE / DENSE tiles over the
    sparse frames of its recorded cases; None for models without gates or without a sparse frame."""
    shares = {}
    for engine, graph in graphs.items():
        counts = torch.zeros(3, dtype=torch.float64)
        for inputs in cases.get(engine, []):
            if "dense" not in inputs or bool(inputs["dense"].any()):
                continue
            with torch.inference_mode():
                outputs = dict(zip(graph.output_names, graph(*inputs.values())))
            for name, value in outputs.items():
                if name.startswith(DECISION):
                    counts += torch.bincount(value.flatten().long(), minlength=3)[:3].double()
        if counts.sum() > 0:
            shares[engine] = dict(zip(("reuse", "coarse", "dense"), (counts / counts.sum()).tolist()))
    return shares or None


def compare_output(name: str, expected: np.ndarray, actual: np.ndarray) -> dict[str, float | int]:
    """Error figures of one output (see the module docstring)."""
    if expected.shape != actual.shape:
        return {"shape_mismatch": 1, "expected": list(expected.shape), "actual": list(actual.shape)}
    if not np.issubdtype(expected.dtype, np.floating):
        return {"mismatches": int((expected != actual).sum()), "elements": int(expected.size)}
    diff = np.abs(expected.astype(np.float64) - actual.astype(np.float64))
    scale = float(np.abs(expected).max(initial=0.0))
    figures = {"max_abs": float(diff.max(initial=0.0)), "scale": scale}
    figures["max_rel"] = figures["max_abs"] / scale if scale > 0 else figures["max_abs"]
    if name == "logits":
        p_expected, p_actual = (torch.softmax(torch.from_numpy(a).double(), 1).numpy() for a in (expected, actual))
        figures["prob_max_abs"] = float(np.abs(p_expected - p_actual).max(initial=0.0))
    return figures


def merge_figures(old: dict | None, new: dict) -> dict:
    """Worst case of two figure dicts of the same output (max of each number)."""
    if old is None:
        return dict(new)
    return {k: max(old[k], new[k]) if isinstance(new[k], (int, float)) else new[k] for k in new}


def failure(name: str, figures: dict, tolerance: float) -> str | None:
    """Why one output's figures fail the tolerance (None when they pass)."""
    if "shape_mismatch" in figures:
        return f"shape {figures['actual']} instead of {figures['expected']}"
    if "mismatches" in figures:
        return f"{figures['mismatches']} of {figures['elements']} values differ" if figures["mismatches"] else None
    if "prob_max_abs" in figures:
        err = figures["prob_max_abs"]
        return f"max abs probability error {err:.3g} > tolerance {tolerance:g}" if err > tolerance else None
    limit = tolerance * max(1.0, figures["scale"])
    err = figures["max_abs"]
    return f"max abs error {err:.3g} > tolerance {limit:.3g} ({tolerance:g} x max(1, |ref| {figures['scale']:.3g}))" \
        if err > limit or not np.isfinite(err) else None


def check_parity(graphs: dict[str, torch.nn.Module], sessions: dict, cases: Cases, tolerance: float) -> dict:
    """Run every case through onnxruntime and torch; raise VsegError past the tolerance.

    graphs / sessions: {engine: torch wrapper / onnxruntime session}; cases from
    :func:`record_vos_cases` (or any {engine: [inputs by name]}). Returns {engine: {"cases": n,
    "outputs": {output: figures}}}.
    """
    report = {}
    for engine, engine_cases in cases.items():
        graph, session = graphs[engine], sessions[engine]
        worst: dict[str, dict] = {}
        for inputs in engine_cases:
            with torch.inference_mode():
                expected = [t.cpu().numpy() for t in graph(*inputs.values())]
            feed = {name: t.cpu().numpy() for name, t in inputs.items()}
            actual = session.run(list(graph.output_names), feed)
            for name, e, a in zip(graph.output_names, expected, actual):
                worst[name] = merge_figures(worst.get(name), compare_output(name, e, a))
        for name, figures in worst.items():
            reason = failure(name, figures, tolerance)
            if reason is not None:
                raise VsegError(f"export parity failed: engine {engine}, output {name}: {reason}")
        report[engine] = {"cases": len(engine_cases), "outputs": worst}
    return report


__all__ = [
    "check_parity",
    "compare_output",
    "decision_shares",
    "failure",
    "first_frame_masks",
    "record_vos_cases",
    "synthetic_clip",
]
