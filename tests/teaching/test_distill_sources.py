"""Distill with teachers that are not one model: live only where it can run, refused up front otherwise."""

from __future__ import annotations

import dataclasses

import mlflow
import pandas as pd
import pytest
import torch

from audiokd.augment import BatchAugment, ViewBank
from audiokd.config import (
    AugmentConfig,
    BaselineConfig,
    ConfigError,
    DistillConfig,
    EnsembleConfig,
    StudentConfig,
    TeacherConfig,
    build_section,
)
from audiokd.data.features import FeatureSet, clips_table
from audiokd.distill import teacher_cache
from audiokd.distill.baseline import train_baseline
from audiokd.distill.run import distill
from audiokd.io import read_json, write_json
from audiokd.models import predict
from audiokd.models.teacher import build_teacher
from audiokd.teaching.ensemble import combine_members
from audiokd.teaching.live import load_live, score_views
from audiokd.teaching.outputs import import_outputs
from teacher_helpers import RUNTIME, SHAPE, TARGETS, TINY, TRACKING, data_config, make_features

STUDENT = StudentConfig(hidden_sizes=(16, 16, 16), neck_hidden_sizes=(8, 8, 8, 8, 8, 8, 16), num_heads=2)
KD = DistillConfig(alpha=0.5, epochs=1, batch_size=4)
MIXUP = AugmentConfig(mixup_alpha=0.2)


def _ensemble(workdir, features):
    fs = FeatureSet.load(features)
    for seed, name in enumerate(("a", "b")):
        folder = workdir / "members" / name
        torch.manual_seed(seed)
        model = build_teacher(TINY, SHAPE, fs.task)
        model.save_pretrained(folder)
        outputs = {s: predict(model, fs.split(s).x) for s in ("train", "val", "test")}
        key = teacher_cache.cache_key(folder, features)
        teacher_cache.save(folder / "predictions", outputs, fs.meta, key)
        write_json(folder / "meta.json", {"kind": "single", "run_id": None, "params": 1, "val_ccc_mean": 0})
    out = workdir / "teacher"
    combine_members(data_config(), EnsembleConfig(members={"a": {}, "b": {"seed": 1}}), features,
                    workdir / "members", out)  # fmt: skip
    return out


def _distill(workdir, features, teacher, cfg=KD, augment=MIXUP):
    return distill(
        data_config(), STUDENT, cfg, TRACKING, RUNTIME, augment, features, teacher, workdir / "student"
    )


def _outputs_teacher(workdir):
    """Features and a teacher folder made from a file of outputs (the labels themselves, as any model's)."""
    features = make_features(workdir / "features")
    csv = workdir / "outputs.csv"
    rows = [clips_table(features, s)[["path", *TARGETS]] for s in ("train", "val")]
    pd.concat(rows).to_csv(csv, index=False)
    import_outputs(data_config(), TeacherConfig(outputs=str(csv)), features, workdir / "teacher")
    return features


def test_a_file_of_outputs_cannot_run_live_under_augmentation(workdir):
    features = _outputs_teacher(workdir)
    with pytest.raises(ConfigError, match=r"^augment.mixup_alpha: augmented batches need the teacher run"):
        _distill(workdir, features, workdir / "teacher")
    assert not (workdir / "student").exists()


def test_a_file_of_outputs_teaches_augmented_students_from_the_clean_clips(workdir):
    """augment.teacher_view clean: the cached outputs are the targets of the augmented views, no live run."""
    features = _outputs_teacher(workdir)
    augment = dataclasses.replace(MIXUP, freq_mask=2, teacher_view="clean")
    meta = _distill(workdir, features, workdir / "teacher", augment=augment)
    run = mlflow.MlflowClient().get_run(meta["run_id"])
    assert run.data.tags["kd.teacher"] == "cached" and run.info.status == "FINISHED"
    assert run.data.params["augment.teacher_view"] == "clean"
    assert {"train/hard_loss", "train/soft_loss"} <= set(run.data.metrics)


def test_an_ensemble_cannot_give_hidden_layers(workdir):
    features = make_features(workdir / "features")
    teacher = _ensemble(workdir, features)
    with pytest.raises(ConfigError, match=r"^distill.beta/distill.gamma > 0 compare hidden layers"):
        _distill(workdir, features, teacher, dataclasses.replace(KD, beta=0.5), AugmentConfig())
    assert not (workdir / "student").exists()


