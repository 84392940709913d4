"""The weight average: its warm-up decay, the swap in and out, and what the training loop keeps with it."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from audiokd.averaging import WeightAverage
from audiokd.config import ConfigError, load_section
from audiokd.distill.losses import hard_mse
from audiokd.models.student import build_student
from audiokd.training import fit, seed_everything
from fit_helpers import SETTINGS, SHAPE, TASK, TINY, tiny_data


def test_the_average_follows_the_weights_with_the_warmed_up_decay():
    lin = torch.nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.fill_(0.0)
    ema = WeightAverage(lin, decay=0.5)
    expected = 0.0
    for t, w in enumerate([1.0, 2.0, 4.0], start=1):
        with torch.no_grad():
            lin.weight.fill_(w)
        d = min(0.5, (1 + t) / (10 + t))  # 2/11, 3/12, 4/13: below the cap of 0.5 until t = 8
        assert ema.current_decay() == pytest.approx(d)
        ema.update()
        expected = d * expected + (1 - d) * w
        assert ema.shadow[0] == pytest.approx(torch.full((1, 2), expected))
    assert ema.updates == 3


def test_swapped_in_shows_the_average_and_gives_the_live_weights_back_even_on_error():
    lin = torch.nn.Linear(2, 1)
    ema = WeightAverage(lin, decay=0.9)
    start = lin.weight.detach().clone()
    with torch.no_grad():
        lin.weight.add_(1.0)
    live = lin.weight.detach().clone()
    with pytest.raises(RuntimeError), ema.swapped_in():
        assert torch.equal(lin.weight, start)  # nothing averaged in yet: the starting weights
        raise RuntimeError("validation failed")
    assert torch.equal(lin.weight, live)


def test_state_round_trips_and_a_state_of_another_model_is_refused():
    a, b = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    ema_a, ema_b = WeightAverage(a, 0.9), WeightAverage(b, 0.9)
    ema_a.update()
    ema_b.load_state_dict(ema_a.state_dict())
    assert ema_b.updates == 1 and all(
        torch.equal(x, y) for x, y in zip(ema_a.shadow, ema_b.shadow, strict=True)
    )
    with pytest.raises(ValueError, match="EMA state has 2 tensors, the model 4"):
        WeightAverage(torch.nn.Sequential(a, b), 0.9).load_state_dict(ema_a.state_dict())


def _fit(ema_decay: float):
    seed_everything(0)
    model = build_student(TINY, SHAPE, TASK)
    train, val = tiny_data()
    objective = lambda net, x, y, idx: {"total": hard_mse(net(pixel_values=x).logits, y)}  # noqa: E731
    result = fit(model, objective, train, val, TASK, dataclasses.replace(SETTINGS, ema_decay=ema_decay))
    return result, model


def test_the_loop_trains_the_live_weights_but_validates_and_keeps_the_average():
    plain, plain_model = _fit(0.0)
    averaged, averaged_model = _fit(0.9)
    train_losses = [{k: v for k, v in r.items() if k.startswith("train_")} for r in plain.history]
    assert train_losses == [{k: v for k, v in r.items() if k.startswith("train_")} for r in averaged.history]
    assert [r["val_loss"] for r in plain.history] != [r["val_loss"] for r in averaged.history]
    kept = dict(averaged_model.named_parameters())
    assert any(not torch.equal(p, kept[n]) for n, p in plain_model.named_parameters())


@pytest.mark.parametrize("section", ["teacher", "distill"])
def test_ema_decay_is_a_validated_key_that_is_off_unless_set(section):
    assert load_section({section: {}}, section).ema_decay == 0.0
    assert load_section({section: {"ema_decay": 0.99}}, section).ema_decay == 0.99
    for bad in (1.0, -0.1):
        with pytest.raises(ConfigError, match=rf"{section}\.ema_decay"):
            load_section({section: {"ema_decay": bad}}, section)
