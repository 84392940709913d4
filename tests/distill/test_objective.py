"""The per-step objective: cached teacher for response KD, one live teacher pass when features are on."""

import pytest
import torch
from transformers import ViTConfig, ViTForImageClassification

from audiokd.config import DistillConfig, StudentConfig
from audiokd.distill.objective import build_objective
from audiokd.models.student import build_student
from audiokd.tasks import Task

SHAPE = (1, 32, 64)
TASK = Task("regression", ("a", "b"))
TINY_STUDENT = StudentConfig(hidden_sizes=(16, 16, 16), neck_hidden_sizes=(8, 8, 8, 8, 8, 8, 16), num_heads=2)


def _save_teacher(folder, shape):
    torch.manual_seed(0)
    vit = ViTForImageClassification(
        ViTConfig(
            image_size=shape[1:],
            patch_size=16,
            num_channels=1,
            hidden_size=32,
            num_hidden_layers=6,
            num_attention_heads=2,
            intermediate_size=64,
            num_labels=2,
            problem_type="regression",
            attn_implementation="eager",
        )
    )
    vit.save_pretrained(folder)
    return folder


@pytest.fixture
def teacher_dir(tmp_path):
    return _save_teacher(tmp_path / "teacher", SHAPE)


def _record_calls(model):
    calls = []
    model.register_forward_pre_hook(lambda m, args, kwargs: calls.append(dict(kwargs)), with_kwargs=True)
    return calls


def test_response_kd_uses_the_cache_and_asks_nobody_for_hidden_states(tmp_path):
    student = build_student(TINY_STUDENT, SHAPE, TASK)
    calls = _record_calls(student)
    cached = torch.randn(10, 2)
    plan = build_objective(
        DistillConfig(alpha=0.3),
        student,
        tmp_path / "no-teacher-here",
        cached,
        torch.randn(2, *SHAPE),
        torch.device("cpu"),
    )
    assert not plan.live_teacher and plan.extra_modules == () and plan.terms == ["hard", "soft"]
    idx = torch.tensor([1, 4, 7])
    terms = plan.objective(student, torch.randn(3, *SHAPE), torch.randn(3, 2), idx)
    assert set(terms) == {"hard", "soft", "total"}
    assert all("output_hidden_states" not in c for c in calls)


def test_the_cached_soft_term_compares_the_student_with_the_cached_rows_of_the_batch(tmp_path):
    student = build_student(TINY_STUDENT, SHAPE, TASK).eval()  # eval: no dropout, so logits repeat
    cached = torch.randn(10, 2)
    cfg = DistillConfig(alpha=0.3, soft_loss="mse")
    plan = build_objective(cfg, student, tmp_path, cached, torch.randn(2, *SHAPE), torch.device("cpu"))
    x, y, idx = torch.randn(3, *SHAPE), torch.randn(3, 2), torch.tensor([7, 1, 4])
    terms = plan.objective(student, x, y, idx)
    with torch.no_grad():
        logits = student(pixel_values=x).logits
    assert float(terms["soft"]) == pytest.approx(float(torch.nn.functional.mse_loss(logits, cached[idx])))
    assert float(terms["soft"]) != pytest.approx(float(torch.nn.functional.mse_loss(logits, cached[:3])))
    assert float(terms["hard"]) == pytest.approx(float(torch.nn.functional.mse_loss(logits, y)))
    assert float(terms["total"]) == pytest.approx(0.3 * float(terms["hard"]) + 0.7 * float(terms["soft"]))


@pytest.mark.parametrize(
    ("cfg", "force_live"),
    [(DistillConfig(alpha=0.5, beta=0.4, gamma=0.3), False), (DistillConfig(alpha=0.5), True)],
    ids=["feature-attention", "augmented-response"],
)
def test_no_teacher_parameter_gets_a_gradient_through_the_objective(teacher_dir, cfg, force_live):
    student = build_student(TINY_STUDENT, SHAPE, TASK)
    plan = build_objective(
        cfg, student, teacher_dir, None, torch.randn(2, *SHAPE), torch.device("cpu"), force_live=force_live
    )
    assert plan.teacher is not None and not plan.teacher.training
    before = [p.detach().clone() for p in plan.teacher.parameters()]
    terms = plan.objective(student, torch.randn(4, *SHAPE), torch.randn(4, 2), torch.arange(4))
    terms["total"].backward()
    assert all(p.grad is None for p in plan.teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    if plan.extra_modules:  # the feature projection trains beside the student
        assert all(p.grad is not None for p in plan.extra_modules[0].parameters())
    after = list(plan.teacher.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_feature_and_attention_terms_run_the_teacher_once_per_step(teacher_dir):
    student = build_student(TINY_STUDENT, SHAPE, TASK)
    cfg = DistillConfig(alpha=0.5, beta=0.4, gamma=0.3, teacher_layers=3)
    plan = build_objective(cfg, student, teacher_dir, None, torch.randn(2, *SHAPE), torch.device("cpu"))
    assert plan.live_teacher and plan.terms == ["hard", "soft", "feature", "attention"]
    assert plan.pairs == [(0, 2), (1, 4)]  # teacher layers 3 and 6 with student stages 3 and 5 of 5
    assert len(plan.extra_modules) == 1
    teacher_calls = []
    handle = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda m, args: teacher_calls.append(1) if isinstance(m, ViTForImageClassification) else None
    )
    try:
        terms = plan.objective(student, torch.randn(4, *SHAPE), torch.randn(4, 2), torch.arange(4))
    finally:
        handle.remove()
    assert len(teacher_calls) == 1
    assert set(terms) == {"hard", "soft", "feature", "attention", "total"}
    terms["total"].backward()
    proj = plan.extra_modules[0]
    assert all(p.grad is not None for p in proj.parameters())


def test_projection_is_not_part_of_the_exported_student(teacher_dir, tmp_path):
    student = build_student(TINY_STUDENT, SHAPE, TASK)
    before = set(student.state_dict())
    build_objective(
        DistillConfig(beta=1.0), student, teacher_dir, None, torch.randn(2, *SHAPE), torch.device("cpu")
    )
    assert set(student.state_dict()) == before


@pytest.mark.parametrize("arch", ["mobilevit", "mobilevitv2", "mobilenet_v2", "vit"])
def test_every_student_arch_works_with_every_term(tmp_path, arch):
    shape = (1, 64, 128)  # MobileViTV2 needs at least 64 x 64 inputs
    teacher_dir = _save_teacher(tmp_path / "teacher", shape)
    cfg = StudentConfig(
        arch=arch,
        hidden_sizes=(16, 16, 16),
        neck_hidden_sizes=(8, 8, 8, 8, 8, 8, 16),
        num_heads=2,
        vit_hidden_size=32,
        vit_layers=3,
        vit_intermediate_size=64,
        width_multiplier=0.25,
        depth_multiplier=0.25,
    )
    student = build_student(cfg, shape, TASK)
    attention = "attention_map" if arch == "vit" else "activation"
    kd = DistillConfig(
        alpha=0.3, beta=0.5, gamma=0.5, soft_loss="ccc", attention_loss=attention, teacher_layers=2
    )
    plan = build_objective(kd, student, teacher_dir, None, torch.randn(2, *shape), torch.device("cpu"), TASK)
    terms = plan.objective(student, torch.randn(4, *shape), torch.randn(4, 2), torch.arange(4))
    assert set(terms) == {"hard", "soft", "feature", "attention", "total"}
    assert all(torch.isfinite(v) for v in terms.values()) and float(terms["feature"]) > 0
    terms["total"].backward()
