"""Distilling over unlabelled clips: hard loss on labelled rows only, weighted soft loss on all rows."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from transformers import ViTConfig, ViTForImageClassification

from audiokd.augment import BatchAugment
from audiokd.config import AugmentConfig, DistillConfig
from audiokd.data.features import SplitData
from audiokd.distill import teacher_cache
from audiokd.distill.losses import KDLoss
from audiokd.distill.objective import build_objective
from audiokd.distill.teacher_cache import StaleCacheError
from audiokd.distill.unlabeled import ConcatRows, baseline_passes, budget, matched_passes
from audiokd.models.student import build_student
from audiokd.tasks import Task
from audiokd.training import epoch_steps, fit, passes_for
from fit_helpers import SETTINGS, SHAPE, TASK, TINY, tiny_data

CLS = Task("classification", ("x", "y", "z"))
LABELLED = torch.tensor([True, False, True, False, False])


def _batch(task: Task, placeholder: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Student outputs (with grad), targets whose unlabelled rows hold ``placeholder``, teacher outputs."""
    g = torch.Generator().manual_seed(0)
    s = torch.randn(5, task.num_outputs, generator=g).requires_grad_(True)
    t = torch.randn(5, task.num_outputs, generator=g)
    if task.kind == "regression":
        y = torch.randn(5, task.num_outputs, generator=g)
        y[~LABELLED] = placeholder
    else:
        y = torch.tensor([0, 2, 1, 2, 0])
        y[~LABELLED] = int(placeholder) % task.num_outputs
    return s, y, t


@pytest.mark.parametrize("task", [TASK, CLS])
def test_unlabelled_rows_never_touch_the_hard_loss(task):
    kd = KDLoss(0.5, 2.0, "kl", task=task)
    s, y, t = _batch(task, 0.0)
    terms = kd(s, y, t, labelled=LABELLED)
    assert torch.allclose(terms["hard"], task.hard_loss(s[LABELLED], y[LABELLED]))
    # whatever the unlabelled rows' targets hold, nothing changes: not the value, not the gradient
    for placeholder in (1e6, -3.0, float("nan")) if task.kind == "regression" else (1.0, 2.0):
        s2, y2, _ = _batch(task, placeholder)
        assert torch.equal(kd(s2, y2, t, labelled=LABELLED)["total"], terms["total"])
    terms["hard"].backward()
    assert not s.grad[~LABELLED].any() and s.grad[LABELLED].abs().sum() > 0


def test_no_labelled_row_in_a_batch_gives_a_zero_hard_loss():
    s, y, t = _batch(TASK, float("nan"))
    terms = KDLoss(0.5, 1.0, "mse")(s, y, t, labelled=torch.zeros(5, dtype=torch.bool))
    assert float(terms["hard"]) == 0.0 and torch.isfinite(terms["total"])


@pytest.mark.parametrize("soft_loss", ["mse", "kl", "ccc", "softmax_kl"])
def test_soft_covers_every_row_and_weight_one_is_the_plain_mean(soft_loss):
    s, y, t = _batch(TASK, 0.0)
    masked = KDLoss(0.3, 2.0, soft_loss, unlabeled_weight=1.0)(s, y, t, labelled=LABELLED)
    plain = KDLoss(0.3, 2.0, soft_loss)(s, y, t)
    assert float(masked["soft"]) == pytest.approx(float(plain["soft"]), rel=1e-5)


def test_unlabeled_weight_scales_the_unlabelled_rows_soft_losses():
    s, y, t = _batch(TASK, 0.0)
    per_row = ((s - t) ** 2).mean(1).detach()
    w = torch.where(LABELLED, 1.0, 0.25)
    soft = KDLoss(0.3, 1.0, "mse", unlabeled_weight=0.25)(s, y, t, labelled=LABELLED)["soft"]
    assert float(soft) == pytest.approx(float((w * per_row).sum() / w.sum()), rel=1e-6)
    only_labelled = KDLoss(0.3, 1.0, "mse", unlabeled_weight=0.0)(s, y, t, labelled=LABELLED)["soft"]
    assert float(only_labelled) == pytest.approx(float(per_row[LABELLED].mean()), rel=1e-6)


def test_weighted_ccc_counts_a_row_as_often_as_its_weight():
    s, y, t = _batch(TASK, 0.0)
    w = torch.tensor([2.0, 1.0, 1.0, 0.0, 1.0])
    repeated = torch.tensor([0, 0, 1, 2, 4])  # row 0 twice, row 3 never
    soft = KDLoss(0.3, 1.0, "ccc")
    weighted = soft.soft_fn(s, t, 1.0, weight=w)
    assert float(weighted) == pytest.approx(float(soft.soft_fn(s[repeated], t[repeated], 1.0)), rel=1e-5)


