"""Splits, the embedded synthetic set, and the prepare stage's refusals."""

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from audiokd.config import DataConfig, SplitConfig, SyntheticConfig
from audiokd.data.manifest import ManifestError, assign_splits, prepare
from audiokd.data.synthetic import synth_clip


def test_splits_are_deterministic_and_sized():
    a = assign_splits(100, SplitConfig(0.7, 0.15, 0.15), seed=3)
    b = assign_splits(100, SplitConfig(0.7, 0.15, 0.15), seed=3)
    assert (a == b).all()
    assert (a == "train").sum() == 70 and (a == "val").sum() == 15 and (a == "test").sum() == 15
    assert not (assign_splits(100, SplitConfig(0.7, 0.15, 0.15), seed=4) == a).all()


def test_no_group_spans_two_splits():
    groups = pd.Series([f"spk{i % 17}" for i in range(200)])
    splits = assign_splits(200, SplitConfig(0.6, 0.2, 0.2), seed=0, groups=groups)
    per_group = pd.DataFrame({"g": groups, "s": splits}).groupby("g")["s"].nunique()
    assert (per_group == 1).all()
    assert set(splits) == {"train", "val", "test"}


def _rms(x):
    return float(np.sqrt(np.mean(x**2)))


def _centroid(x, sr):
    spec = np.abs(np.fft.rfft(x))
    freqs = np.fft.rfftfreq(len(x), 1 / sr)
    return float((spec * freqs).sum() / spec.sum())


def test_synthetic_acoustics_carry_the_targets():
    sr = 16000
    rng = np.random.default_rng(0)
    lo = [synth_clip(rng, -0.9, -0.9, sr, 2.0, 0.3) for _ in range(6)]
    hi = [synth_clip(rng, 0.9, 0.9, sr, 2.0, 0.3) for _ in range(6)]
    # high arousal is louder; high valence is higher and brighter
    assert np.mean([_rms(x) for x in hi]) > 2 * np.mean([_rms(x) for x in lo])
    assert np.mean([_centroid(x, sr) for x in hi]) > 1.3 * np.mean([_centroid(x, sr) for x in lo])
    # and it is not noise: a harmonic signal has a peaky spectrum
    spec = np.abs(np.fft.rfft(hi[0]))
    assert spec.max() > 20 * np.median(spec)


def test_prepare_synthetic_is_deterministic(tmp_path):
    cfg = DataConfig(seed=5, synthetic=SyntheticConfig(clips=30, min_duration_s=0.3, max_duration_s=0.5))
    a = prepare(cfg, tmp_path / "a")
    b = prepare(cfg, tmp_path / "b")
    pd.testing.assert_frame_equal(a, b)
    assert (tmp_path / "a" / "audio" / "clip_00000.wav").read_bytes() == (
        tmp_path / "b" / "audio" / "clip_00000.wav"
    ).read_bytes()
    m = pd.read_csv(tmp_path / "a" / "manifest.csv")
    assert list(m.columns) == ["path", "arousal", "valence", "split"]
    assert set(m.split) == {"train", "val", "test"}
    assert m[["arousal", "valence"]].abs().max().max() <= 1.0
    info = sf.info(str(tmp_path / "a" / m.path[0]))
    assert info.channels == 2 and info.samplerate == 22050  # clip 0 is one of the stereo ones


def test_bad_manifest_lists_every_problem_and_keeps_previous_output(tmp_path):
    sf.write(tmp_path / "ok.wav", np.zeros(1600) + 0.1, 16000)
    pd.DataFrame(
        {"path": ["ok.wav", "missing.wav", "ok.wav"], "arousal": [0.1, "x", 0.2], "valence": [0.0, 0.1, None]}
    ).to_csv(tmp_path / "m.csv", index=False)
    out = tmp_path / "prepared"
    out.mkdir()
    (out / "keep.txt").write_text("previous output")
    cfg = DataConfig(manifest=str(tmp_path / "m.csv"))
    with pytest.raises(ManifestError) as e:
        prepare(cfg, out)
    msg = str(e.value)
    assert "row 3: audio file not found: missing.wav" in msg
    assert "row 3: target 'arousal' is missing or not a finite number" in msg
    assert "row 4: target 'valence' is missing" in msg
    assert "duplicate path(s): ok.wav" in msg
    assert (out / "keep.txt").read_text() == "previous output"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".prepared")] == []
