"""CCC against hand-computed cases."""

import numpy as np
import pytest
import torch

from audiokd.metrics import ccc, ccc_loss, ccc_per_target


def test_perfect_agreement_is_one():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert ccc(y, y) == pytest.approx(1.0)


def test_negation_is_minus_one():
    y = np.array([-1.0, 0.0, 1.0])
    assert ccc(-y, y) == pytest.approx(-1.0)


def test_constant_prediction_is_zero():
    assert ccc(np.full(4, 2.5), np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(0.0)


def test_offset_is_penalised_by_hand_formula():
    # y = [1, 2, 3]: var 2/3; x = y + 1: cov 2/3, mean gap 1 -> 2*(2/3) / (2/3 + 2/3 + 1) = 4/7
    y = np.array([1.0, 2.0, 3.0])
    assert ccc(y + 1, y) == pytest.approx(4 / 7)


def test_scale_is_penalised_by_hand_formula():
    # x = 2y, y = [0, 1]: var_y 1/4, var_x 1, cov 1/2, mean gap 1/2 -> 1 / (1/4 + 1 + 1/4) = 2/3
    y = np.array([0.0, 1.0])
    assert ccc(2 * y, y) == pytest.approx(2 / 3)


def test_per_target_and_loss_agree():
    rng = np.random.default_rng(0)
    true = rng.normal(size=(50, 2))
    pred = true + rng.normal(scale=0.5, size=(50, 2))
    per = ccc_per_target(pred, true, ["a", "b"])
    assert set(per) == {"a", "b"}
    loss = ccc_loss(torch.tensor(pred), torch.tensor(true))
    assert float(loss) == pytest.approx(1 - np.mean(list(per.values())), abs=1e-6)


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="one length"):
        ccc(np.zeros(3), np.zeros(4))
