"""Audio decoding: any sample rate, mono or stereo, any length -> mono float32 at a fixed rate and length.

NumPy and soundfile only (no torch), so the predict path and the preprocess workers start fast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from audiokd.data.resample import resampler


class AudioError(ValueError):
    """A clip that cannot be used; the message names the file."""


class AudioReader:
    """An audio file as mono float32 at ``sample_rate``: read any span of it without decoding the rest.

    ``read(start, count)`` returns exactly the samples resampling the whole file would give there (the
    resampler computes a span from the input samples it depends on, :mod:`audiokd.data.resample`), so a
    window of a long recording costs what the window costs. Use as a context manager.
    """

    def __init__(self, path: str | Path, sample_rate: int) -> None:
        self.path = path
        try:
            self.file = sf.SoundFile(str(path))
        except (sf.LibsndfileError, RuntimeError, OSError) as e:
            raise AudioError(f"{path}: cannot decode audio ({e})") from None
        self.input_length = self.file.frames
        if self.input_length <= 0:
            self.file.close()
            raise AudioError(f"{path}: the clip has no samples")
        rate = self.file.samplerate
        self.resampler = None if rate == sample_rate else resampler(rate, sample_rate)
        r = self.resampler
        self.length = self.input_length if r is None else r.output_length(self.input_length)

    def __enter__(self) -> AudioReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()

    def _input(self, start: int, stop: int) -> np.ndarray:
        """Input frames ``[start, stop)`` (clamped to the file) mixed down to mono float32."""
        start, stop = max(0, start), min(self.input_length, stop)
        try:
            self.file.seek(start)
            data = self.file.read(max(0, stop - start), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, OSError) as e:
            raise AudioError(f"{self.path}: cannot decode audio ({e})") from None
        return np.ascontiguousarray(data.mean(axis=1), dtype=np.float32)

    def read(self, start: int = 0, count: int | None = None) -> np.ndarray:
        """Samples ``[start, start + count)`` at the target rate (default: to the end), within the file."""
        count = self.length - start if count is None else min(count, self.length - start)
        if self.resampler is None:
            return self._input(start, start + count)
        a, b = self.resampler.input_span(start, count)
        return self.resampler.span(self._input(a, b), max(a, 0), self.input_length, start, count)


def load_audio(path: str | Path, sample_rate: int, samples: int | None = None) -> np.ndarray:
    """Decode ``path`` with soundfile, mix down to mono and resample to ``sample_rate``.

    With ``samples``, return exactly the centred ``samples`` that resampling the whole clip and then
    :func:`fix_length` (``center``) would give, decoding and resampling only that window plus the filter's
    margin. Returns a 1-D float32 array. Raises :class:`AudioError` naming the file when it cannot be decoded.
    """
    with AudioReader(path, sample_rate) as audio:
        if samples is None or audio.length <= samples:
            wave = audio.read()
            return wave if samples is None else fix_length(wave, samples, "center")
        return audio.read((audio.length - samples) // 2, samples)


def fix_length(
    wave: np.ndarray, n: int, mode: str = "center", rng: np.random.Generator | None = None
) -> np.ndarray:
    """Crop or zero-pad ``wave`` (last axis) to ``n`` samples.

    ``mode``: ``center`` (deterministic, for evaluation) or ``random`` (random crop offset from ``rng``, for
    training). Padding is split evenly on both sides in ``center`` mode.
    """
    length = wave.shape[-1]
    if length == n:
        return wave
    if length > n:
        if mode == "random":
            start = int((rng or np.random.default_rng()).integers(0, length - n + 1))
        else:
            start = (length - n) // 2
        return wave[..., start : start + n]
    pad = n - length
    left = pad // 2 if mode == "center" else 0
    widths = [(0, 0)] * (wave.ndim - 1) + [(left, pad - left)]
    return np.pad(wave, widths)
