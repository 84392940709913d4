"""The embedded synthetic set: deterministic, real harmonic audio whose acoustics carry the targets."""

import re

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from audiokd.config import ConfigError, SyntheticConfig, build_section
from audiokd.data.synthetic import generate, synth_clip


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


def test_generate_is_deterministic_and_writes_a_manifest(tmp_path):
    cfg = SyntheticConfig(clips=30, seed=5, min_duration_s=0.3, max_duration_s=0.5)
    a = generate(cfg, tmp_path / "a")
    b = generate(cfg, tmp_path / "b")
    pd.testing.assert_frame_equal(a, b)
    assert (tmp_path / "a" / "audio" / "clip_00000.wav").read_bytes() == (
        tmp_path / "b" / "audio" / "clip_00000.wav"
    ).read_bytes()
    m = pd.read_csv(tmp_path / "a" / "manifest.csv")
    assert list(m.columns) == ["path", "arousal", "valence"]
    assert m[["arousal", "valence"]].abs().max().max() <= 1.0
    info = sf.info(str(tmp_path / "a" / m.path[0]))
    assert info.channels == 2 and info.samplerate == 22050  # clip 0 is one of the stereo ones
    c = generate(SyntheticConfig(clips=30, seed=6, min_duration_s=0.3, max_duration_s=0.5), tmp_path / "c")
    assert not a.equals(c)


def test_unlabelled_clips_follow_in_the_manifest_without_changing_the_labelled_set(tmp_path):
    cfg = SyntheticConfig(clips=30, seed=5, min_duration_s=0.3, max_duration_s=0.5)
    plain = generate(cfg, tmp_path / "plain")
    assert "split" not in pd.read_csv(tmp_path / "plain" / "manifest.csv")  # no pool, no splits: as before
    with_pool = generate(SyntheticConfig(**{**cfg.__dict__, "unlabeled_clips": 8}), tmp_path / "pool")
    pd.testing.assert_frame_equal(plain, with_pool.drop(columns="split"))
    assert (tmp_path / "plain" / "audio" / "clip_00029.wav").read_bytes() == (
        tmp_path / "pool" / "audio" / "clip_00029.wav"
    ).read_bytes()
    rows = pd.read_csv(tmp_path / "pool" / "manifest.csv", keep_default_na=False)
    assert list(rows.split) == [""] * 30 + ["unlabeled"] * 8  # the labelled rows: split by data.split
    pool = rows[rows.split == "unlabeled"]
    assert (pool[["arousal", "valence"]] == "").all().all()  # the targets are nowhere
    assert all((tmp_path / "pool" / p).is_file() for p in pool.path)
    assert sf.info(str(tmp_path / "pool" / pool.path.iloc[0])).samplerate == 22050


def test_train_and_val_clips_mark_the_split_in_the_manifest(tmp_path):
    cfg = SyntheticConfig(clips=10, train_clips=3, val_clips=2, unlabeled_clips=4, min_duration_s=0.3)
    generate(cfg, tmp_path / "set")
    rows = pd.read_csv(tmp_path / "set" / "manifest.csv")
    assert list(rows.split) == ["train"] * 3 + ["val"] * 2 + ["test"] * 5 + ["unlabeled"] * 4


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"train_clips": 5}, "synthetic.train_clips and synthetic.val_clips: set both"),
        (
            {"train_clips": 20, "val_clips": 10},
            "synthetic.train_clips + synthetic.val_clips = 30 leaves no test",
        ),
    ],
)
def test_train_and_val_clips_are_checked_together(keys, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_section(SyntheticConfig, {"clips": 30, **keys}, "synthetic")
