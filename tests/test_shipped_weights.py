"""The weights shipped in vseg/weights load by name and do their job on fresh synthetic data."""

import pytest

from vseg.data.synth_vss import generate_vss
from vseg.models.weights import WEIGHTS_DIR, load_named_model
from vseg.train.arseg_eval import evaluate_arseg


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
