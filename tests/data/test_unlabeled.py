"""The unlabelled manifest: checked like the labelled one, prepared beside it, a features split of its own."""

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from audiokd.config import AudioConfig, ConfigError, DataConfig, SyntheticConfig, build_section
from audiokd.data.features import FeatureSet, compute_features, preprocess
from audiokd.data.manifest import ManifestError, prepare
from audiokd.data.synthetic import generate


@pytest.fixture
def embedded(tmp_path):
    """The synthetic set with 30 labelled clips and an unlabelled pool of 12 beside it."""
    folder = tmp_path / "embedded"
    generate(SyntheticConfig(clips=30, unlabeled_clips=12, min_duration_s=0.4, max_duration_s=0.9), folder)
    # synthesize marks its pool in the manifest (split "unlabeled"); here it goes to a file of its own
    rows = pd.read_csv(folder / "manifest.csv")
    pool = rows.split == "unlabeled"
    rows.loc[pool, ["path"]].to_csv(folder / "unlabeled.csv", index=False)
    rows.loc[~pool].drop(columns="split").to_csv(folder / "manifest.csv", index=False)
    return folder


def _cfg(folder, unlabeled="unlabeled.csv", **kw):
    return DataConfig(manifest=str(folder / "manifest.csv"), unlabeled_manifest=unlabeled, seed=1, **kw)


def test_prepare_writes_the_pool_beside_the_prepared_manifest(embedded, tmp_path):
    prepare(_cfg(embedded), tmp_path / "prepared")
    pool = pd.read_csv(tmp_path / "prepared" / "unlabeled.csv")
    assert list(pool.columns) == ["path"] and len(pool) == 12
    assert all(p.endswith(f"unlabeled_{i:05d}.wav") for i, p in enumerate(pool.path))
    summary = json.loads((tmp_path / "prepared" / "summary.json").read_text())
    assert summary["unlabeled"] == 12 and summary["clips"] == 30
    assert summary["unlabeled_source"] == str(embedded / "unlabeled.csv")


def test_no_unlabelled_manifest_writes_no_pool(embedded, tmp_path):
    prepare(_cfg(embedded, unlabeled=""), tmp_path / "prepared")
    assert not (tmp_path / "prepared" / "unlabeled.csv").exists()
    assert "unlabeled" not in json.loads((tmp_path / "prepared" / "summary.json").read_text())


def _break_two(folder):
    """A missing and a silent file in the pool; returns their paths as the manifest writes them."""
    pool = pd.read_csv(folder / "unlabeled.csv")
    pool.loc[2, "path"] = "audio/gone.wav"
    sf.write(folder / pool.path[5], np.zeros(4000), 22050)
    pool.to_csv(folder / "unlabeled.csv", index=False)
    return pool.path[2], pool.path[5]


def test_a_bad_unlabelled_file_is_refused_by_name_and_nothing_is_written(embedded, tmp_path):
    missing, silent = _break_two(embedded)
    with pytest.raises(ManifestError) as e:
        prepare(_cfg(embedded), tmp_path / "prepared")
    lines = str(e.value).splitlines()
    assert f"{embedded / 'unlabeled.csv'} row 4: {missing}: audio file not found" in lines
    assert any(line.startswith(f"{embedded / 'unlabeled.csv'} row 7: {silent}: all-silent") for line in lines)
    assert not (tmp_path / "prepared").exists()


def test_labelled_and_unlabelled_problems_are_reported_together(embedded, tmp_path):
    _break_two(embedded)
    labelled = pd.read_csv(embedded / "manifest.csv", dtype={"arousal": str})
    labelled.loc[0, "arousal"] = "n/a"
    labelled.to_csv(embedded / "manifest.csv", index=False)
    with pytest.raises(ManifestError) as e:
        prepare(_cfg(embedded), tmp_path / "prepared")
    text = str(e.value)
    assert "manifest.csv row 2: audio/clip_00000.wav: target 'arousal'" in text
    assert "unlabeled.csv row 4: audio/gone.wav: audio file not found" in text


def test_skip_drops_bad_unlabelled_clips_into_rejected_csv(embedded, tmp_path):
    missing, silent = _break_two(embedded)
    prepare(_cfg(embedded, on_bad_clip="skip"), tmp_path / "prepared")
    assert len(pd.read_csv(tmp_path / "prepared" / "unlabeled.csv")) == 10
    rejected = pd.read_csv(tmp_path / "prepared" / "rejected.csv")
    assert list(rejected.path) == [missing, silent] and list(rejected.row) == [4, 7]
    assert (rejected.manifest == str(embedded / "unlabeled.csv")).all()
    assert json.loads((tmp_path / "prepared" / "summary.json").read_text())["rejected"] == 2


