"""Out-of-fold teacher outputs: each train clip's cached target comes from a teacher that never saw it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from audiokd.config import AugmentConfig, ConfigError
from audiokd.data.features import FeatureSet
from audiokd.distill import teacher_cache
from audiokd.io import read_json
from audiokd.models import predict
from audiokd.models.teacher import load_teacher
from audiokd.teacher_training import train_teacher
from audiokd.teaching.combine import mean_outputs
from audiokd.teaching.folder import describe, kind, models, parts, runs_live
from audiokd.teaching.folds import assign_folds
from teacher_helpers import RUNTIME, TINY, TRACKING, data_config, make_features


def test_clip_folds_are_balanced_and_seeded():
    folds = assign_folds(10, 3, seed=1)
    assert sorted(np.bincount(folds)) == [3, 3, 4]
    assert np.array_equal(folds, assign_folds(10, 3, seed=1))
    assert not np.array_equal(folds, assign_folds(10, 3, seed=2))


def test_group_folds_never_split_a_group():
    groups = [f"speaker{i % 5}" for i in range(23)]
    folds = assign_folds(23, 3, seed=0, groups=groups)
    for g in set(groups):
        assert len({int(f) for f, h in zip(folds, groups, strict=True) if h == g}) == 1, g
    assert set(folds.tolist()) == {0, 1, 2}


def test_too_many_folds_are_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"teacher.folds = 4 is more than the 3 groups of the train split"):
        assign_folds(9, 4, seed=0, groups=["a", "b", "c"] * 3)
    with pytest.raises(ConfigError, match=r"teacher.folds = 5 is more than the 4 train clips"):
        assign_folds(4, 5, seed=0)


@pytest.mark.parametrize("groups", [0, 4])
def test_each_cached_train_output_comes_from_the_fold_teacher_that_held_the_clip_out(workdir, groups):
    features = make_features(workdir / "features", groups=groups)
    out = workdir / "teacher"
    cfg = dataclasses.replace(TINY, folds=3)
    meta = train_teacher(data_config(), cfg, TRACKING, RUNTIME, AugmentConfig(), features, out)
    assert meta["kind"] == "folds" and kind(out) == "folds" and not runs_live(out)
    assert "3 fold teachers" in describe(out) and len(models(out)) == 3
    fs = FeatureSet.load(features)
    cache = teacher_cache.load(out, features, fs.meta, ("train", "val", "test"))
    assignment = read_json(out / "folds.json")
    fold = np.asarray(assignment["fold"])
    assert assignment["by"] == ("group" if groups else "clip") and len(fold) == 12
    if groups:
        clip_groups = [f"g{i % groups}" for i in range(12)]
        assert all(len({fold[i] for i in range(12) if clip_groups[i] == g}) == 1 for g in set(clip_groups))
    x = fs.split("train").x
    teachers = {int(p.name): load_teacher(p) for p in parts(out).values()}
    for f in teachers:
        fold_meta = read_json(out / "folds" / str(f) / "meta.json")
        # teacher f trained on the clips of the other folds only
        assert fold_meta["fold"] == f and fold_meta["train_clips"] == int((fold != f).sum())
    for j in range(12):
        own = predict(teachers[int(fold[j])], x[j : j + 1])[0]
        assert torch.allclose(cache["train"][j], own, atol=1e-5), j
        # and not the output of a teacher that saw clip j (they differ: the targets are out of fold)
        seen = predict(teachers[int((fold[j] + 1) % 3)], x[j : j + 1])[0]
        assert not torch.allclose(cache["train"][j], seen, atol=1e-5), j
    for split in ("val", "test"):
        each = [predict(teachers[f], fs.split(split).x) for f in range(3)]
        assert torch.allclose(cache[split], mean_outputs(each, fs.task), atol=1e-5)


def test_classification_folds_store_log_mean_probabilities_for_val(workdir):
    features = make_features(workdir / "features", task="classification")
    out = workdir / "teacher"
    cfg = dataclasses.replace(TINY, folds=2)
    train_teacher(data_config("classification"), cfg, TRACKING, RUNTIME, AugmentConfig(), features, out)
    fs = FeatureSet.load(features)
    val = teacher_cache.load(out, features, fs.meta, ("val",))["val"]
    each = [torch.softmax(predict(load_teacher(p), fs.split("val").x), -1) for p in parts(out).values()]
    assert torch.allclose(val.softmax(-1), torch.stack(each).mean(0), atol=1e-5)
    assert torch.allclose(val.exp().sum(-1), torch.ones(len(val)), atol=1e-5)  # logits are log-probabilities
