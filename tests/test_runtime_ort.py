"""The ort backend on engine folders exported in the test: parity with the torch backend for
stm and lite (spvos: test_runtime_ort_spvos.py), and engine folders a user can get wrong."""

import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from cli_helpers import one_error_line, vseg
from onnx import TensorProto, helper

from vseg.data.palette import read_mask, write_mask
from vseg.data.synth_vos import generate_vos
from vseg.data.video import read_frames
from vseg.errors import InputError
from vseg.export.export_vos import export_engines
from vseg.metrics.davis import evaluate_davis
from vseg.models.registry import build_model, save_model
from vseg.runtime.backends import OrtBackend, TorchBackend, open_backend
from vseg.runtime.inference_core import InferenceCore
from vseg.runtime.mirrored import MirroredCore
from vseg.runtime.run_vos import run_vos

TINY = {"key_widths": (8, 16, 16), "value_widths": (8, 16, 16), "decoder_widths": (16, 16, 16),
        "key_dim": 16, "value_dim": 16}
# lite reads its whole memory (4 slots x 4 x 6 pixels): with the previous frame kept, the clip's
# consecutive frames put near-identical keys in the ring and the previous-frame slot, whose
# affinities to this random model's queries tie to ~1e-8 at the 20th place, so a rounding
# difference between the backends would flip which is picked (a 3e-4 change in the output).
CONFIGS = {"stm": TINY, "lite": {"width": 0.25, "value_width": 0.25, "decoder_widths": (16, 16, 16), "top_k": 96}}
H, W, FRAMES = 64, 96, 8
SEQ = "synth-5-0000"


