"""`audiokd predict` on long recordings (--window/--hop), output formats, and folders or stdin as input."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiokd.cli import main
from audiokd.config import AudioConfig, StudentConfig
from audiokd.export import INT8_FILE, ONNX_FILE, TORCHSCRIPT_FILE, export_student
from audiokd.models import LogitsOnly
from audiokd.models.student import build_student
from audiokd.predict import Preprocessor, load_model
from audiokd.tasks import Task

AUDIO = AudioConfig(sample_rate=16000, duration_s=1.0, n_fft=256, hop_length=250, n_mels=32)
SHAPE = [1, 32, 64]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    """Features meta/stats, a tiny ViT-family student with its ONNX export, a 30 s and a 0.6 s file."""
    root = tmp_path_factory.mktemp("windows")
    features = root / "features"
    features.mkdir()
    audio = {k: getattr(AUDIO, k) for k in ("sample_rate", "duration_s", "n_fft", "hop_length", "n_mels")}
    meta = {"task": "regression", "targets": ["arousal", "valence"], "shape": SHAPE, "audio": audio}
    stats = {
        "mel_mean": [-40.0] * 32,
        "mel_std": [10.0] * 32,
        "target_mean": [0.1, -0.2],
        "target_std": [2.0, 0.5],
    }
    (features / "meta.json").write_text(json.dumps(meta))
    (features / "stats.json").write_text(json.dumps(stats))
    torch.manual_seed(0)
    cfg = StudentConfig(arch="vit", vit_hidden_size=32, vit_layers=1, vit_intermediate_size=64, num_heads=2)
    student = build_student(cfg, tuple(SHAPE), Task("regression", ("arousal", "valence")))
    student.save_pretrained(root / "student")
    served = LogitsOnly(student).eval()
    meta = export_student(served, torch.randn(4, *SHAPE), torch.randn(32, *SHAPE), SHAPE[2], root / "student")
    (root / "student" / "meta.json").write_text(json.dumps({"input_shape": SHAPE, **meta}))
    rate = 22050  # another rate than the model's: windows are resampled spans of the file
    t = np.arange(30 * rate) / rate
    # the pitch rises over the file, so windows differ
    noise = np.random.default_rng(0).standard_normal(len(t))
    wave = 0.3 * np.sin(2 * np.pi * (200 + 20 * t) * t) + 0.05 * noise
    (root / "audio" / "sub").mkdir(parents=True)
    sf.write(root / "audio" / "long.flac", wave.astype(np.float32), rate)
    sf.write(root / "audio" / "sub" / "short.wav", wave[: int(0.6 * rate)].astype(np.float32), rate)
    (root / "audio" / "notes.txt").write_text("not audio")
    return {"root": root, "features": features, "student": root / "student", "audio": root / "audio"}


def _run(setup, capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["predict", *args, "--model", str(setup["student"]), "--features", str(setup["features"])])
    out, err = capsys.readouterr()
    return rc, out, err


def test_a_30s_file_gives_29_windows_and_their_mean(setup, capsys):
    long = str(setup["audio"] / "long.flac")
    rc, out, _ = _run(setup, capsys, long, "--window", "2", "--hop", "1", "--format", "json")
    assert rc == 0
    (result,) = json.loads(out)
    windows = result["windows"]
    assert len(windows) == 29  # starts 0, 1, ..., 28 s: the last one ends at 30 s
    assert [w["start_s"] for w in windows] == list(range(29))
    assert windows[-1]["end_s"] == 30
    for target in ("arousal", "valence"):
        values = [w["outputs"][target] for w in windows]
        assert np.std(values) > 1e-4  # the windows see different audio
        assert result["mean"][target] == pytest.approx(np.mean(values), abs=1e-5)


def test_windows_are_the_clips_the_model_would_see(setup):
    """Window k of the file, cut out and predicted as a clip of its own, gives the same outputs."""
    prep = Preprocessor.load(setup["features"])
    model = load_model(str(setup["student"]), prep)
    long = setup["audio"] / "long.flac"
    batches = list(prep.windows(long, 1.0, 3.0))
    spans = [s for b, _ in batches for s in b]
    x = np.concatenate([b for _, b in batches])
    assert len(spans) == 10 and spans[3] == (9.0, 10.0)
    wave, rate = sf.read(long, dtype="float32")
    cut = setup["root"] / "cut.wav"
    sf.write(cut, wave[9 * rate : 10 * rate], rate, subtype="FLOAT")
    # resampling the cut alone differs from the file's own resampling at the edges only
    np.testing.assert_allclose(model(x[3:4]), model(prep.features(cut)), atol=2e-2)
    np.testing.assert_allclose(x[3:4][..., 4:-4], prep.features(cut)[..., 4:-4], atol=1e-3)


def test_csv_parses_with_one_row_per_window_and_a_mean_row(setup, capsys):
    long = str(setup["audio"] / "long.flac")
    rc, out, _ = _run(setup, capsys, long, "--window", "5", "--format", "csv")
    assert rc == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["path", "window", "start_s", "end_s", "arousal", "valence"]
    assert [r["window"] for r in rows] == ["0", "1", "2", "3", "4", "5", "mean"]
    assert float(rows[-1]["end_s"]) == 30.0
    for target in ("arousal", "valence"):
        per_window = [float(r[target]) for r in rows[:-1]]
        assert float(rows[-1][target]) == pytest.approx(np.mean(per_window), abs=1e-5)


def test_text_output_without_windows_is_unchanged_and_hop_alone_uses_the_clip_length(setup, capsys):
    long = str(setup["audio"] / "long.flac")
    rc, out, _ = _run(setup, capsys, long)
    assert rc == 0 and len(out.splitlines()) == 1
    assert out.startswith(f"{long}  arousal=") and "valence=" in out
    rc, out, _ = _run(setup, capsys, long, "--hop", "10")
    lines = out.splitlines()
    assert rc == 0 and len(lines) == 4  # windows of 1 s (the clip length) at 0, 10, 20 s, then the mean
    assert lines[1].startswith(f"{long}  10.00-11.00s  arousal=")
    assert lines[-1].startswith(f"{long}  mean of 3 windows  arousal=")


def test_folder_and_stdin_inputs(setup, capsys, monkeypatch):
    long, short = str(setup["audio"] / "long.flac"), str(setup["audio"] / "sub" / "short.wav")
    rc, out, _ = _run(setup, capsys, str(setup["audio"]), "--format", "csv")
    assert rc == 0
    assert [r["path"] for r in csv.DictReader(io.StringIO(out))] == [long, short]  # notes.txt skipped
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{short}\n\n{long}\nmissing.wav\n"))
    rc, out, err = _run(setup, capsys, "-", "--format", "json", "--window", "10")
    assert rc == 2 and err.strip() == "error: missing.wav: no such file"
    results = json.loads(out)
    assert [r["path"] for r in results] == [short, long]
    assert len(results[0]["windows"]) == 1 and results[0]["windows"][0]["end_s"] == pytest.approx(0.6)
    assert len(results[1]["windows"]) == 3


def test_onnx_gives_the_pytorch_outputs_without_importing_torch(setup, tmp_path):
    import subprocess
    import sys

    long = str(setup["audio"] / "long.flac")
    args = [long, "--window", "3", "--hop", "7", "--format", "json", "--model", str(setup["student"])]
    args += ["--features", str(setup["features"])]
    code = (
        "import sys, json; from audiokd.cli import main; rc = main(['predict', *sys.argv[1:]]); "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'transformers', 'mlflow', 'pandas'))), file=sys.stderr); sys.exit(rc)"
    )
    onnx = subprocess.run([sys.executable, "-c", code, *args, "--onnx"], capture_output=True, text=True)
    eager = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert onnx.returncode == 0 and eager.returncode == 0, onnx.stderr + eager.stderr
    assert json.loads(onnx.stderr.splitlines()[-1]) == []  # the ONNX path imports none of them
    assert "torch" in json.loads(eager.stderr.splitlines()[-1])
    a, b = json.loads(onnx.stdout)[0], json.loads(eager.stdout)[0]
    assert len(a["windows"]) == 4
    for wa, wb in zip(a["windows"], b["windows"], strict=True):
        for target in ("arousal", "valence"):
            assert wa["outputs"][target] == pytest.approx(wb["outputs"][target], abs=1e-3)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--window", "0"], "error: --window 0: give a positive number of seconds"),
        (["--hop", "-1"], "error: --hop -1: give a positive number of seconds"),
    ],
)
def test_bad_windows_are_one_line(setup, capsys, extra, message):
    rc, out, err = _run(setup, capsys, str(setup["audio"] / "long.flac"), *extra)
    assert rc == 2 and out == ""
    assert message.removeprefix("error: ") in err and len(err.strip().splitlines()) == 1


def test_the_trace_int8_and_hf_weights_agree_and_a_changed_trace_is_refused(setup, capsys, tmp_path):
    import shutil

    folder = setup["student"]
    assert {ONNX_FILE, INT8_FILE, TORCHSCRIPT_FILE} <= {p.name for p in folder.iterdir()}
    prep = Preprocessor.load(setup["features"])
    x = prep.features(setup["audio"] / "long.flac")
    traced = load_model(str(folder), prep)(x)
    int8 = load_model(str(folder), prep, int8=True)(x)
    copy = tmp_path / "student"
    shutil.copytree(folder, copy)
    (copy / TORCHSCRIPT_FILE).unlink()  # without the trace: the transformers weights
    np.testing.assert_allclose(traced, load_model(str(copy), prep)(x), atol=1e-5)
    assert np.abs(int8 - traced).max() < 0.5 * np.abs(traced).max() + 1e-3
    shutil.copy(folder / TORCHSCRIPT_FILE, copy / TORCHSCRIPT_FILE)
    with open(copy / TORCHSCRIPT_FILE, "ab") as f:
        f.write(b"\0")
    args = ["predict", str(setup["audio"] / "long.flac"), "--model", str(copy)]
    assert main([*args, "--features", str(setup["features"])]) == 2
    assert "model.ts: content differs from the sha256 recorded in" in capsys.readouterr().err


def test_classification_outputs_mean_probabilities_in_every_format():
    from audiokd.predict import Window
    from audiokd.predict_io import Output

    prep = Preprocessor(
        audio=AUDIO,
        targets=["calm", "excited"],
        shape=SHAPE,
        mel_mean=np.zeros(32, np.float32),
        mel_std=np.ones(32, np.float32),
        target_mean=np.zeros(2, np.float32),
        target_std=np.ones(2, np.float32),
        classification=True,
    )
    logits = [np.array([2.0, 0.0]), np.array([0.0, 1.0]), np.array([0.0, 3.0])]
    windows = [Window(float(i), i + 1.0, y) for i, y in enumerate(logits)]
    probs = np.array([np.exp(y) / np.exp(y).sum() for y in logits])
    mean = probs.mean(axis=0)
    outs = {}
    for fmt in ("text", "csv", "json"):
        buf = io.StringIO()
        out = Output(fmt, prep, buf, windowed=True)
        out.write("a.wav", windows)
        out.close()
        outs[fmt] = buf.getvalue()
    rows = list(csv.DictReader(io.StringIO(outs["csv"])))
    assert list(rows[0]) == ["path", "window", "start_s", "end_s", "label", "probability", "calm", "excited"]
    assert [r["label"] for r in rows] == ["calm", "excited", "excited", "excited"]
    assert float(rows[-1]["calm"]) == pytest.approx(mean[0], abs=1e-6)
    (obj,) = json.loads(outs["json"])
    assert obj["mean"]["label"] == "excited"
    assert obj["mean"]["probability"] == pytest.approx(mean[1], abs=1e-6)
    assert obj["windows"][0]["outputs"]["probabilities"]["calm"] == pytest.approx(probs[0, 0], abs=1e-6)
    assert outs["text"].splitlines()[-1] == f"a.wav  mean of 3 windows  excited={mean[1]:.3f}"
