"""The ort backend on a spvos engine folder (custom flavour: vseg::GatedSparseConv2d run by
onnxruntime-extensions) exported in the test: parity with the torch backend, gate decisions
included, and profiling at the engines' own size."""

import numpy as np
import pytest
import torch

from vseg.data.palette import read_mask, write_mask
from vseg.data.synth_vos import generate_vos
from vseg.data.video import read_frames
from vseg.export.export_vos import export_engines
from vseg.metrics.davis import evaluate_davis
from vseg.models.registry import build_model, save_model
from vseg.runtime.backends import OrtBackend, open_backend
from vseg.runtime.inference_core import InferenceCore
from vseg.runtime.profile import profile_vos

SPVOS = {"key_widths": (8, 16, 16), "value_widths": (8, 16, 16), "decoder_widths": (16, 16, 16),
         "key_dim": 16, "value_dim": 16, "gate_hidden": 4}
H, W, FRAMES = 64, 96, 8
SEQ = "synth-5-0000"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The clip, the spvos weights file and its engine folder."""
    root = tmp_path_factory.mktemp("ort-spvos")
    generate_vos(root / "data", clips=1, seed=5, frames=FRAMES, height=H, width=W, val_fraction=0.0)
    objects = len(np.unique(read_mask(root / "data" / "Annotations" / "480p" / SEQ / "00000.png")[0])) - 1
    torch.manual_seed(0)
    model = build_model("spvos", **SPVOS)
    weights = save_model(model, root / "spvos.safetensors")
    export_engines(model, root / "engines", height=H, width=W, objects=objects, capacity=4, parity_frames=2,
                   weights=weights)
    return root, weights, root / "engines"


@pytest.mark.slow
def test_ort_spvos_engines_match_the_torch_backend(setup):
    root, weights, engines = setup
    frames = read_frames(root / "data" / "videos" / f"{SEQ}.mp4")
    first = read_mask(root / "data" / "Annotations" / "480p" / SEQ / "00000.png")[0]
    options = {"mem_every": 3, "dense_every": 2, "budget": 0.3}
    cores = {"torch": InferenceCore(open_backend("torch", "spvos", weights=weights), **options),
             "ort": InferenceCore(open_backend("ort", "spvos", engines=engines), **options)}
    for t, frame in enumerate(frames):
        results = {kind: core.step(frame, first if t == 0 else None) for kind, core in cores.items()}
        # Random weights leave near-ties between objects, so ids may flip where probabilities agree.
        torch.testing.assert_close(results["ort"].probabilities, results["torch"].probabilities, atol=1e-4, rtol=0)
        assert results["ort"].kind == results["torch"].kind
        for kind, result in results.items():
            write_mask(root / f"pred-{kind}" / SEQ / f"{t:05d}.png", result.ids)
    scores = {kind: evaluate_davis(root / f"pred-{kind}", root / "data" / "Annotations" / "480p")
              ["dataset"]["J&F-Mean"] for kind in cores}
    assert abs(scores["torch"] - scores["ort"]) <= 0.2
    summaries = {kind: core.summary() for kind, core in cores.items()}
    assert summaries["ort"]["sparse"] == summaries["torch"]["sparse"]  # the same gate decisions, frame by frame
    assert summaries["ort"]["frame_kinds"] == {"first": 1, "sparse": 3, "refresh": 2, "memory": 2}


def test_profile_on_engines_makes_a_clip_of_their_size(setup):
    _, _, engines = setup
    with OrtBackend(engines) as backend:
        result = profile_vos(backend, frames=4, warmup=1, budget=0.3)
    assert result["engine_size"] == [H, W] and result["synthetic_clip"] and result["frames"] == 4
    assert result["sparse"]["budget"] == 0.3 and result["gflops"]["realized_per_frame"] > 0
    assert result["backend"]["flavor"] == "custom" and result["engine_ms"]["encode_key"]["calls"] == 4