def test_concat_rows_index_like_their_concatenation():
    a, b = torch.arange(12.0).reshape(4, 3), -torch.arange(6.0).reshape(2, 3)
    rows, whole = ConcatRows(a, b), torch.cat([a, b])
    assert len(rows) == 6 and rows.shape == whole.shape and rows.dtype == whole.dtype
    for index in (torch.tensor([5, 0, 4, 3]), slice(1, 5), slice(None, 2), 4):
        assert torch.equal(rows[index], whole[index])
    with pytest.raises(ValueError, match="parts differ"):
        ConcatRows(a, torch.zeros(2, 4))


def test_budget_gives_the_baseline_at_least_the_distilled_students_steps():
    # 150 labelled + 550 unlabelled at batch 32: 22 steps an epoch; 150 labelled alone: 5
    assert budget(150, 550, 30, 32) == {
        "labelled_clips": 150,
        "unlabeled_clips": 550,
        "epochs": 30,
        "passes": 1,
        "steps": 660,
    }
    passes = matched_passes(150, 550)
    assert passes == 5 and budget(150, 0, 30, 32, passes)["steps"] == 720  # 750 clips an epoch: 24 steps
    assert matched_passes(150, 0) == 1  # no pool: the same budget as before
    for labelled, pool, e, bs in [(24, 16, 2, 8), (7, 100, 3, 4), (33, 1, 5, 32), (150, 700, 30, 32)]:
        assert (
            budget(labelled, 0, e, bs, matched_passes(labelled, pool))["steps"]
            >= budget(labelled, pool, e, bs)["steps"]
        )


def test_min_steps_gives_a_small_set_more_passes_and_the_baseline_at_least_as_many_steps():
    # 112 labelled clips, no pool, batch 32: 4 steps a pass, 120 in 30 epochs; min_steps 600 -> 6 passes
    # (672 clips, 21 steps an epoch, 630 in all; 5 passes would be 18 steps, 540)
    assert passes_for(112, 32, 30, 600) == 6
    assert baseline_passes(112, 0, 30, 32, 600) == 6  # no pool: exactly distill's passes
    assert baseline_passes(150, 700, 30, 32, 0) == matched_passes(150, 700) == 6  # off: as before
    assert baseline_passes(150, 700, 30, 32, 600) == 6  # 810 steps already: min_steps does not bind
    cases = [(24, 16, 2, 8, 40), (7, 100, 3, 4, 500), (33, 1, 5, 32, 77), (150, 700, 30, 32, 2000)]
    for labelled, pool, e, bs, m in cases:
        d = passes_for(labelled + pool, bs, e, m)
        distilled = budget(labelled, pool, e, bs, d)["steps"]
        assert distilled >= m and d > 1
        assert budget(labelled, 0, e, bs, baseline_passes(labelled, pool, e, bs, m))["steps"] >= distilled


def test_an_epoch_of_several_passes_visits_every_row_that_many_times():
    """fit with passes=3: each epoch's batches cover each train row exactly 3 times."""
    train, val = tiny_data()
    seen: list[torch.Tensor] = []

    def objective(net, x, y, idx):
        seen.append(idx.clone())
        hard = TASK.hard_loss(net(pixel_values=x).logits, y)
        return {"hard": hard, "total": hard}

    s = dataclasses.replace(SETTINGS, epochs=2, passes=3)
    fit(build_student(TINY, SHAPE, TASK), objective, train, val, TASK, s)
    n = len(train)
    per_epoch = len(seen) // 2
    assert per_epoch == epoch_steps(3 * n, s.batch_size) > epoch_steps(n, s.batch_size)
    for e in range(2):
        counts = torch.bincount(torch.cat(seen[e * per_epoch : (e + 1) * per_epoch]), minlength=n)
        assert counts.tolist() == [3] * n


