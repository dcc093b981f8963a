"""The weights shipped in vseg/weights load by name and do their job on fresh synthetic data."""

import numpy as np
import pytest

from vseg.data.synth_vos import generate_vos
from vseg.data.synth_vss import generate_vss
from vseg.models.weights import WEIGHTS_DIR, load_named_model
from vseg.runtime.inference_core import InferenceCore
from vseg.train.arseg_eval import evaluate_arseg
from vseg.train.validate import validate_vos


@pytest.mark.parametrize("path", sorted(WEIGHTS_DIR.glob("*.safetensors")), ids=lambda p: p.stem)
def test_each_shipped_file_has_a_model_card_and_loads_by_name(path):
    assert path.with_suffix(".md").is_file()
    assert path.stat().st_size < 25 * 2**20
    load_named_model(path.stem)


def test_shipped_arseg_segments_an_unseen_clip(tmp_path, one_torch_thread):
    # one 360x480 clip of a seed used neither in training nor in the held-out set, 2 GOPs
    generate_vss(tmp_path, clips=1, seed=5, frames=24, height=360, width=480, val_fraction=0.0)
    result = evaluate_arseg(load_named_model("arseg"), tmp_path, "train")
    accuracy = {m: r["pixel_accuracy"] for m, r in result["methods"].items()}
    # measured 97.3 / 95.4 / 96.8 (full / LR alone / AR-Seg); a mis-loaded branch falls far below
    assert accuracy["full"] > 95 and accuracy["arseg"] > 95
    assert accuracy["arseg"] > accuracy["lr_only"]


@pytest.fixture(scope="module")
def unseen_vos_clips(tmp_path_factory):
    """Two 160x288 clips of a seed used neither in training nor in the held-out set (all val)."""
    root = tmp_path_factory.mktemp("seed6")
    generate_vos(root, clips=2, seed=6, frames=15, height=160, width=288, val_fraction=1.0, videos=False)
    return root


def test_shipped_spvos_saves_work_and_keeps_its_dense_masks_on_unseen_clips(unseen_vos_clips, one_torch_thread):
    spvos, costs = load_named_model("spvos"), []

    def spvos_at_budget(name: str, frames: np.ndarray, first_mask: np.ndarray) -> np.ndarray:
        core = InferenceCore(spvos, budget=0.4)
        ids = np.stack([core.step(frame, first_mask if t == 0 else None).ids for t, frame in enumerate(frames)])
        costs.extend(core.costs)
        return ids

    sparse = validate_vos(spvos_at_budget, unseen_vos_clips)["J&F"]
    saving = 1 - sum(c.realized for c in costs) / sum(c.dense for c in costs)

    def spvos_all_dense(name: str, frames: np.ndarray, first_mask: np.ndarray) -> np.ndarray:
        core = InferenceCore(spvos, dense_every=1)  # every frame dense: the stm spvos was made from
        return np.stack([core.step(frame, first_mask if t == 0 else None).ids for t, frame in enumerate(frames)])

    dense = validate_vos(spvos_all_dense, unseen_vos_clips)["J&F"]
    # measured (CPU, 1 thread): saving 43.7%, J&F 78.55 against 78.49 all dense; gates that
    # lost their training miss the saving or the masks
    assert saving > 0.38
    assert sparse > dense - 2.0, (sparse, dense)


def test_shipped_lite_tracks_objects_on_unseen_clips(unseen_vos_clips, one_torch_thread):
    lite = validate_vos(load_named_model("lite"), unseen_vos_clips)["J&F"]

    def first_mask_everywhere(name: str, frames: np.ndarray, first_mask: np.ndarray) -> np.ndarray:
        return np.repeat(first_mask[None], len(frames), axis=0)

    still = validate_vos(first_mask_everywhere, unseen_vos_clips)["J&F"]
    # measured (CPU): lite 82.70 (80.06, 77.54 and 68.77 after its earlier cycles), the still first mask 40.97;
    # the interim lite of session 3 tracked worse than the still mask on held-out clips
    assert lite > 70 and lite > still + 10, (lite, still)
