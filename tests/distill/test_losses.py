"""Each loss term on hand-computed tensors."""

import math

import pytest
import torch

import audiokd.distill.feature_losses  # noqa: F401  (registers the feature and attention terms)
from audiokd.config import DistillConfig
from audiokd.distill.losses import (
    SOFT_LOSSES,
    KDLoss,
    hard_mse,
    resolve_soft_loss,
    soft_ccc,
    soft_gaussian_kl,
    soft_mse,
    soft_softmax_kl,
)
from audiokd.distill.registry import REGISTRY, lookup

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


def test_unknown_soft_loss_is_refused_listing_the_known_ones():
    with pytest.raises(
        ValueError, match="distill.soft_loss: unknown 'nope'; known: ccc, kl, mse, softmax_kl"
    ):
        KDLoss(alpha=0.5, temperature=1.0, soft_loss="nope")


def test_params_choices_match_the_registry():
    fields = {f.name: f for f in DistillConfig.__dataclass_fields__.values()}
    for kind in ("soft", "feature", "attention"):
        extra = {"auto"} if kind == "soft" else set()  # auto names a registered loss per task
        assert set(fields[f"{kind}_loss"].metadata["choices"]) == set(REGISTRY[kind]) | extra, kind
    assert lookup("soft", "kl") is soft_gaussian_kl and SOFT_LOSSES["ccc"] is soft_ccc


def test_soft_ccc_values():
    t = torch.tensor([[1.0], [2.0], [3.0]])
    assert float(soft_ccc(t, t, 1.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(soft_ccc(-t + 4, t, 1.0)) == pytest.approx(2.0, abs=1e-6)  # perfect negation: CCC -1
    # offset by one: CCC 4/7 (see test_metrics) -> loss 3/7
    assert float(soft_ccc(t + 1, t, 1.0)) == pytest.approx(3 / 7, abs=1e-6)


def test_softmax_kl_by_hand():
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[math.log(3.0), 0.0]])
    # T = 1: p_t = (3/4, 1/4), p_s = (1/2, 1/2)
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert float(soft_softmax_kl(s, t, 1.0)) == pytest.approx(expected, abs=1e-6)
    # T = 2: p_t = softmax(ln3 / 2, 0) = (r, 1 - r) with r = sqrt3 / (1 + sqrt3); times T^2 = 4
    r = math.sqrt(3) / (1 + math.sqrt(3))
    expected2 = 4 * (r * math.log(r / 0.5) + (1 - r) * math.log((1 - r) / 0.5))
    assert float(soft_softmax_kl(s, t, 2.0)) == pytest.approx(expected2, abs=1e-6)


def test_softmax_kl_sees_only_differences_between_outputs():
    s = torch.tensor([[0.3, -0.2], [1.0, 0.5]])
    t = torch.tensor([[0.1, 0.4], [-1.0, 0.0]])
    base = float(soft_softmax_kl(s, t, 2.0))
    assert float(soft_softmax_kl(s + 5.0, t, 2.0)) == pytest.approx(base, abs=1e-6)
    assert float(soft_softmax_kl(s[:, :1], t[:, :1], 2.0)) == pytest.approx(0.0, abs=1e-7)  # one output


def test_weight_zero_terms_are_not_computed():
    calls = []

    class Spy(torch.nn.Module):
        def forward(self, s, t):
            calls.append(1)
            return torch.tensor(1.0)

    kd = KDLoss(0.5, 1.0, "mse", beta=0.0, gamma=0.0, feature=Spy(), attention=Spy())
    terms = kd(S, Y, T)
    assert calls == [] and set(terms) == {"hard", "soft", "total"}
    kd = KDLoss(0.5, 1.0, "mse", beta=0.5, gamma=0.25, feature=Spy(), attention=Spy())
    terms = kd(S, Y, T)
    assert len(calls) == 2 and kd.active_terms == ["hard", "soft", "feature", "attention"]
    assert float(terms["total"]) == pytest.approx(0.5 * 1.25 + 0.5 * 0.5 + 0.5 * 1 + 0.25 * 1)


def test_gradient_reaches_the_student_only():
    s = S.clone().requires_grad_(True)
    t = T.clone().requires_grad_(True)
    KDLoss(alpha=0.5, temperature=1.0)(s, Y, t.detach())["total"].backward()
    assert s.grad is not None and torch.count_nonzero(s.grad) > 0
    assert t.grad is None


def test_classification_soft_kl_is_hintons_and_ccc_is_refused():
    from audiokd.tasks import Task

    task = Task("classification", ("a", "b"))
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[math.log(3.0), 0.0]])
    kd = KDLoss(alpha=0.0, temperature=1.0, soft_loss="kl", task=task)
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert float(kd(s, torch.tensor([0]), t)["soft"]) == pytest.approx(expected, abs=1e-6)
    hard = KDLoss(alpha=1.0, temperature=1.0, task=task)(s, torch.tensor([0]))["hard"]
    assert float(hard) == pytest.approx(math.log(2))  # cross-entropy, not MSE
    with pytest.raises(ValueError, match="ccc fits regression only"):
        KDLoss(alpha=0.5, temperature=1.0, soft_loss="ccc", task=task)


def test_auto_soft_loss_is_ccc_for_regression_and_mse_for_classification():
    from audiokd.tasks import Task

    assert resolve_soft_loss("auto", Task("regression", ("a", "b"))) == "ccc"
    assert resolve_soft_loss("auto", None) == "ccc"
    assert resolve_soft_loss("auto", Task("classification", ("a", "b"))) == "mse"
    assert resolve_soft_loss("kl", Task("regression", ("a", "b"))) == "kl"  # a chosen loss is kept
    reg = KDLoss(alpha=0.0, temperature=1.0, soft_loss="auto", task=Task("regression", ("a", "b")))
    assert float(reg(S, Y, T)["soft"]) == pytest.approx(float(soft_ccc(S, T, 1.0)))
    cls = Task("classification", ("a", "b"))
    kd = KDLoss(alpha=0.0, temperature=1.0, soft_loss="auto", task=cls)  # ccc would be refused here
    assert float(kd(S, torch.tensor([0, 1]), T)["soft"]) == pytest.approx(float(soft_mse(S, T, 1.0)))


@pytest.mark.parametrize("soft_loss", ["ccc", "mse", "kl", "softmax_kl"])
def test_terms_are_float32_under_bf16_autocast_and_equal_the_float32_computation(soft_loss):
    g = torch.Generator().manual_seed(0)
    # late in training: student and teacher agree to within bf16's resolution at this scale (2^-7)
    teacher = (4.0 + torch.randn(64, 3, generator=g)).bfloat16()
    student = (teacher.float() + 0.01 * torch.randn(64, 3, generator=g)).bfloat16()
    labels = torch.randn(64, 3, generator=g)
    kd = KDLoss(alpha=0.5, temperature=2.0, soft_loss=soft_loss)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = kd(student, labels, teacher)
    want = kd(student.float(), labels, teacher.float())
    for k in ("hard", "soft", "total"):
        assert got[k].dtype == torch.float32, k
        assert float(got[k]) == pytest.approx(float(want[k]), rel=1e-6), k