def test_a_clip_listed_in_both_manifests_is_refused(embedded, tmp_path):
    pool = pd.read_csv(embedded / "unlabeled.csv")
    pool.loc[0, "path"] = "audio/clip_00003.wav"  # a labelled clip, maybe a test one
    pool.to_csv(embedded / "unlabeled.csv", index=False)
    with pytest.raises(
        ManifestError, match=r"row 2: audio/clip_00003.wav: also listed in the labelled manifest"
    ):
        prepare(_cfg(embedded), tmp_path / "prepared")


def test_a_missing_unlabelled_manifest_or_path_column_names_the_key(embedded, tmp_path):
    with pytest.raises(ManifestError, match=r"nope.csv: manifest not found \(data.unlabeled_manifest\)"):
        prepare(_cfg(embedded, unlabeled="nope.csv"), tmp_path / "prepared")
    pd.DataFrame({"file": ["a.wav"]}).to_csv(embedded / "bad.csv", index=False)
    with pytest.raises(ManifestError, match=r"bad.csv: missing column\(s\) path"):
        prepare(_cfg(embedded, unlabeled="bad.csv"), tmp_path / "prepared")


def test_an_absolute_unlabelled_manifest_is_refused_with_the_key():
    with pytest.raises(ConfigError, match=r"data.unlabeled_manifest = '/data/pool.csv': give it relative"):
        build_section(DataConfig, {"unlabeled_manifest": "/data/pool.csv"}, "data")


@pytest.mark.parametrize("random_crop", [False, True])
def test_preprocess_makes_an_unlabelled_split_with_the_train_statistics(embedded, tmp_path, random_crop):
    data = _cfg(embedded)
    audio = AudioConfig(
        duration_s=0.5, n_fft=256, hop_length=250, n_mels=16, random_crop=random_crop, crop_pool_s=1.0
    )
    prepare(data, tmp_path / "prepared")
    meta = preprocess(data, audio, tmp_path / "prepared", tmp_path / "features")
    assert meta["counts"] == {"train": 21, "val": 4, "test": 5, "unlabeled": 12}
    fs = FeatureSet.load(tmp_path / "features")
    pool = fs.split("unlabeled")
    assert pool.x.shape[-1] == fs.split("train").x.shape[-1] == (64 if random_crop else 32)
    # normalised with the train split's mel statistics, not its own
    paths = pd.read_csv(tmp_path / "features" / "unlabeled" / "clips.csv").path.tolist()
    raw = compute_features(paths, audio, seconds=1.0 if random_crop else None)
    mean = np.asarray(fs.stats["mel_mean"])[None, None, :, None]
    std = np.asarray(fs.stats["mel_std"])[None, None, :, None]
    assert np.allclose(pool.x.numpy(), (raw - mean) / std, atol=1e-4)
    assert not np.allclose(pool.x.numpy().mean(axis=(0, 1, 3)), 0, atol=1e-3)
    # no targets: NaN-free placeholders of the targets' shape and type
    assert not (tmp_path / "features" / "unlabeled" / "y.npy").exists()
    assert pool.y.shape == (12, 2) and pool.y.dtype == torch.float32 and not pool.y.any()
    assert fs.count("unlabeled") == 12 and fs.count("nothing") == 0


def test_without_a_pool_the_features_are_as_before(embedded, tmp_path):
    data, audio = _cfg(embedded, unlabeled=""), AudioConfig(duration_s=0.5, n_fft=256, n_mels=16)
    prepare(data, tmp_path / "prepared")
    meta = preprocess(data, audio, tmp_path / "prepared", tmp_path / "features")
    assert set(meta["counts"]) == {"train", "val", "test"}
    assert not (tmp_path / "features" / "unlabeled").exists()


def test_classification_placeholders_are_class_indices(embedded, tmp_path):
    m = pd.read_csv(embedded / "manifest.csv")
    m["mood"] = np.where(m.arousal > 0, "excited", "calm")
    m.to_csv(embedded / "manifest.csv", index=False)
    data = _cfg(embedded, task="classification", label_column="mood")
    prepare(data, tmp_path / "prepared")
    preprocess(data, AudioConfig(duration_s=0.5, n_mels=16), tmp_path / "prepared", tmp_path / "features")
    pool = FeatureSet.load(tmp_path / "features").split("unlabeled")
    assert pool.y.shape == (12,) and pool.y.dtype == torch.int64