@pytest.mark.slow
def test_an_ensemble_runs_live_under_augmentation(workdir):
    features = make_features(workdir / "features")
    teacher = _ensemble(workdir, features)
    meta = _distill(workdir, features, teacher)
    run = mlflow.MlflowClient().get_run(meta["run_id"])
    assert run.data.tags["kd.teacher"] == "live" and run.info.status == "FINISHED"
    assert (workdir / "student" / "model.safetensors").is_file()


def test_min_steps_lengthens_a_small_sets_epochs_for_distill_and_the_baseline(workdir):
    """distill.min_steps: on a set too small for it, each epoch makes several passes, and the no-KD baseline
    trains at least as many optimizer steps (the kd_gain compares equal budgets)."""
    features = make_features(workdir / "features")
    teacher = _ensemble(workdir, features)
    n = FeatureSet.load(features).count("train")
    cfg = dataclasses.replace(KD, epochs=2, min_steps=3 * n)  # batch 4: one pass is at most n / 4 steps
    _distill(workdir, features, teacher, cfg, AugmentConfig())
    kd = read_json(workdir / "student" / "meta.json")["budget"]
    train_baseline(data_config(), STUDENT, cfg, BaselineConfig(), TRACKING, RUNTIME, AugmentConfig(),
                   features, workdir / "baseline")  # fmt: skip
    no_kd = read_json(workdir / "baseline" / "meta.json")["budget"]
    assert kd["passes"] > 1 and kd["steps"] >= 3 * n
    assert no_kd["steps"] >= kd["steps"] and no_kd["epochs"] == kd["epochs"] == 2


STORED = AugmentConfig(freq_mask=3, time_mask=4, num_masks=2, teacher_view="stored", views=3)


def test_stored_views_are_scored_on_the_very_input_the_student_sees(workdir):
    """teacher_view stored: the target of a row is the teacher's output on the view the batch showed."""
    features = make_features(workdir / "features")
    teacher = _ensemble(workdir, features)
    fs = FeatureSet.load(features)
    train = fs.split("train")
    bank = ViewBank(STORED, len(train), STORED.views, SHAPE[1], fs.frames, seed=0)
    scored = score_views(teacher, fs.task, train.x, bank, torch.device("cpu"))
    assert scored.shape == (len(train), STORED.views, len(TARGETS))
    aug = BatchAugment(STORED, fs.task, fs.frames, seed=0)
    aug.bank = bank
    idx = torch.tensor([5, 0, 3, 1])
    x, _ = aug(train.x[idx], train.y[idx], idx)
    live = load_live(teacher, fs.task)
    with torch.no_grad():
        on_view = live(pixel_values=x).logits
    assert torch.allclose(on_view, scored[idx, aug.last_views], atol=1e-5)
    with torch.no_grad():
        on_clean = live(pixel_values=train.x[idx]).logits
    assert not torch.allclose(on_clean, on_view, atol=1e-5)  # the masks change what the teacher says


def test_an_ensemble_teaches_from_stored_views_in_one_distill_run(workdir):
    features = make_features(workdir / "features")
    teacher = _ensemble(workdir, features)
    meta = _distill(workdir, features, teacher, augment=STORED)
    run = mlflow.MlflowClient().get_run(meta["run_id"])
    assert run.data.tags["kd.teacher"] == "stored views" and run.info.status == "FINISHED"
    assert run.data.params["augment.views"] == "3"
    assert {"train/hard_loss", "train/soft_loss"} <= set(run.data.metrics)


def test_a_file_of_outputs_cannot_score_stored_views(workdir):
    features = _outputs_teacher(workdir)
    with pytest.raises(ConfigError, match=r"^augment.freq_mask, augment.time_mask: augmented batches need"):
        _distill(workdir, features, workdir / "teacher", augment=STORED)
    assert not (workdir / "student").exists()


def test_stored_views_need_masks():
    with pytest.raises(ConfigError, match=r"^augment.teacher_view = stored keeps masked views"):
        build_section(AugmentConfig, {"teacher_view": "stored", "mixup_alpha": 0.2}, "augment")
    assert build_section(AugmentConfig, {"teacher_view": "stored"}, "augment").views == 8  # nothing on: fine
