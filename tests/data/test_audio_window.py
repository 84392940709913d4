"""Resampling only the centred window gives exactly what resampling the whole clip and cropping gives."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from audiokd.data.audio import fix_length, load_audio


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000])
@pytest.mark.parametrize("seconds", [0.5, 2.0, 2.3, 7.9])
def test_window_matches_whole_clip_then_centre_crop(tmp_path, rate, seconds):
    rng = np.random.default_rng(rate)
    wave = (rng.standard_normal((int(rate * seconds), 2)) * 0.1).astype(np.float32)
    path = tmp_path / "clip.flac"
    sf.write(path, wave, rate)
    whole = fix_length(load_audio(path, 16000), 32000, "center")
    window = load_audio(path, 16000, 32000)
    assert window.shape == (32000,)
    assert float(np.abs(window - whole).max()) < 1e-6
