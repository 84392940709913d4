"""CCC against hand-computed cases; the paired bootstrap interval of a difference in quality."""

import numpy as np
import pytest
import torch

from audiokd.metrics import (
    accuracy_rows,
    ccc,
    ccc_loss,
    ccc_mean_rows,
    ccc_per_target,
    gain_verdict,
    paired_bootstrap_ci,
)


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


def _two_students(seed: int = 0, n: int = 150, gap: float = 0.3):
    """True targets and two students' predictions; the first with less noise by ``gap``."""
    rng = np.random.default_rng(seed)
    true = rng.uniform(-1, 1, size=(n, 2))
    return true + rng.normal(scale=0.4, size=(n, 2)), true + rng.normal(scale=0.4 + gap, size=(n, 2)), true


def test_bootstrap_interval_is_deterministic_in_its_seed_and_brackets_the_gain():
    a, b, true = _two_students(gap=0.05)
    point = np.mean(list(ccc_per_target(a, true, ["x", "y"]).values())) - np.mean(
        list(ccc_per_target(b, true, ["x", "y"]).values())
    )
    ci = paired_bootstrap_ci(a, b, true, "regression", resamples=500, seed=3)
    assert ci == paired_bootstrap_ci(a, b, true, "regression", resamples=500, seed=3)
    assert ci != paired_bootstrap_ci(a, b, true, "regression", resamples=500, seed=4)
    lo, hi = ci
    assert lo < point < hi and hi - lo < 0.2


def test_bootstrap_recomputes_ccc_per_resample_like_ccc():
    a, b, true = _two_students()
    idx = np.random.default_rng(1).integers(0, len(true), size=(3, len(true)))
    rows = ccc_mean_rows(a[idx], true[idx])
    for r in range(3):
        expected = np.mean([ccc(a[idx[r], k], true[idx[r], k]) for k in range(2)])
        assert rows[r] == pytest.approx(expected, abs=1e-12)
    assert ccc_mean_rows(np.ones((1, 3, 1)), np.ones((1, 3, 1)))[0] == 0.0  # 0/0 -> 0, as ccc()


def test_bootstrap_is_paired_the_same_model_twice_gives_exactly_zero():
    a, _, true = _two_students()
    assert paired_bootstrap_ci(a, a, true, "regression", resamples=200) == (0.0, 0.0)


def test_bootstrap_separates_a_clearly_better_model_and_says_so():
    a, b, true = _two_students(gap=0.6)
    better = paired_bootstrap_ci(a, b, true, "regression", resamples=500)
    worse = paired_bootstrap_ci(b, a, true, "regression", resamples=500)
    assert better[0] > 0 and worse[1] < 0
    assert gain_verdict(better) == "KD helps" and gain_verdict(worse) == "KD hurts"
    assert gain_verdict((-0.01, 0.02)) == "cannot tell on this test set"


def test_bootstrap_for_classification_scores_accuracy():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 3, size=200)
    right = np.eye(3)[true] + rng.normal(scale=0.1, size=(200, 3))  # argmax = the true class
    wrong = np.eye(3)[(true + 1) % 3]  # never right
    lo, hi = paired_bootstrap_ci(right, wrong, true, "classification", resamples=300)
    assert lo == hi == 1.0  # accuracy 1 against 0 on every resample
    coin = np.where(rng.random(200)[:, None] < 0.5, right, wrong)
    lo, hi = paired_bootstrap_ci(right, coin, true, "classification", resamples=300)
    assert 0 < lo < accuracy_rows(right[None], true[None])[0] - accuracy_rows(coin[None], true[None])[0] < hi


def test_bootstrap_refuses_unpaired_inputs():
    with pytest.raises(ValueError, match="need >= 2 clips scored by both"):
        paired_bootstrap_ci(np.zeros((3, 1)), np.zeros((4, 1)), np.zeros((3, 1)), "regression")