def test_mixup_pairs_labelled_rows_with_labelled_ones_only():
    aug = BatchAugment(AugmentConfig(mixup_alpha=0.4), TASK, frames=4, seed=3, labelled_rows=10)
    idx = torch.tensor([3, 12, 7, 15, 11, 0, 2, 14])
    x = idx.float().reshape(8, 1, 1, 1).expand(8, 1, 1, 4).clone()  # each row holds its own index
    for _ in range(5):
        perm = aug._partners(8, idx)
        assert ((idx[perm] < 10) == (idx < 10)).all()
        mixed, _ = aug(x, torch.zeros(8, 2), idx)
        lam_rows = mixed[:, 0, 0, 0]
        # a labelled row mixed with labelled rows only stays within their index range
        assert (lam_rows[idx < 10] < 10).all() and (lam_rows[idx >= 10] >= 10).all()
    with pytest.raises(ValueError, match="needs the batch's row indices"):
        aug(x, torch.zeros(8, 2))


def test_training_over_a_pool_with_nan_placeholders_stays_finite():
    # NaN placeholders make any leak of unlabelled rows into the hard loss a non-finite loss (TrainingError)
    train, val = tiny_data()
    pool_x = torch.randn(12, *SHAPE, generator=torch.Generator().manual_seed(2))
    rows = SplitData(ConcatRows(train.x, pool_x), torch.cat([train.y, torch.full((12, 2), float("nan"))]))
    cached = torch.randn(len(rows), 2)
    student = build_student(TINY, SHAPE, TASK)
    plan = build_objective(
        DistillConfig(alpha=0.5),
        student,
        None,
        cached,
        train.x[:2],
        torch.device("cpu"),
        TASK,
        labelled_rows=24,
    )
    result = fit(student, plan.objective, rows, val, TASK, dataclasses.replace(SETTINGS, epochs=2))
    hist = result.history
    assert len(hist) == 2 and all(
        np.isfinite(h["train_total_loss"]) and h["train_hard_loss"] > 0 for h in hist
    )


def _tiny_teacher(folder):
    torch.manual_seed(0)
    ViTForImageClassification(
        ViTConfig(
            image_size=SHAPE[1:],
            patch_size=16,
            num_channels=1,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            num_labels=2,
            problem_type="regression",
            attn_implementation="eager",
        )
    ).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("cfg", [DistillConfig(alpha=0.5, beta=0.4), DistillConfig(alpha=0.5)])
def test_live_teacher_objectives_mask_the_hard_loss_too(tmp_path, cfg):
    """Feature terms, and augmentation (force_live), run the teacher live on every row, labelled or not."""
    teacher = _tiny_teacher(tmp_path / "teacher")
    student = build_student(TINY, SHAPE, TASK)
    x = torch.randn(4, *SHAPE)
    plan = build_objective(
        cfg, student, teacher, None, x[:2], torch.device("cpu"), TASK, force_live=True, labelled_rows=2
    )
    assert plan.live_teacher
    y = torch.tensor([[0.5, -0.5], [1.0, 0.0], [float("nan")] * 2, [float("nan")] * 2])
    student.eval()  # batch norm from running statistics, so the 2 labelled rows score alike in a batch of 4
    terms = plan.objective(student, x, y, torch.tensor([0, 1, 2, 3]))
    assert all(torch.isfinite(v) for v in terms.values())
    with torch.no_grad():
        expected = TASK.hard_loss(student(pixel_values=x[:2]).logits, y[:2])
    assert float(terms["hard"]) == pytest.approx(float(expected), rel=1e-5)


def test_teacher_outputs_on_the_pool_are_cached_and_keyed_like_the_rest(tmp_path):
    teacher, features = tmp_path / "teacher", tmp_path / "features"
    teacher.mkdir()
    for split in ("train", "unlabeled"):
        (features / split).mkdir(parents=True)
        np.save(features / split / "x.npy", np.zeros((3, 1, 4, 4), np.float32))
    (teacher / "model.safetensors").write_bytes(b"weights")
    meta = {"counts": {"train": 3, "val": 2, "unlabeled": 3}}
    outputs = {"train": torch.zeros(3, 2), "val": torch.ones(2, 2), "unlabeled": torch.full((3, 2), 7.0)}
    key = teacher_cache.cache_key(teacher, features)
    teacher_cache.save(teacher / "predictions", outputs, meta, key)
    out = teacher_cache.load(teacher, features, meta, ("train", "val", "unlabeled"))
    assert torch.equal(out["unlabeled"], outputs["unlabeled"])
    # the key covers the pool's features: other unlabelled audio cannot reuse the cache
    np.save(features / "unlabeled" / "x.npy", np.ones((3, 1, 4, 4), np.float32))
    with pytest.raises(StaleCacheError, match="computed for other features"):
        teacher_cache.load(teacher, features, meta, ("train", "val", "unlabeled"))
