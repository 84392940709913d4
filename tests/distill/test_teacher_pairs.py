"""Every teacher arch x student arch pair: feature and attention terms work, or are refused up front."""

from __future__ import annotations

import pytest
import torch

from audiokd.config import ConfigError, DistillConfig, StudentConfig, TeacherConfig
from audiokd.distill.objective import build_objective
from audiokd.models.student import build_student
from audiokd.models.teacher import build_teacher
from audiokd.tasks import Task

SHAPE = (1, 64, 128)  # MobileViTV2 needs at least 64 x 64 inputs
TASK = Task("regression", ("a", "b"))
TEACHERS = ["vit", "ast", "resnet", "convnext", "mobilevit"]
STUDENTS = ["mobilevit", "mobilevitv2", "mobilenet_v2", "vit"]


def _teacher_dir(tmp_path, arch: str, **kw):
    torch.manual_seed(0)
    cfg = TeacherConfig(
        arch=arch,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
        patch_size=16,
        ast_stride=kw.pop("ast_stride", 16),
        cnn_depths=(1, 1),
        cnn_hidden_sizes=(8, 16),
        mobilevit_hidden_sizes=(16, 16, 16),
        mobilevit_neck_hidden_sizes=(8, 8, 8, 8, 8, 8, 16),
        **kw,
    )
    folder = tmp_path / f"teacher-{arch}"
    build_teacher(cfg, SHAPE, TASK).save_pretrained(folder)
    return folder


def _student(arch: str):
    cfg = StudentConfig(
        arch=arch,
        hidden_sizes=(16, 16, 16),
        neck_hidden_sizes=(8, 8, 8, 8, 8, 8, 16),
        num_heads=2,
        vit_hidden_size=32,
        vit_layers=2,
        vit_intermediate_size=64,
        vit_patch_size=16,
        width_multiplier=0.25,
        depth_multiplier=0.25,
    )
    return build_student(cfg, SHAPE, TASK)


def _plan(kd: DistillConfig, student, teacher_dir):
    return build_objective(kd, student, teacher_dir, None, torch.randn(2, *SHAPE), torch.device("cpu"), TASK)


@pytest.mark.parametrize("student_arch", STUDENTS)
@pytest.mark.parametrize("teacher_arch", TEACHERS)
def test_feature_and_activation_attention_work_for_every_pair(tmp_path, teacher_arch, student_arch):
    student = _student(student_arch)
    kd = DistillConfig(alpha=0.3, beta=0.5, gamma=0.5, attention_loss="activation", teacher_layers=[1, 2])
    plan = _plan(kd, student, _teacher_dir(tmp_path, teacher_arch))
    assert (
        plan.live_teacher and len(plan.pairs) == 2
    )  # teacher layers 1 and 2 each paired with a student stage
    terms = plan.objective(student, torch.randn(4, *SHAPE), torch.randn(4, 2), torch.arange(4))
    assert set(terms) == {"hard", "soft", "feature", "attention", "total"}
    assert all(torch.isfinite(v) for v in terms.values())
    assert float(terms["feature"].detach()) > 0 and float(terms["attention"].detach()) > 0
    terms["total"].backward()
    assert all(p.grad is not None for p in plan.extra_modules[0].parameters())


@pytest.mark.parametrize("teacher_arch", ["vit", "ast"])
def test_attention_maps_transfer_from_transformer_teachers_to_a_vit_student(tmp_path, teacher_arch):
    student = _student("vit")
    kd = DistillConfig(alpha=0.3, gamma=1.0, attention_loss="attention_map", teacher_layers=1)
    plan = _plan(kd, student, _teacher_dir(tmp_path, teacher_arch))
    terms = plan.objective(student, torch.randn(4, *SHAPE), torch.randn(4, 2), torch.arange(4))
    assert torch.isfinite(terms["attention"]) and float(terms["attention"].detach()) > 0
    terms["total"].backward()


@pytest.mark.parametrize("teacher_arch", ["resnet", "convnext", "mobilevit"])
def test_attention_maps_from_a_conv_teacher_are_refused_naming_the_keys(tmp_path, teacher_arch):
    kd = DistillConfig(gamma=1.0, attention_loss="attention_map")
    with pytest.raises(ConfigError) as err:
        _plan(kd, _student("vit"), _teacher_dir(tmp_path, teacher_arch))
    msg = str(err.value)
    assert msg.startswith(
        "distill.attention_loss = attention_map needs a teacher with attention probabilities"
    )
    assert f"this teacher is {teacher_arch}" in msg and "\n" not in msg


def test_attention_maps_over_different_patch_grids_are_refused_naming_the_keys(tmp_path):
    # AST's default stride 10 overlaps its 16-wide patches: 5 x 12 tokens against the student's 4 x 8
    kd = DistillConfig(gamma=1.0, attention_loss="attention_map", teacher_layers=1)
    with pytest.raises(ConfigError) as err:
        _plan(kd, _student("vit"), _teacher_dir(tmp_path, "ast", ast_stride=10))
    msg = str(err.value)
    assert "the teacher attends over 61 tokens, the student over 33" in msg
    assert "student.vit_patch_size" in msg and "teacher.ast_stride" in msg and "\n" not in msg


def test_attention_maps_need_a_vit_student(tmp_path):
    kd = DistillConfig(gamma=1.0, attention_loss="attention_map")
    with pytest.raises(ConfigError, match="needs a student that exposes attention probabilities"):
        _plan(kd, _student("mobilevit"), _teacher_dir(tmp_path, "ast"))


def test_conv_teacher_layers_are_its_stages(tmp_path):
    kd = DistillConfig(beta=1.0, teacher_layers=[3])
    with pytest.raises(ConfigError, match=r"distill.teacher_layers: \[3\] outside the teacher's layers 1..2"):
        _plan(kd, _student("mobilevit"), _teacher_dir(tmp_path, "resnet"))
