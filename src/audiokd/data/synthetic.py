"""The embedded synthetic set: real waveforms whose acoustics carry two emotion-like targets.

Each clip is a short melody of harmonic notes over background noise. The targets drive how it sounds,
as in music-emotion research (arousal ~ tempo, loudness, attack; valence ~ pitch, brightness, mode):

- ``arousal`` in [-1, 1]: note rate (onset density), loudness, attack sharpness, staccato.
- ``valence`` in [-1, 1]: pitch register, spectral brightness (harmonic roll-off), major vs minor mode.

Nuisance factors that do not depend on the targets (recording gain, timbre, transposition, background
noise, clip length, stereo or mono) keep the task from being trivial. Everything is drawn from one
``numpy`` generator seeded by ``synthetic.seed``, so the set is identical on every machine.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from audiokd.config import SyntheticConfig
from audiokd.io import atomic_dir

log = logging.getLogger(__name__)

TARGETS = ("arousal", "valence")
_MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])
_MINOR = np.array([0, 2, 3, 5, 7, 8, 10])


def _note(
    rng: np.random.Generator, freq: float, n: int, sr: int, rolloff: float, attack_s: float, n_harmonics: int
) -> np.ndarray:
    """One harmonic note with an attack/exponential-decay envelope."""
    t = np.arange(n) / sr
    harmonics = np.arange(1, n_harmonics + 1)
    harmonics = harmonics[harmonics * freq < sr / 2 * 0.9]
    amps = harmonics.astype(np.float64) ** (-rolloff)
    phases = rng.uniform(0, 2 * np.pi, size=len(harmonics))
    wave = (amps[:, None] * np.sin(2 * np.pi * freq * harmonics[:, None] * t[None, :] + phases[:, None])).sum(
        0
    )
    attack = np.clip(t / max(attack_s, 1e-4), 0.0, 1.0)
    decay = np.exp(-t * rng.uniform(2.0, 6.0))
    release = np.clip((n - np.arange(n)) / max(1, int(0.01 * sr)), 0.0, 1.0)
    return wave / amps.sum() * attack * decay * release


def synth_clip(
    rng: np.random.Generator, arousal: float, valence: float, sr: int, duration_s: float, noise: float
) -> np.ndarray:
    """Render one clip, shape ``(samples,)``, peak below 1."""
    a01, v01 = (arousal + 1) / 2, (valence + 1) / 2
    n = int(round(duration_s * sr))
    out = np.zeros(n)
    rate = (1.5 + 5.5 * a01) * rng.uniform(0.8, 1.2)  # notes per second
    legato = np.clip(1.0 - 0.5 * a01 + rng.normal(0, 0.1), 0.3, 1.0)
    attack_s = 0.06 - 0.05 * a01
    major = rng.random() < 1 / (1 + np.exp(-4 * valence))
    scale = _MAJOR if major else _MINOR
    root_midi = 50 + 16 * v01 + rng.normal(0, 2.5 * noise + 0.5)
    rolloff = 2.4 - 1.6 * v01 + rng.normal(0, 0.4 * noise)
    n_harmonics = int(rng.integers(6, 14))
    t = rng.uniform(0, 0.3 / rate)
    while t < duration_s:
        step = rng.exponential(1 / rate) * 0.5 + 0.5 / rate
        degree = int(rng.integers(0, 7))
        octave = int(rng.choice([0, 0, 0, 1, -1]))
        freq = 440.0 * 2 ** ((root_midi + scale[degree] + 12 * octave - 69) / 12)
        start = int(t * sr)
        length = min(n - start, max(1, int(step * legato * sr)))
        out[start : start + length] += _note(rng, freq, length, sr, max(rolloff, 0.3), attack_s, n_harmonics)
        t += step
    loud_db = -28 + 20 * a01 + rng.normal(0, 6 * noise)
    out *= 10 ** (loud_db / 20) / (np.sqrt(np.mean(out**2)) + 1e-9) * 0.3
    snr_db = rng.uniform(35 - 30 * noise, 45 - 30 * noise)
    sig_rms = np.sqrt(np.mean(out**2)) + 1e-9
    bg = np.cumsum(rng.normal(size=n)) * 0.02 + rng.normal(size=n)  # pink-ish
    bg -= bg.mean()
    bg *= sig_rms * 10 ** (-snr_db / 20) / (np.sqrt(np.mean(bg**2)) + 1e-9)
    out += bg
    peak = np.abs(out).max()
    if peak > 0.99:
        out *= 0.99 / peak
    return out.astype(np.float32)


def _write_clips(
    rng: np.random.Generator, cfg: SyntheticConfig, folder: Path, n: int, prefix: str
) -> list[dict[str, float | str]]:
    """Render ``n`` clips to ``folder/audio/<prefix>_<i>.wav``; one row (path and targets) per clip."""
    rows: list[dict[str, float | str]] = []
    for i in range(n):
        arousal, valence = rng.uniform(-1, 1, size=2)
        duration = rng.uniform(cfg.min_duration_s, cfg.max_duration_s)
        wave = synth_clip(rng, arousal, valence, cfg.sample_rate, duration, cfg.noise)
        if i % 5 == 0:  # some stereo clips, to exercise the mix-down
            pan = rng.uniform(0.6, 1.0)
            wave = np.stack([wave * pan, wave * (1.6 - pan)], axis=1)
        rel = f"audio/{prefix}_{i:05d}.wav"
        sf.write(folder / rel, wave, cfg.sample_rate, subtype="PCM_16")
        rows.append({"path": rel, "arousal": round(float(arousal), 4), "valence": round(float(valence), 4)})
    return rows


def generate(cfg: SyntheticConfig, out_dir: str | Path) -> pd.DataFrame:
    """Synthesize stage: write the clips under ``out_dir/audio`` and ``out_dir/manifest.csv``.

    The manifest has ``path`` (relative to ``out_dir``) and the targets ``arousal`` and ``valence``. Without
    ``cfg.train_clips`` it has no split column, so the prepare stage splits it like any user manifest; with
    it, the first ``train_clips`` clips are marked ``train``, the next ``val_clips`` ``val`` and the rest
    ``test`` (the clips are drawn independently, so this is a random split). With ``cfg.unlabeled_clips``,
    as many more clips of the same kind follow with ``split`` ``unlabeled`` and no targets (they are not
    written anywhere), drawn from a second random stream, so the labelled clips do not depend on them.
    Deterministic in ``cfg.seed``; the folder is replaced atomically. Returns the labelled rows.
    """
    with atomic_dir(out_dir) as tmp:
        (tmp / "audio").mkdir()
        df = pd.DataFrame(_write_clips(np.random.default_rng(cfg.seed), cfg, tmp, cfg.clips, "clip"))
        rows = df
        if cfg.train_clips or cfg.unlabeled_clips:
            split = ["train"] * cfg.train_clips + ["val"] * cfg.val_clips
            df["split"] = (split + ["test"] * (cfg.clips - len(split))) if split else ""
        if cfg.unlabeled_clips:
            pool = _write_clips(
                np.random.default_rng([cfg.seed, 1]), cfg, tmp, cfg.unlabeled_clips, "unlabeled"
            )
            rows = pd.concat([df, pd.DataFrame({"path": [r["path"] for r in pool], "split": "unlabeled"})])
        rows.to_csv(tmp / "manifest.csv", index=False)
    log.info(
        "synthesised %d labelled and %d unlabelled clips at %d Hz in %s",
        cfg.clips,
        cfg.unlabeled_clips,
        cfg.sample_rate,
        out_dir,
    )
    return df
