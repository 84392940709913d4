"""The NumPy front end reproduces torchaudio's resampler and log-mels (what the pipeline used before)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from audiokd.config import AudioConfig
from audiokd.data.audio import AudioReader
from audiokd.data.features import compute_features
from audiokd.data.frontend import LogMelFrontend, mel_filterbank
from audiokd.data.resample import resampler, sinc_kernel


@pytest.mark.parametrize("rate", [8000, 11025, 16001, 22050, 32000, 44100, 48000])
def test_resampler_matches_torchaudio(rate):
    kernel, width = torchaudio.functional.functional._get_sinc_resample_kernel(
        rate, 16000, math.gcd(rate, 16000)
    )
    ours, our_width = sinc_kernel(rate, 16000)
    assert our_width == width and np.array_equal(ours, kernel[:, 0].numpy())  # the very same kernel
    x = np.random.default_rng(rate).standard_normal(int(1.7 * rate)).astype(np.float32)
    expected = torchaudio.transforms.Resample(rate, 16000)(torch.from_numpy(x)).numpy()
    got = resampler(rate, 16000)(x)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 2e-6  # float32 rounding: about -140 dB of the signal
    assert np.abs(expected).max() > 0.5


def test_any_span_of_a_file_equals_the_whole_file_resampled(tmp_path):
    x = (0.1 * np.random.default_rng(0).standard_normal((int(22050 * 6.3), 2))).astype(np.float32)
    sf.write(tmp_path / "a.wav", x, 22050, subtype="FLOAT")
    mono = torch.from_numpy(x.mean(axis=1))
    whole = torchaudio.transforms.Resample(22050, 16000)(mono).numpy()
    with AudioReader(tmp_path / "a.wav", 16000) as audio:
        assert audio.length == len(whole)
        for start, count in [(0, 100), (1, 32000), (12345, 20000), (len(whole) - 50, 50), (7, 10**9)]:
            got = audio.read(start, count)
            assert np.abs(got - whole[start : start + count]).max() < 2e-6


@pytest.mark.parametrize(
    "cfg",
    [
        AudioConfig(),
        AudioConfig(n_fft=256, n_mels=32, duration_s=1.0),
        AudioConfig(sample_rate=22050, n_fft=1024, hop_length=512, n_mels=128),
    ],
)
def test_log_mels_match_torchaudio(cfg):
    fb = torchaudio.functional.melscale_fbanks(
        cfg.n_fft // 2 + 1, 0.0, cfg.sample_rate / 2, cfg.n_mels, cfg.sample_rate
    )
    assert np.abs(mel_filterbank(cfg.n_fft // 2 + 1, cfg.sample_rate, cfg.n_mels) - fb.numpy()).max() < 5e-5
    n = int(cfg.sample_rate * cfg.duration_s)
    wave = (0.3 * np.random.default_rng(1).standard_normal((4, n))).astype(np.float32)
    wave[0, : n // 3] = 0  # silence: the 1e-10 floor
    wave[1] *= 1e-4  # a quiet clip
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels
    )
    to_db = torchaudio.transforms.AmplitudeToDB(stype="power", top_db=None)
    with torch.no_grad():
        expected = to_db(mel(torch.from_numpy(wave)) + 1e-10)[..., : n // cfg.hop_length].unsqueeze(1)
    got = LogMelFrontend(cfg)(wave)
    assert got.shape == tuple(expected.shape) and got.dtype == np.float32
    assert np.abs(got - expected.numpy()).max() < 2e-3  # dB


def test_worker_processes_and_threads_give_the_same_features(tmp_path):
    rng = np.random.default_rng(2)
    paths = []
    for i, rate in enumerate([8000, 22050, 44100, 16000, 22050]):
        paths.append(str(tmp_path / f"c{i}.flac"))
        sf.write(paths[-1], 0.2 * rng.standard_normal(int(rate * (0.5 + i * 0.4))), rate)
    cfg = AudioConfig(duration_s=1.0, n_fft=256, n_mels=32)
    threads = compute_features(paths, cfg, batch_size=2, workers=2, processes=False)
    processes = compute_features(paths, cfg, batch_size=2, workers=2, processes=True)
    serial = compute_features(paths, cfg, workers=1)
    assert threads.shape == (5, 1, 32, 64)
    np.testing.assert_array_equal(threads, processes)
    np.testing.assert_array_equal(threads, serial)
