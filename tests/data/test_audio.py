"""Real decoding: stereo at another rate becomes mono at the pipeline rate; crop and pad."""

import numpy as np
import pytest
import soundfile as sf

from audiokd.data.audio import AudioError, fix_length, load_audio


def test_stereo_44k_becomes_mono_16k(tmp_path):
    sr = 44100
    t = np.arange(sr) / sr
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    stereo = np.stack([left, -left * 0.0 + left], axis=1)
    path = tmp_path / "a.flac"
    sf.write(path, stereo, sr)
    wave = load_audio(path, 16000)
    assert wave.ndim == 1
    assert abs(wave.shape[0] - 16000) <= 1
    # energy at 440 Hz survives the resampling: dominant FFT bin
    spec = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spec) * 16000 / len(wave) - 440) < 3


def test_mixdown_averages_channels(tmp_path):
    data = np.stack([np.full(100, 0.5), np.full(100, -0.25)], axis=1)
    sf.write(tmp_path / "b.wav", data, 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "b.wav", 16000), np.full(100, 0.125, np.float32))


def test_corrupt_file_names_the_file(tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF0000WAVEnot really audio")
    with pytest.raises(AudioError, match="broken.wav: cannot decode"):
        load_audio(bad, 16000)


def test_fix_length_center_crop_and_pad():
    w = np.arange(10.0)
    assert fix_length(w, 4).tolist() == [3.0, 4.0, 5.0, 6.0]
    padded = fix_length(np.ones(4), 8)
    assert padded.tolist() == [0, 0, 1, 1, 1, 1, 0, 0]
    r = fix_length(w, 4, "random", np.random.default_rng(0))
    assert len(r) == 4 and r[1] - r[0] == 1
