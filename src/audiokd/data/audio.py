"""Audio decoding: any sample rate, mono or stereo, any length -> mono float32 at a fixed rate and length."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio


class AudioError(ValueError):
    """A clip that cannot be used; the message names the file."""


def load_audio(path: str | Path, sample_rate: int, samples: int | None = None) -> torch.Tensor:
    """Decode ``path`` with soundfile, mix down to mono and resample to ``sample_rate``.

    With ``samples``, return exactly the centred ``samples`` that resampling the whole clip and then
    :func:`fix_length` (``center``) would give, resampling only that window plus the filter's margin (a
    long recording costs what its window costs). Returns a 1-D float32 tensor. Raises :class:`AudioError`
    naming the file when it cannot be decoded.
    """
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioError(f"{path}: cannot decode audio ({e})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: the clip has no samples")
    wave = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1)))
    if sr == sample_rate:
        return wave if samples is None else fix_length(wave, samples, "center")
    with torch.no_grad():
        if samples is None:
            return resampler(sr, sample_rate)(wave)
        return _resample_window(wave, sr, sample_rate, samples)


def _resample_window(wave: torch.Tensor, orig: int, new: int, samples: int) -> torch.Tensor:
    """``fix_length(resample(wave), samples, "center")``, computed from a window of ``wave``.

    The window starts on a multiple of ``orig / gcd`` input samples, where the resampler's output grid
    repeats, so its output samples are the whole clip's, shifted by a whole number of samples; a margin
    of two filter lengths on each side keeps the zero padding at the window's edges out of the result.
    """
    length = wave.shape[-1]
    full_out = math.ceil(new * length / orig)  # what resampling the whole clip returns
    r = resampler(orig, new)
    g = math.gcd(orig, new)
    orig_g, new_g = orig // g, new // g
    margin = 2 * (r.kernel.shape[-1] + orig_g)  # input samples
    start_out = (full_out - samples) // 2
    if full_out <= samples or start_out * orig / new < margin + orig_g:
        return fix_length(r(wave), samples, "center")  # short clip: nothing to save
    k = int((start_out * orig / new - margin) // orig_g)  # whole periods of the output grid
    s_in = k * orig_g
    e_in = min(length, math.ceil((start_out + samples) * orig / new) + margin)
    window = r(wave[s_in:e_in])
    offset = start_out - k * new_g
    return window[offset : offset + samples]


@functools.lru_cache(maxsize=32)
def resampler(orig: int, new: int) -> torchaudio.transforms.Resample:
    """A band-limited sinc resampler for one rate pair; its kernel is computed once and reused."""
    return torchaudio.transforms.Resample(orig, new)


def fix_length(
    wave: torch.Tensor, n: int, mode: str = "center", generator: torch.Generator | None = None
) -> torch.Tensor:
    """Crop or zero-pad ``wave`` to ``n`` samples.

    ``mode``: ``center`` (deterministic, for evaluation) or ``random`` (random crop offset, for training).
    Padding is split evenly on both sides in ``center`` mode.
    """
    length = wave.shape[-1]
    if length == n:
        return wave
    if length > n:
        if mode == "random":
            start = int(torch.randint(0, length - n + 1, (1,), generator=generator))
        else:
            start = (length - n) // 2
        return wave[..., start : start + n]
    pad = n - length
    left = pad // 2 if mode == "center" else 0
    return torch.nn.functional.pad(wave, (left, pad - left))
