"""The front end in NumPy: audio file -> waveform -> log-mel spectrogram (B, 1, n_mels, frames) in dB.

The same computation as torchaudio's ``MelSpectrogram`` (Hann window, centred STFT with reflect padding,
power 2, HTK mel filterbank without normalisation) followed by ``AmplitudeToDB`` (10 log10, floor 1e-10),
which the pipeline used before: values agree to float32 rounding (within 2e-3 dB, tested against
torchaudio). Written without torch so that preprocessing workers and the ONNX predict path never import it.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import scipy.fft
from numpy.lib.stride_tricks import sliding_window_view
from threadpoolctl import ThreadpoolController

from audiokd.config import AudioConfig
from audiokd.data.audio import load_audio

EPS = 1e-10  # added to the mel power before the log, and the log's floor (torchaudio's amin)


def _linspace32(start: float, end: float, steps: int) -> np.ndarray:
    """``torch.linspace`` in float32: the first half counts up from ``start``, the rest down from ``end``."""
    start32, end32 = np.float32(start), np.float32(end)
    step = (end32 - start32) / np.float32(steps - 1)
    i = np.arange(steps, dtype=np.float32)
    half = steps // 2
    return np.where(
        np.arange(steps) < half, start32 + step * i, end32 - step * (np.float32(steps - 1) - i)
    ).astype(np.float32)


def mel_filterbank(n_freqs: int, sample_rate: int, n_mels: int) -> np.ndarray:
    """Triangular HTK-scale filters from 0 Hz to Nyquist, (n_freqs, n_mels), as torchaudio builds them."""
    all_freqs = _linspace32(0, sample_rate // 2, n_freqs)
    m_max = 2595.0 * np.log10(1.0 + (sample_rate / 2) / 700.0)
    m_pts = _linspace32(0.0, m_max, n_mels + 2)
    f_pts = np.float32(700.0) * (np.float32(10.0) ** (m_pts / np.float32(2595.0)) - np.float32(1.0))
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts[None, :] - all_freqs[:, None]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return np.maximum(np.float32(0), np.minimum(down, up)).astype(np.float32)


class LogMelFrontend:
    """Waveforms (B, samples) or (samples,) -> log-mels (B, 1, n_mels, frames) in dB, float32.

    ``frames`` is ``samples // hop_length`` (the centred STFT's extra last frame is dropped) so that a
    2 s clip at 16 kHz with hop 250 gives exactly 128 frames.
    """

    def __init__(self, cfg: AudioConfig) -> None:
        self.n_fft, self.hop_length = cfg.n_fft, cfg.hop_length
        n = np.arange(cfg.n_fft, dtype=np.float64)
        self.window = (0.5 - 0.5 * np.cos(2 * np.pi * n / cfg.n_fft)).astype(np.float32)  # periodic Hann
        self.filters = mel_filterbank(cfg.n_fft // 2 + 1, cfg.sample_rate, cfg.n_mels)

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        """Compute log-mel features."""
        wave = np.asarray(wave, np.float32)
        if wave.ndim == 1:
            wave = wave[None]
        frames = wave.shape[-1] // self.hop_length
        pad = self.n_fft // 2
        padded = np.pad(wave, ((0, 0), (pad, pad)), mode="reflect")
        windows = sliding_window_view(padded, self.n_fft, axis=-1)[:, :: self.hop_length][:, :frames]
        spec = scipy.fft.rfft(windows * self.window, axis=-1)  # (B, frames, n_freqs), complex64
        power = np.abs(spec) ** 2
        mel = power @ self.filters  # (B, frames, n_mels)
        db = 10.0 * np.log10(np.maximum(mel + np.float32(EPS), np.float32(EPS)))
        return np.ascontiguousarray(db.transpose(0, 2, 1)[:, None], dtype=np.float32)


@functools.lru_cache(maxsize=4)
def frontend(cfg: AudioConfig) -> LogMelFrontend:
    """The front end of one audio config, built once per process."""
    return LogMelFrontend(cfg)


def file_features(paths: list[str], cfg: AudioConfig, samples: int) -> np.ndarray:
    """Un-normalised log-mels of audio files centre-cropped/padded to ``samples``, (N, 1, n_mels, frames).

    One clip at a time: a batched FFT is slower here (its intermediate arrays spill out of the cache).
    """
    fe = frontend(cfg)
    return np.concatenate([fe(load_audio(p, cfg.sample_rate, samples)) for p in paths])


@functools.lru_cache(maxsize=1)
def _threadpools() -> ThreadpoolController:
    return ThreadpoolController()  # scans the loaded libraries once (~15 ms), not on every limit


def one_blas_thread() -> Any:
    """Limit BLAS to one thread (restored when used as a context manager): the workers are the parallelism,
    and BLAS threads on top would oversubscribe the cores. torch's OpenMP is left alone."""
    return _threadpools().limit(limits=1, user_api="blas")


def single_threaded_blas() -> None:
    """Worker process initializer: one BLAS thread for the process's lifetime."""
    one_blas_thread()
