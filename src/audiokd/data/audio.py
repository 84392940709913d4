"""Audio decoding: any sample rate, mono or stereo, any length -> mono float32 at a fixed rate and length."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio


class AudioError(ValueError):
    """A clip that cannot be used; the message names the file."""


def load_audio(path: str | Path, sample_rate: int) -> torch.Tensor:
    """Decode ``path`` with soundfile, mix down to mono and resample to ``sample_rate``.

    Returns a 1-D float32 tensor. Raises :class:`AudioError` naming the file when it cannot be decoded.
    """
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioError(f"{path}: cannot decode audio ({e})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: the clip has no samples")
    wave = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1)))
    if sr != sample_rate:
        with torch.no_grad():
            wave = resampler(sr, sample_rate)(wave)
    return wave


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
