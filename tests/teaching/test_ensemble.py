"""Teacher ensembles: members train alone, the cache is their mean, live runs only where it can."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from audiokd.config import AugmentConfig, ConfigError, EnsembleConfig
from audiokd.data.features import FeatureSet
from audiokd.distill import teacher_cache
from audiokd.io import read_json, write_json
from audiokd.models import predict
from audiokd.models.teacher import build_teacher
from audiokd.teacher_training import train_teacher
from audiokd.teaching.ensemble import combine_members, member_settings, skip_member
from audiokd.teaching.folder import kind, models, parts
from audiokd.teaching.live import MeanTeacher, augment_keys, check_live, load_live
from teacher_helpers import RUNTIME, SHAPE, TINY, TRACKING, data_config, make_features

SPLITS = ("train", "val", "test")


def _untrained_member(folder: Path, features: Path, seed: int) -> None:
    """A real (randomly initialised) teacher folder with its cache, without spending time on training."""
    fs = FeatureSet.load(features)
    torch.manual_seed(seed)
    model = build_teacher(TINY, SHAPE, fs.task)
    model.save_pretrained(folder)
    outputs = {s: predict(model, fs.split(s).x) for s in SPLITS}
    teacher_cache.save(folder / "predictions", outputs, fs.meta, teacher_cache.cache_key(folder, features))
    meta = {"kind": "single", "run_id": f"run{seed}", "params": 1, f"val_{fs.task.primary}": 0}
    write_json(folder / "meta.json", meta)


def test_member_settings_apply_the_overrides_and_the_seed():
    ens = EnsembleConfig(members={"a": {"seed": 3, "lr": 0.01}, "b": {}})
    teacher, runtime = member_settings(TINY, ens, RUNTIME, "a")
    assert teacher.lr == 0.01 and teacher.hidden_size == TINY.hidden_size and runtime.seed == 3
    teacher, runtime = member_settings(TINY, ens, RUNTIME, "b")
    assert teacher == TINY and runtime.seed == RUNTIME.seed
    with pytest.raises(ConfigError, match=r"ensemble.members.c: no such member \(members: a, b\)"):
        member_settings(TINY, ens, RUNTIME, "c")
    ens = EnsembleConfig(members={"a": {}, "b": {"seed_offset": 1000}})
    seeds = [member_settings(TINY, ens, RUNTIME, n)[1].seed for n in ("a", "b")]
    assert seeds == [RUNTIME.seed, RUNTIME.seed + 1000]  # a runtime.seed sweep gives every member a new seed
    bad = EnsembleConfig(members={"a": {"num_heads": 3}})  # valid alone, but 16 is not divisible by 3
    with pytest.raises(ConfigError, match=r"ensemble.members.a.hidden_size = 16 must be divisible"):
        member_settings(TINY, bad, RUNTIME, "a")


def test_an_ensemble_of_two_caches_exactly_the_mean_of_its_members(workdir):
    features = make_features(workdir / "features")
    ens = EnsembleConfig(members={"a": {"seed": 1}, "b": {"seed": 2, "lr": 0.002}})
    for name in ens.members:
        teacher, runtime = member_settings(TINY, ens, RUNTIME, name)
        meta = train_teacher(
            data_config(),
            teacher,
            TRACKING,
            runtime,
            AugmentConfig(),
            features,
            workdir / "members" / name,
            member=name,
        )
        assert meta["member"] == name and meta["kind"] == "single"
    out = workdir / "teacher"
    meta = combine_members(data_config(), ens, features, workdir / "members", out)
    fs = FeatureSet.load(features)
    got = teacher_cache.load(out, features, fs.meta, SPLITS)
    a, b = (teacher_cache.load(workdir / "members" / n, features, fs.meta, SPLITS) for n in ("a", "b"))
    for s in SPLITS:
        assert not torch.equal(a[s], b[s])  # two different teachers
        assert torch.equal(got[s], (a[s] + b[s]) / 2), s
    assert meta["kind"] == "ensemble" and kind(out) == "ensemble" and meta["members"] == ["a", "b"]
    assert set(parts(out)) == {"a", "b"} and len(models(out)) == 2
    assert meta["params"] == 2 * read_json(workdir / "members" / "a" / "meta.json")["params"]
    runs = [read_json(workdir / "members" / n / "meta.json")["run_id"] for n in ("a", "b")]
    assert list(meta["run_ids"].values()) == runs


def test_classification_members_combine_as_log_mean_probabilities(workdir):
    features = make_features(workdir / "features", task="classification")
    for seed, name in enumerate(("a", "b")):
        _untrained_member(workdir / "members" / name, features, seed)
    ens = EnsembleConfig(members={"a": {"seed": 1}, "b": {"seed": 2}})
    out = workdir / "teacher"
    combine_members(data_config("classification"), ens, features, workdir / "members", out)
    fs = FeatureSet.load(features)
    got = teacher_cache.load(out, features, fs.meta, SPLITS)
    a, b = (teacher_cache.load(workdir / "members" / n, features, fs.meta, SPLITS) for n in ("a", "b"))
    for s in SPLITS:
        mean_p = (a[s].softmax(-1) + b[s].softmax(-1)) / 2
        assert torch.allclose(got[s], mean_p.log(), atol=1e-6)
        assert torch.allclose(got[s].softmax(-1), mean_p, atol=1e-6)  # what softmax_kl sees at T = 1


def test_a_member_without_its_folder_is_refused(workdir):
    features = make_features(workdir / "features")
    _untrained_member(workdir / "members" / "a", features, 0)
    ens = EnsembleConfig(members={"a": {"seed": 1}, "b": {"seed": 2}})
    with pytest.raises(ConfigError, match=r"ensemble.members: no trained member in .*members for b;"):
        combine_members(data_config(), ens, features, workdir / "members", workdir / "teacher")
    assert not (workdir / "teacher").exists()


def test_a_live_ensemble_is_the_mean_of_its_members_and_only_for_augmentation(workdir):
    features = make_features(workdir / "features")
    for seed, name in enumerate(("a", "b")):
        _untrained_member(workdir / "members" / name, features, seed)
    out = workdir / "teacher"
    combine_members(
        data_config(), EnsembleConfig(members={"a": {}, "b": {"seed": 5}}), features, workdir / "members", out
    )
    fs = FeatureSet.load(features)
    keys = augment_keys(AugmentConfig(mixup_alpha=0.2), random_crop=False)
    assert keys == ["augment.mixup_alpha"]
    check_live(out, hidden=False, aug_keys=keys)  # augmentation: the members run together
    live = load_live(out, fs.task)
    assert isinstance(live, MeanTeacher)
    x = fs.split("val").x
    cached = teacher_cache.load(out, features, fs.meta, ("val",))["val"]
    assert torch.allclose(predict(live, x), cached, atol=1e-6)
    hidden = (
        r"^distill.beta/distill.gamma > 0 compare hidden layers, .* holds an ensemble of 2 teachers \(a, b\)"
        r".*: set distill.beta and distill.gamma to 0$"
    )
    with pytest.raises(ConfigError, match=hidden):
        check_live(out, hidden=True, aug_keys=[])


def test_fold_teachers_and_files_of_outputs_never_run_live(workdir):
    folds = workdir / "folds"
    (folds / "folds" / "0").mkdir(parents=True)
    write_json(folds / "meta.json", {"kind": "folds", "folds": 1})
    byo = workdir / "byo"
    byo.mkdir()
    write_json(byo / "meta.json", {"kind": "outputs", "source": "mine.csv"})
    keys = augment_keys(dataclasses.replace(AugmentConfig(), freq_mask=8), random_crop=True)
    assert keys == ["augment.freq_mask", "audio.random_crop"]
    refused = (
        r"^augment.freq_mask, audio.random_crop: augmented batches need the teacher run live, "
        r"but .*byo holds outputs read from a file \(mine.csv\), no model \(no model to run\): "
        r"turn augment.freq_mask, audio.random_crop off$"
    )
    with pytest.raises(ConfigError, match=refused):
        check_live(byo, hidden=False, aug_keys=keys)
    with pytest.raises(ConfigError, match=r"out-of-fold targets that exist only as cached outputs"):
        check_live(folds, hidden=False, aug_keys=keys)


def test_a_disabled_member_writes_only_its_marker(workdir):
    out = workdir / "members" / "a"
    skip_member("a", out)
    assert sorted(p.name for p in out.iterdir()) == ["meta.json"]
    assert read_json(out / "meta.json")["enabled"] is False
