"""Feature distillation and attention transfer on hand-computed tensors and on real HF models."""

import math

import pytest
import torch
from transformers import (
    MobileViTConfig,
    MobileViTForImageClassification,
    ViTConfig,
    ViTForImageClassification,
)

from audiokd.distill.feature_losses import (
    ActivationAttentionLoss,
    AttentionMapLoss,
    FitNetLoss,
    spatial_attention,
)
from audiokd.distill.losses import KDLoss
from audiokd.models.features import Inner, pair_layers, student_inner, teacher_inner


def test_fitnet_by_hand():
    # student (1 channel, 2x2 of 2s) pooled to the teacher's 1x1 -> 2; projection -> (2, 0)
    # teacher (2 channels, 1x1) = (3, 1) -> layer norm over channels -> (1, -1)
    loss = FitNetLoss([1], [2], [(0, 0)])
    with torch.no_grad():
        loss.proj[0].weight.copy_(torch.tensor([[[[1.0]]], [[[0.0]]]]))
        loss.proj[0].bias.zero_()
    s = Inner([torch.full((1, 1, 2, 2), 2.0)])
    t = Inner([torch.tensor([3.0, 1.0]).reshape(1, 2, 1, 1)])
    # ((2 - 1)^2 + (0 + 1)^2) / 2 = 1 (layer norm eps makes it a hair smaller)
    assert float(loss(s, t)) == pytest.approx(1.0, abs=1e-4)


def test_fitnet_averages_over_the_pairs_compared():
    loss = FitNetLoss([1, 1], [2, 2], [(0, 0), (1, 1)])
    with torch.no_grad():
        for p in loss.proj:
            p.weight.copy_(torch.tensor([[[[1.0]]], [[[0.0]]]]))
            p.bias.zero_()
    s = Inner([torch.full((1, 1, 1, 1), 2.0), torch.full((1, 1, 1, 1), 1.0)])
    t = Inner([torch.tensor([3.0, 1.0]).reshape(1, 2, 1, 1)] * 2)
    # pair 1: 1.0 as above; pair 2: ((1 - 1)^2 + (0 + 1)^2) / 2 = 0.5 -> mean 0.75
    assert float(loss(s, t)) == pytest.approx(0.75, abs=1e-4)


@pytest.mark.parametrize("cls", [FitNetLoss, ActivationAttentionLoss, AttentionMapLoss])
def test_no_pairs_gives_zero_not_a_division_by_zero(cls):
    loss = cls([], [], [])
    value = loss(Inner([]), Inner([]))
    assert float(value) == 0.0


def test_attention_transfer_by_hand():
    at = ActivationAttentionLoss([1], [1], [(0, 0)], p=2.0)
    s = Inner([torch.tensor([[[[1.0, 0.0]]]])])  # Q_s = (1, 0)
    t = Inner([torch.tensor([[[[0.0, 2.0]]]])])  # Q_t = (0, 4) -> (0, 1)
    assert float(at(s, t)) == pytest.approx(math.sqrt(2))
    assert float(at(s, s)) == pytest.approx(0.0)
    # sum over channels of |F|^p: channels (1, -2) at one position -> 1 + 4
    assert float(spatial_attention(torch.tensor([[[[1.0]], [[-2.0]]]]), 2.0)) == 5.0


def test_attention_transfer_pools_to_the_common_size():
    at = ActivationAttentionLoss([1], [1], [(0, 0)])
    big = torch.ones(1, 1, 4, 8)
    small = torch.ones(1, 3, 2, 4)
    # uniform maps of any size agree after pooling and normalising
    assert float(at(Inner([big]), Inner([small]))) == pytest.approx(0.0, abs=1e-6)


def test_attention_map_kl_by_hand():
    loss = AttentionMapLoss([], [], [(0, 0)])
    a_t = torch.tensor([[[0.75, 0.25], [0.5, 0.5]]]).unsqueeze(1)  # (B=1, heads=1, N=2, N=2)
    a_s = torch.tensor([[[0.5, 0.5], [0.5, 0.5]]]).unsqueeze(1)
    expected = (0.75 * math.log(1.5) + 0.25 * math.log(0.5) + 0.0) / 2
    value = loss(Inner([], [a_s]), Inner([], [a_t]))
    assert float(value) == pytest.approx(expected, abs=1e-6)


def _teacher():
    return ViTForImageClassification(
        ViTConfig(
            image_size=(32, 64),
            patch_size=16,
            num_channels=1,
            hidden_size=32,
            num_hidden_layers=3,
            num_attention_heads=2,
            intermediate_size=64,
            num_labels=2,
            attn_implementation="eager",
        )
    ).eval()


def _mobilevit():
    return MobileViTForImageClassification(
        MobileViTConfig(
            num_channels=1,
            image_size=64,
            hidden_sizes=[16, 16, 16],
            neck_hidden_sizes=[8, 8, 8, 8, 8, 8, 16],
            num_attention_heads=2,
            num_labels=2,
        )
    )


def test_gradients_reach_student_and_projection_never_the_teacher():
    torch.manual_seed(0)
    teacher, student = _teacher(), _mobilevit()
    teacher.requires_grad_(False)
    x, y = torch.randn(4, 1, 32, 64), torch.randn(4, 2)
    with torch.no_grad():
        t_out = teacher(pixel_values=x, output_hidden_states=True)
    t_in = teacher_inner(teacher, t_out, [1, 3], False)
    s_out = student(pixel_values=x, output_hidden_states=True)
    s_in = student_inner(student, s_out, False)
    pairs = pair_layers(len(t_in.maps), len(s_in.maps))
    feat = FitNetLoss(s_in.channels, t_in.channels, pairs)
    att = ActivationAttentionLoss(s_in.channels, t_in.channels, pairs)
    kd = KDLoss(0.5, 2.0, "kl", beta=0.4, gamma=0.3, feature=feat, attention=att)
    terms = kd(s_out.logits, y, t_out.logits, s_in, t_in)
    assert all(torch.isfinite(v) and v > 0 for k, v in terms.items() if k != "hard") and terms["feature"] > 0
    terms["total"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in feat.parameters())


def test_attention_maps_between_two_vits():
    teacher, student = _teacher(), _teacher()
    x = torch.randn(2, 1, 32, 64)
    t_out = teacher(pixel_values=x, output_hidden_states=True, output_attentions=True)
    t_in = teacher_inner(teacher, t_out, [1, 2, 3], True)
    s_in = student_inner(
        student, student(pixel_values=x, output_hidden_states=True, output_attentions=True), True
    )
    loss = AttentionMapLoss([], [], pair_layers(3, 3))
    assert float(loss(t_in, t_in)) == pytest.approx(0.0, abs=1e-6)
    assert float(loss(s_in, t_in)) > 0


def test_attention_map_refuses_a_student_without_attentions():
    from audiokd.config import ConfigError

    student = _mobilevit()
    out = student(pixel_values=torch.randn(2, 1, 32, 64), output_hidden_states=True)
    with pytest.raises(ConfigError, match="use attention_loss: activation"):
        student_inner(student, out, with_attentions=True)
