"""The exponential moving average of the weights (``--ema``): the recurrence worked by hand, what
a run ships and validates, its reset at the BatchNorm freeze, and resuming through it."""

import pytest
import torch
from cli_helpers import one_error_line, vseg
from safetensors.torch import load_file
from torch import nn

from vseg.data.synth_vos import generate_vos
from vseg.models.registry import load_model
from vseg.train.config import TrainConfig
from vseg.train.ema import WeightAverage
from vseg.train.validate import validate_vos
from vseg.train.vos import train_vos

TINY_STM = dict(key_widths=(8, 16, 16), value_widths=(8, 16, 16), decoder_widths=(16, 16, 16), value_dim=16)


def test_weight_average_follows_the_recurrence_worked_by_hand():
    live = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1))
    with torch.no_grad():
        live[0].weight.fill_(0.0)
    ema = WeightAverage(live, decay=0.15)

    def set_live(value, mean):
        with torch.no_grad():
            live[0].weight.fill_(value)
            live[1].running_mean.fill_(mean)

    # update 0: decay min(0.15, 1/10) = 0.1 -> 0.1 * 0 + 0.9 * 1 = 0.9
    set_live(1.0, 5.0)
    ema.update(live)
    assert ema.average[0].weight.item() == pytest.approx(0.9)
    # update 1: decay min(0.15, 2/11) = 0.15 -> 0.15 * 0.9 + 0.85 * 2 = 1.835
    set_live(2.0, 7.0)
    ema.update(live)
    assert ema.average[0].weight.item() == pytest.approx(1.835)
    # buffers are copied, not averaged; the affine BatchNorm weight (a parameter) is averaged
    assert ema.average[1].running_mean.item() == 7.0
    assert int(ema.updates) == 2 and not ema.average[0].weight.requires_grad
    set_live(-3.0, 1.0)
    ema.reset(live)
    assert ema.average[0].weight.item() == -3.0 and ema.average[1].running_mean.item() == 1.0
    assert int(ema.updates) == 0


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate_vos(root, clips=2, seed=6, frames=5, height=64, width=96, val_fraction=0.5)
    return root


def ema_config(data, out, **kw) -> TrainConfig:
    options = dict(model="stm", data=str(data), out=str(out), steps=4, crop=(32, 48), scale_range=(1.0, 1.0),
                   max_skip=2, warmup_steps=0, progress=False, half_weights=False, model_options=TINY_STM,
                   ema_decay=0.5, freeze_norm_at=0.5, norm_calibration_batches=2, checkpoint_every=1,
                   keep_checkpoints=10)
    return TrainConfig(**(options | kw))


def checkpoint_tensors(run, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / f"step_{step:07d}" / "weights.safetensors"))


def test_a_run_ships_the_average_restarted_at_the_freeze_and_resumes_to_it(data, tmp_path):
    result = train_vos(ema_config(data, tmp_path / "full", val_data=str(data)))
    run = tmp_path / "full"
    last = checkpoint_tensors(run, 4)
    shipped = load_model(result.weights).state_dict()
    average = {k[len("ema.average."):]: v for k, v in last.items() if k.startswith("ema.average.")}
    live = {k[len("model."):]: v for k, v in last.items() if k.startswith("model.")}
    assert shipped.keys() == average.keys()
    assert all(torch.equal(shipped[k], average[k]) for k in shipped)
    assert any(not torch.equal(average[k], live[k]) for k in live)  # not the last step's weights
    # the freeze (before step 3) restarted the average: one update by the end of step 3
    assert [int(checkpoint_tensors(run, s)["ema.updates"]) for s in (2, 3, 4)] == [2, 1, 2]
    # validation scored the average: the same J&F as scoring the shipped weights again
    assert validate_vos(load_model(result.weights), str(data))["J&F"] == pytest.approx(result.validation[-1]["J&F"])
    for start in (2, 3):  # resumed before and after the freeze
        resumed = train_vos(ema_config(data, tmp_path / f"from{start}",
                                       resume=str(run / "checkpoints" / f"step_{start:07d}")))
        again = load_model(resumed.weights).state_dict()
        assert all(torch.equal(shipped[k], again[k]) for k in shipped), start


def test_ema_decay_outside_its_range_is_one_error_line(data, tmp_path):
    line = one_error_line(vseg("train", "--model", "stm", "--data", str(data), "--ema", "1.5",
                               "--run-dir", str(tmp_path / "run")))
    assert "EMA decay" in line
    line = one_error_line(vseg("train", "--model", "arseg", "--data", str(data), "--ema", "0.999"))
    assert "--ema" in line
