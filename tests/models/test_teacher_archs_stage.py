"""The train_teacher stage function with each teacher.arch and with an AST checkpoint, on tiny features."""

from __future__ import annotations

import json

import mlflow
import pytest
import torch
from transformers import ASTConfig, ASTForAudioClassification

from audiokd.config import (
    AudioConfig,
    AugmentConfig,
    ConfigError,
    DataConfig,
    RuntimeConfig,
    SyntheticConfig,
    TeacherConfig,
    TrackingConfig,
)
from audiokd.data.features import FeatureSet, preprocess
from audiokd.data.manifest import prepare
from audiokd.data.synthetic import generate
from audiokd.models import predict
from audiokd.models.teacher import load_teacher
from audiokd.teacher_training import train_teacher
from audiokd.training import epoch_steps, passes_for

pytestmark = pytest.mark.slow  # the real stage: MLflow store, checkpoints, a few epochs per arch

# what an AudioSet AST checkpoint needs, shrunk: 16 kHz, 10 ms hop (160 samples); 16 mels; 0.5 s = 50 frames
AUDIO = AudioConfig(sample_rate=16000, duration_s=0.5, n_fft=400, hop_length=160, n_mels=16)
TINY = dict(
    hidden_size=32,
    num_layers=2,
    num_heads=2,
    intermediate_size=64,
    patch_size=8,
    ast_stride=8,
    cnn_depths=(1, 1),
    cnn_hidden_sizes=(8, 16),
    mobilevit_hidden_sizes=(16, 16, 16),
    mobilevit_neck_hidden_sizes=(8, 8, 8, 8, 8, 8, 16),
    epochs=2,
    batch_size=8,
    lr=1e-3,
)


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    generate(SyntheticConfig(clips=30, min_duration_s=0.4, max_duration_s=0.9), root / "embedded")
    data = DataConfig(manifest=str(root / "embedded" / "manifest.csv"), seed=1)
    prepare(data, root / "prepared")
    preprocess(data, AUDIO, root / "prepared", root / "features")
    return data, root / "features"


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("AUDIOKD_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    yield
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


def _train(features, teacher: TeacherConfig, out):
    data, folder = features
    runtime = RuntimeConfig(device="cpu", num_threads=2)
    return train_teacher(data, teacher, TrackingConfig(experiment="t"), runtime, AugmentConfig(), folder, out)


def _ast_checkpoint(folder, mel_bins: int = 16):
    torch.manual_seed(3)
    config = ASTConfig(
        num_mel_bins=mel_bins,
        max_length=100,
        patch_size=8,
        frequency_stride=8,
        time_stride=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=9,
    )
    ASTForAudioClassification(config).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("arch", ["vit", "ast", "resnet", "convnext", "mobilevit"])
def test_the_stage_trains_every_arch(features, store, tmp_path, arch):
    meta = _train(features, TeacherConfig(arch=arch, **TINY), tmp_path / "teacher")
    assert meta["arch"] == arch and meta["pretrained"] == ""
    model = load_teacher(tmp_path / "teacher")
    fs = FeatureSet.load(features[1])
    out = predict(model, fs.split("test").x)
    assert out.shape == (len(fs.split("test")), 2) and torch.isfinite(out).all()
    assert (tmp_path / "teacher" / "predictions").is_dir()


def test_the_stage_fine_tunes_an_ast_checkpoint(features, store, tmp_path):
    ckpt = _ast_checkpoint(tmp_path / "ckpt")
    meta = _train(features, TeacherConfig(arch="ast", pretrained=str(ckpt), **TINY), tmp_path / "teacher")
    assert meta["arch"] == "ast" and meta["pretrained"] == str(ckpt)
    saved = json.loads((tmp_path / "teacher" / "config.json").read_text())
    assert saved["model_type"] == "audio-spectrogram-transformer" and saved["max_length"] == 50
    model = load_teacher(tmp_path / "teacher")
    assert model.config.num_labels == 2 and model.config.problem_type == "regression"
    # 2 x 6 patches (16 mels x 50 frames, patch 8, stride 8) and the two special tokens
    assert model.audio_spectrogram_transformer.embeddings.position_embeddings.shape == (1, 14, 32)


def test_an_ast_checkpoint_for_other_mel_bins_stops_the_stage_before_training(features, store, tmp_path):
    ckpt = _ast_checkpoint(tmp_path / "ckpt", mel_bins=128)
    teacher = TeacherConfig(arch="ast", pretrained=str(ckpt), **TINY)
    with pytest.raises(ConfigError, match=r"audio.n_mels = 16 \(needs 128\)"):
        _train(features, teacher, tmp_path / "teacher")
    assert not (tmp_path / "teacher").exists() and not (tmp_path / "checkpoints").exists()


def test_passes_for_reaches_min_steps_only_where_epochs_fall_short():
    assert passes_for(150, 32, 15, 0) == 1  # off
    # an epoch of p passes is p x 150 shuffled rows in batches of 32: 4 passes 19 steps (285), 5: 24 (360)
    assert passes_for(150, 32, 15, 300) == 5
    assert passes_for(800, 32, 15, 300) == 1  # 25 steps a pass: 375 steps already


def test_min_steps_makes_each_teacher_epoch_several_passes(features, store, tmp_path):
    meta = _train(features, TeacherConfig(arch="resnet", **{**TINY, "min_steps": 20}), tmp_path / "teacher")
    n, b, epochs = FeatureSet.load(features[1]).count("train"), TINY["batch_size"], TINY["epochs"]
    assert epoch_steps(n, b) * epochs < 20  # one pass an epoch falls short
    assert meta["passes"] == passes_for(n, b, epochs, 20) > 1
    steps = mlflow.MlflowClient().get_metric_history(meta["run_id"], "train/total_loss")
    assert len(steps) == epoch_steps(n * meta["passes"], b) * epochs >= 20
    assert epoch_steps(n * (meta["passes"] - 1), b) * epochs < 20  # the fewest passes that get there
