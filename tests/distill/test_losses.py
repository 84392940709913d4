"""Each loss term on hand-computed tensors."""

import pytest
import torch

from audiokd.distill.losses import SOFT_LOSSES, KDLoss, hard_mse, soft_gaussian_kl, soft_mse

S = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
Y = torch.tensor([[0.0, 2.0], [0.0, 1.0]])
T = torch.tensor([[2.0, 2.0], [1.0, -1.0]])


def test_hard_is_mse_to_labels():
    # squared errors 1, 0, 0, 4 -> mean 5/4
    assert float(hard_mse(S, Y)) == pytest.approx(1.25)


def test_soft_mse():
    # (s - t)^2: 1, 0, 1, 0 -> 0.5
    assert float(soft_mse(S, T, 3.0)) == pytest.approx(0.5)


@pytest.mark.parametrize("temp", [0.5, 1.0, 4.0])
def test_gaussian_kl_matches_its_formula(temp):
    # KL(N(t, T^2) || N(s, T^2)) = (s - t)^2 / (2 T^2), averaged
    expected = 0.5 / (2 * temp**2)
    assert float(soft_gaussian_kl(S, T, temp)) == pytest.approx(expected)


def test_gaussian_kl_equals_closed_form_of_torch_distributions():
    temp = 2.0
    p = torch.distributions.Normal(T, temp)
    q = torch.distributions.Normal(S, temp)
    assert float(soft_gaussian_kl(S, T, temp)) == pytest.approx(
        float(torch.distributions.kl_divergence(p, q).mean())
    )


def test_alpha_one_gives_the_hard_loss_alone():
    terms = KDLoss(alpha=1.0, temperature=1.0)(S, Y, None)
    assert float(terms["total"]) == pytest.approx(1.25)
    assert float(terms["soft"]) == 0.0


def test_weighted_sum():
    terms = KDLoss(alpha=0.25, temperature=2.0, soft_loss="kl")(S, Y, T)
    hard, soft = 1.25, 0.5 / 8
    assert float(terms["hard"]) == pytest.approx(hard)
    assert float(terms["soft"]) == pytest.approx(soft)
    assert float(terms["total"]) == pytest.approx(0.25 * hard + 0.75 * soft)


def test_alpha_zero_gives_the_soft_loss_alone():
    terms = KDLoss(alpha=0.0, temperature=1.0, soft_loss="mse")(S, Y, T)
    assert float(terms["total"]) == pytest.approx(0.5)


def test_kd_needs_teacher_outputs_when_soft_is_on():
    with pytest.raises(ValueError, match="teacher"):
        KDLoss(alpha=0.5, temperature=1.0)(S, Y, None)


def test_unknown_soft_loss_is_refused():
    with pytest.raises(ValueError, match="soft_loss"):
        KDLoss(alpha=0.5, temperature=1.0, soft_loss="nope")
    assert set(SOFT_LOSSES) == {"mse", "kl"}


def test_gradient_reaches_the_student_only():
    s = S.clone().requires_grad_(True)
    t = T.clone().requires_grad_(True)
    KDLoss(alpha=0.5, temperature=1.0)(s, Y, t.detach())["total"].backward()
    assert s.grad is not None and torch.count_nonzero(s.grad) > 0
    assert t.grad is None