def shaken(model):
    """A random lite that tells objects apart: freshly initialised, it gives every object the
    same probability, so ids would hang on rounding. Noise on the value encoder and decoder
    weights fixes that (stm's random objects differ already)."""
    with torch.no_grad():
        for part in (model.value_encoder, model.value_fusion, model.decoder):
            for p in part.parameters():
                p.add_(torch.randn_like(p) * 0.2)
    return model


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The clip, and per model its weights file and engine folder (custom flavour)."""
    root = tmp_path_factory.mktemp("ort")
    generate_vos(root / "data", clips=1, seed=5, frames=FRAMES, height=H, width=W, val_fraction=0.0)
    objects = len(np.unique(read_mask(root / "data" / "Annotations" / "480p" / SEQ / "00000.png")[0])) - 1
    made = {}
    for name, config in CONFIGS.items():
        torch.manual_seed(0)
        model = build_model(name, **config)
        if name == "lite":
            model = shaken(model)
        weights = save_model(model, root / f"{name}.safetensors")
        export_engines(model, root / f"engines-{name}", height=H, width=W, objects=objects, capacity=4,
                       parity_frames=2, weights=weights)
        made[name] = (weights, root / f"engines-{name}")
    return root, made


def clip_paths(root):
    return root / "data" / "videos" / f"{SEQ}.mp4", root / "data" / "Annotations" / "480p" / SEQ / "00000.png"


def torch_and_ort(made, name, core=InferenceCore):
    """Two cores (InferenceCore or MirroredCore), one per backend, memory writes every 3 frames."""
    weights, engines = made[name]
    return {"torch": core(open_backend("torch", name, weights=weights), mem_every=3),
            "ort": core(open_backend("ort", name, engines=engines), mem_every=3)}


def step_both(cores, frame, *args, **kwargs):
    """One step of each core; their probabilities agree within 1e-4. Returns the results by backend."""
    results = {kind: core.step(frame, *args, **kwargs) for kind, core in cores.items()}
    # Random weights leave near-ties between objects, so ids may flip where probabilities agree.
    torch.testing.assert_close(results["ort"].probabilities, results["torch"].probabilities, atol=1e-4, rtol=0)
    return results


@pytest.mark.slow
@pytest.mark.parametrize("name", ["stm", "lite"])
def test_ort_engines_match_the_torch_backend(setup, name):
    root, made = setup
    video, mask = clip_paths(root)
    frames, first = read_frames(video), read_mask(mask)[0]
    cores = torch_and_ort(made, name)
    for t, frame in enumerate(frames):
        results = step_both(cores, frame, first if t == 0 else None)
        assert results["ort"].kind == results["torch"].kind
        for kind, result in results.items():
            write_mask(root / f"pred-{name}-{kind}" / SEQ / f"{t:05d}.png", result.ids)
    scores = {kind: evaluate_davis(root / f"pred-{name}-{kind}", root / "data" / "Annotations" / "480p")
              ["dataset"]["J&F-Mean"] for kind in cores}
    assert abs(scores["torch"] - scores["ort"]) <= 0.2
    assert cores["ort"].summary()["memory_capacity"] == 4  # the engine folder's T
    assert cores["ort"].backend.describe()["providers"][-1] == "CPUExecutionProvider"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["stm", "lite"])
def test_an_object_entering_later_runs_the_same_on_ort(setup, name):
    """The clip's last object given on frame 3 instead of 0: its slot switched off, then pinned
    in memory and read on its own, through the engines as through torch."""
    root, made = setup
    video, _ = clip_paths(root)
    annotations = root / "data" / "Annotations" / "480p" / SEQ
    frames = read_frames(video)
    gt = [read_mask(annotations / f"{t:05d}.png")[0] for t in (0, 3)]
    late = int(gt[0].max())
    first, entering = np.where(gt[0] == late, 0, gt[0]).astype(np.uint8), np.where(gt[1] == late, late, 0).astype(np.uint8)
    cores = torch_and_ort(made, name)
    for t, frame in enumerate(frames):
        mask = first if t == 0 else entering if t == 3 else None
        results = step_both(cores, frame, mask, later_ids=[late] if t == 0 else ())
        assert results["ort"].kind == results["torch"].kind == ("mask" if t == 3 else results["ort"].kind)
    assert cores["ort"].memory.pinned_slots == cores["torch"].memory.pinned_slots == [0, 1]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["stm", "lite"])
def test_flip_augmentation_runs_the_same_on_ort(setup, name):
    """MirroredCore (vseg run --flip) through the engines as through torch: two runs over one
    backend, each with its own memory and (lite) its own previous-frame state."""
    root, made = setup
    video, mask = clip_paths(root)
    frames, first = read_frames(video), read_mask(mask)[0]
    cores = torch_and_ort(made, name, MirroredCore)
    for t, frame in enumerate(frames):
        step_both(cores, frame, first if t == 0 else None)
    assert cores["ort"].summary()["engine_ms"]["decode"]["calls"] == 2 * (len(frames) - 1)


def test_engines_run_small_frames_at_the_manifests_min_side(setup, tmp_path):
    """min_side in an engine folder's config: a 48x64 clip runs scaled up to the engines' 64x96
    (64 / 48 * 64 = 85.3, padded to 96) and its masks come back at 48x64."""
    root, made = setup
    engines = tmp_path / "engines"
    shutil.copytree(made["stm"][1], engines)
    manifest = json.loads((engines / "manifest.json").read_text())
    manifest["config"]["min_side"] = H
    (engines / "manifest.json").write_text(json.dumps(manifest))
    small = tmp_path / "small"
    generate_vos(small, clips=1, seed=5, frames=3, height=48, width=64, val_fraction=0.0)
    first = small / "Annotations" / "480p" / SEQ / "00000.png"
    with OrtBackend(engines) as backend:
        summary = run_vos(small / "videos" / f"{SEQ}.mp4", first, backend, tmp_path / "pred")
    assert summary["working_size"] == [64, 85] and summary["engine_size"] == [H, W]
    assert summary["written"] == 3 and read_mask(tmp_path / "pred" / "00002.png")[0].shape == (48, 64)
    np.testing.assert_array_equal(read_mask(tmp_path / "pred" / "00000.png")[0], read_mask(first)[0])


def test_engine_folders_a_user_gets_wrong(setup, tmp_path):
    root, made = setup
    video, mask = clip_paths(root)
    line = one_error_line(vseg("run", str(video), "--mask", str(mask), "--model", "stm", "--backend", "ort",
                               "--engines", str(made["lite"][1]), "--out", str(tmp_path / "o")))
    assert "engines of a 'lite' model, not 'stm'" in line
    with pytest.raises(InputError, match="not an engine folder"):
        OrtBackend(tmp_path)

    # an engine whose graph holds a vseg op nobody implements
    foreign = tmp_path / "foreign"
    shutil.copytree(made["stm"][1], foreign)
    node = helper.make_node("Frobnicate", ["frame"], ["key"], domain="vseg")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("frame", TensorProto.FLOAT, [1, 3, H, W])],
                              [helper.make_tensor_value_info("key", TensorProto.FLOAT, [1, 3, H, W])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("vseg", 1)]),
              foreign / "encode_key.onnx")
    line = one_error_line(vseg("run", str(video), "--mask", str(mask), "--model", "stm", "--backend", "ort",
                               "--engines", str(foreign), "--out", str(tmp_path / "o")))
    assert "encode_key.onnx" in line and "vseg::Frobnicate" in line

    # frames of another size, more objects than the engines' slots
    small = tmp_path / "small"
    generate_vos(small, clips=1, seed=5, frames=2, height=48, width=64, val_fraction=0.0)
    with OrtBackend(made["stm"][1]) as backend, \
            pytest.raises(InputError, match=f"engines take {H}x{W} frames but this video pads to 48x64"):
        run_vos(small / "videos" / f"{SEQ}.mp4", small / "Annotations" / "480p" / SEQ / "00000.png",
                backend, tmp_path / "o2")
    scaled = tmp_path / "scaled"  # a model whose min_side scales the 48x64 clip past the engines' size
    shutil.copytree(made["stm"][1], scaled)
    manifest = json.loads((scaled / "manifest.json").read_text())
    manifest["config"]["min_side"] = 80
    (scaled / "manifest.json").write_text(json.dumps(manifest))
    with OrtBackend(scaled) as backend, pytest.raises(InputError, match="run scaled up to the model's min_side 80"):
        run_vos(small / "videos" / f"{SEQ}.mp4", small / "Annotations" / "480p" / SEQ / "00000.png",
                backend, tmp_path / "o4")
    narrow = tmp_path / "narrow"
    shutil.copytree(made["stm"][1], narrow)
    manifest = json.loads((narrow / "manifest.json").read_text())
    manifest["objects"] = 0
    (narrow / "manifest.json").write_text(json.dumps(manifest))
    with OrtBackend(narrow) as backend, pytest.raises(InputError, match="engines track at most 0 object"):
        run_vos(video, mask, backend, tmp_path / "o3")
    with pytest.raises(InputError, match="no TensorRT plans; build them with `vseg build"):
        open_backend("trt", "stm", engines=made["stm"][1])
    assert TorchBackend(build_model("stm", **TINY)).weights_id() != OrtBackend(made["stm"][1]).weights_id()
