"""The log-mel front end and the preprocess stage on real decoded audio."""

import numpy as np
import torch

from audiokd.config import AudioConfig, DataConfig, SyntheticConfig
from audiokd.data.features import FeatureSet, preprocess
from audiokd.data.frontend import LogMelFrontend
from audiokd.data.manifest import prepare
from audiokd.data.synthetic import generate


def test_frontend_shape_is_samples_over_hop():
    cfg = AudioConfig(sample_rate=16000, duration_s=2.0, n_fft=512, hop_length=250, n_mels=64)
    out = LogMelFrontend(cfg)(np.random.default_rng(0).standard_normal((3, 32000)))
    assert out.shape == (3, 1, 64, 128) and out.dtype == np.float32
    assert np.isfinite(out).all()


def test_preprocess_normalises_with_train_statistics_only(tmp_path):
    generate(SyntheticConfig(clips=30, min_duration_s=0.4, max_duration_s=0.9), tmp_path / "embedded")
    data = DataConfig(manifest=str(tmp_path / "embedded" / "manifest.csv"), seed=1)
    audio = AudioConfig(duration_s=0.5, n_fft=256, hop_length=250, n_mels=16)
    prepare(data, tmp_path / "prepared")
    meta = preprocess(data, audio, tmp_path / "prepared", tmp_path / "features")
    assert meta["shape"] == [1, 16, 32]
    fs = FeatureSet.load(tmp_path / "features")
    train = np.load(tmp_path / "features" / "train" / "x.npy")
    test = np.load(tmp_path / "features" / "test" / "x.npy")
    # train is standardised per mel bin; test is not exactly (it used train's statistics)
    assert np.allclose(train.mean(axis=(0, 1, 3)), 0, atol=1e-4)
    assert np.allclose(train.std(axis=(0, 1, 3)), 1, atol=1e-3)
    assert not np.allclose(test.mean(axis=(0, 1, 3)), 0, atol=1e-4)
    y = fs.split("train").y.numpy()
    assert np.allclose(y.mean(0), 0, atol=1e-5)
    raw = fs.raw_targets("test")
    assert np.allclose(fs.denormalise_targets(fs.normalise_targets(raw)), raw, atol=1e-5)
    assert sum(meta["counts"].values()) == 30


def test_random_crop_keeps_wider_train_clips(tmp_path):
    generate(SyntheticConfig(clips=30, min_duration_s=0.4, max_duration_s=0.9), tmp_path / "embedded")
    data = DataConfig(manifest=str(tmp_path / "embedded" / "manifest.csv"), seed=1)
    audio = AudioConfig(
        duration_s=0.5, n_fft=256, hop_length=250, n_mels=16, random_crop=True, crop_pool_s=1.0
    )
    prepare(data, tmp_path / "prepared")
    meta = preprocess(data, audio, tmp_path / "prepared", tmp_path / "features")
    fs = FeatureSet.load(tmp_path / "features")
    assert meta["shape"] == [1, 16, 32] and fs.frames == 32
    assert fs.split("train").x.shape[-1] == 64 and fs.split("val").x.shape[-1] == 32


def test_classification_targets_are_class_indices(tmp_path):
    import pandas as pd

    generate(SyntheticConfig(clips=30, min_duration_s=0.4, max_duration_s=0.9), tmp_path / "embedded")
    m = pd.read_csv(tmp_path / "embedded" / "manifest.csv")
    m["mood"] = np.where(m.arousal > 0, "excited", "calm")
    m.to_csv(tmp_path / "embedded" / "manifest.csv", index=False)
    data = DataConfig(
        manifest=str(tmp_path / "embedded" / "manifest.csv"), task="classification", label_column="mood"
    )
    prepare(data, tmp_path / "prepared")
    preprocess(data, AudioConfig(duration_s=0.5, n_mels=16), tmp_path / "prepared", tmp_path / "features")
    fs = FeatureSet.load(tmp_path / "features")
    assert fs.task.kind == "classification" and fs.targets == ["calm", "excited"]
    y = fs.split("train").y
    assert y.dtype == torch.int64 and set(y.tolist()) <= {0, 1}
    clips = pd.read_csv(tmp_path / "features" / "train" / "clips.csv")
    assert [fs.targets[i] for i in y.tolist()] == clips["mood"].tolist()
