"""`audiokd predict`: a real (tiny) student on real wav and flac files, preprocessed as the pipeline does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiokd.cli import main
from audiokd.config import AudioConfig, StudentConfig
from audiokd.data.features import compute_features
from audiokd.models.student import build_student, load_student
from audiokd.predict import Preprocessor
from audiokd.tasks import Task

AUDIO = AudioConfig(sample_rate=16000, duration_s=1.0, n_fft=256, hop_length=250, n_mels=32)
SHAPE = [1, 32, 64]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    """A features folder (meta + stats), a saved tiny student, a stereo 44.1 kHz wav and a mono flac."""
    root = tmp_path_factory.mktemp("predict")
    features = root / "features"
    features.mkdir()
    audio = {k: getattr(AUDIO, k) for k in ("sample_rate", "duration_s", "n_fft", "hop_length", "n_mels")}
    meta = {"task": "regression", "targets": ["arousal", "valence"], "shape": SHAPE, "audio": audio}
    rng = np.random.default_rng(0)
    stats = {
        "mel_mean": (rng.normal(size=32) - 40).tolist(),
        "mel_std": (rng.uniform(5, 15, size=32)).tolist(),
        "target_mean": [0.1, -0.2],
        "target_std": [2.0, 0.5],
    }
    (features / "meta.json").write_text(json.dumps(meta))
    (features / "stats.json").write_text(json.dumps(stats))
    torch.manual_seed(0)
    # the small-ViT student family: untrained, its outputs already vary with the input (an untrained HF
    # MobileViT's are close to constant in eval mode, which would let a wrong feature path pass)
    cfg = StudentConfig(arch="vit", vit_hidden_size=32, vit_layers=1, vit_intermediate_size=64, num_heads=2)
    student = build_student(cfg, tuple(SHAPE), Task("regression", ("arousal", "valence")))
    student.save_pretrained(root / "student")
    (root / "student" / "meta.json").write_text(json.dumps({"input_shape": SHAPE}))
    t = np.arange(int(1.4 * 44100)) / 44100
    chirp = (0.3 * np.sin(2 * np.pi * (200 + 400 * t) * t)).astype(np.float32)
    sf.write(root / "a.wav", np.stack([chirp, 0.2 * chirp], axis=1), 44100)
    t = np.arange(int(0.7 * 22050)) / 22050
    sf.write(root / "b.flac", (0.5 * np.sign(np.sin(2 * np.pi * 150 * t))).astype(np.float32), 22050)
    return {"root": root, "features": features, "student": root / "student"}


def test_features_match_the_preprocess_stage(setup):
    prep = Preprocessor.load(setup["features"])
    for name in ("a.wav", "b.flac"):
        path = str(setup["root"] / name)
        ours = prep.features(path)
        raw = compute_features([path], AUDIO)  # what preprocess computes before normalising
        expected = (raw - prep.mel_mean[None, None, :, None]) / prep.mel_std[None, None, :, None]
        assert ours.shape == (1, *SHAPE)
        np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)


def test_predict_prints_destandardised_targets_per_file(setup, capsys):
    files = [str(setup["root"] / "a.wav"), str(setup["root"] / "b.flac")]
    args = ["predict", *files, "--model", str(setup["student"]), "--features", str(setup["features"])]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    prep = Preprocessor.load(setup["features"])
    model = load_student(setup["student"])
    assert len(lines) == 2
    for line, path in zip(lines, files, strict=True):
        with torch.no_grad():
            raw = model(pixel_values=torch.from_numpy(prep.features(path))).logits.numpy()[0]
        arousal, valence = raw * np.array([2.0, 0.5]) + np.array([0.1, -0.2])
        assert line == f"{path}  arousal={arousal:.3f}  valence={valence:.3f}"
    assert lines[0] != lines[1].replace("b.flac", "a.wav")  # different audio, different predictions


def test_bad_files_get_one_error_line_each_and_exit_2(setup, capsys, tmp_path):
    (tmp_path / "bad.wav").write_text("not audio")
    good = str(setup["root"] / "a.wav")
    args = ["predict", "missing.wav", good, str(tmp_path / "bad.wav")]
    rc = main([*args, "--model", str(setup["student"]), "--features", str(setup["features"])])
    out, err = capsys.readouterr()
    assert rc == 2
    assert out.startswith(f"{good}  arousal=")  # the good file is still predicted
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert errors[0] == "error: missing.wav: no such file"
    assert errors[1].startswith(f"error: {tmp_path / 'bad.wav'}: cannot decode audio")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--onnx"], "student/model.onnx: no ONNX model"),
        (["--int8"], "student/model.int8.onnx: no ONNX model"),
        (["--features", "nowhere"], "error: nowhere/meta.json: not found"),
        (["--model", "nowhere"], "error: nowhere: no such folder"),
        (["--model", "models:/x@champion", "--onnx"], "--onnx reads model.onnx from a student folder"),
    ],
)
def test_unusable_model_or_features_are_named(setup, capsys, extra, message):
    args = ["predict", str(setup["root"] / "a.wav"), "--model", str(setup["student"])]
    args += ["--features", str(setup["features"])]
    assert main([*args, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len([ln for ln in err.splitlines() if ln.startswith("error:")]) == 1


def test_student_and_features_of_different_shapes_are_refused(setup, capsys, tmp_path):
    features = tmp_path / "features"
    features.mkdir()
    meta = json.loads((setup["features"] / "meta.json").read_text())
    (features / "meta.json").write_text(json.dumps({**meta, "shape": [1, 32, 128]}))
    (features / "stats.json").write_text((setup["features"] / "stats.json").read_text())
    args = ["predict", str(setup["root"] / "a.wav"), "--model", str(setup["student"])]
    assert main([*args, "--features", str(features)]) == 2
    assert (
        "the student takes inputs [1, 32, 64] but the features give [1, 32, 128]" in capsys.readouterr().err
    )
