"""The training loop repeats exactly on the CPU, resumes exactly, and stops cleanly on a non-finite loss."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from audiokd.augment import BatchAugment
from audiokd.checkpoint import Checkpointer
from audiokd.config import AugmentConfig
from audiokd.distill.losses import hard_mse
from audiokd.models.student import build_student
from audiokd.training import TrainingError, fit, seed_everything
from fit_helpers import SETTINGS, SHAPE, TASK, TINY, tiny_data


class Objective:
    """MSE to the labels; ``stop_at`` raises Ctrl-C before that call, as a user pressing it would."""

    def __init__(self, stop_at: int | None = None, nan_from: int | None = None) -> None:
        self.calls = 0
        self.stop_at, self.nan_from = stop_at, nan_from

    def __call__(self, net, x, y, idx):
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        hard = hard_mse(net(pixel_values=x).logits, y)
        # a second term that diverges from a given step on, as a KD term with a too-high rate can
        soft = hard * (float("nan") if self.nan_from and self.calls >= self.nan_from else 0.0)
        return {"hard": hard, "soft": soft, "total": hard + soft}


# SpecAugment frequency masks and mixup: both draw from the augmentation's own generator
AUGMENT = AugmentConfig(freq_mask=8, mixup_alpha=0.2)


def _run(
    objective: Objective,
    ckpt: Checkpointer | None = None,
    augment: AugmentConfig | None = None,
    ema_decay: float = 0.0,
):
    seed_everything(0)  # what a fresh stage process does before it builds the model
    model = build_student(TINY, SHAPE, TASK)
    train, val = tiny_data()
    aug = BatchAugment(augment, TASK, SHAPE[-1], seed=0) if augment is not None else None
    s = dataclasses.replace(SETTINGS, ema_decay=ema_decay)
    result = fit(model, objective, train, val, TASK, s, checkpoint=ckpt, augment=aug)
    return result, {k: v.clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("augment", "ema"), [(None, 0.0), (AUGMENT, 0.0), (None, 0.9)], ids=["plain", "freq_mask-mixup", "ema"]
)
def test_two_clean_runs_are_identical_and_a_resumed_run_matches_them(tmp_path, augment, ema):
    first, w1 = _run(Objective(), augment=augment, ema_decay=ema)
    second, w2 = _run(Objective(), augment=augment, ema_decay=ema)
    assert first.history == second.history and _same(w1, w2)

    ckpt = Checkpointer("teacher", {"params": "p"}, tmp_path)
    with pytest.raises(KeyboardInterrupt):
        _run(
            Objective(stop_at=8), ckpt, augment, ema
        )  # Ctrl-C in the 2nd step of epoch 3 (3 steps per epoch)
    assert ckpt.saved_epoch == 2

    resumed_ckpt = Checkpointer("teacher", {"params": "p"}, tmp_path)
    assert resumed_ckpt.load() is not None
    resumed, w3 = _run(Objective(), resumed_ckpt, augment, ema)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    assert resumed.history == first.history
    assert (resumed.best_epoch, resumed.best_score) == (first.best_epoch, first.best_score)
    assert _same(w3, w1)


@pytest.mark.slow
def test_a_nonfinite_term_stops_training_naming_step_term_and_the_kept_checkpoint(tmp_path):
    ckpt = Checkpointer("distill", {"params": "p"}, tmp_path)
    with pytest.raises(TrainingError) as err:
        _run(Objective(nan_from=5), ckpt)  # the 2nd step of epoch 2
    msg = str(err.value)
    assert "non-finite loss at epoch 2, step 5" in msg
    assert "term(s) soft, total" in msg and "hard" not in msg.split("term(s)")[1].split("=")[0]
    assert f"end of epoch 1) is kept in {ckpt.path}" in msg and "\n" not in msg
    kept = Checkpointer("distill", {"params": "p"}, tmp_path)
    assert kept.load() is not None and kept.saved_epoch == 1
