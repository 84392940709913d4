"""Log-mel front end and the preprocess stage: clips -> normalised spectrogram arrays per split.

Layout of the features folder (memory-mappable ``.npy``, one array per split, not a file per clip)::

    features/meta.json            shape, targets, clip counts, audio settings
    features/stats.json           per-mel-bin mean/std and per-target mean/std, from the train split only
    features/<split>/x.npy        float32 (N, 1, n_mels, frames), normalised
    features/<split>/y.npy        float32 (N, n_targets), raw target values
    features/<split>/clips.csv    path and targets per row, in array order
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchaudio
from tqdm import tqdm

from audiokd.config import AudioConfig, DataConfig
from audiokd.data.audio import fix_length, load_audio
from audiokd.data.manifest import SPLITS, load_prepared
from audiokd.io import atomic_dir, read_json, write_json

log = logging.getLogger(__name__)


class LogMelFrontend(torch.nn.Module):
    """Waveform (B, samples) -> log-mel spectrogram (B, 1, n_mels, frames) in dB.

    ``frames`` is ``samples // hop_length`` (the centred STFT's extra last frame is dropped) so that a
    2 s clip at 16 kHz with hop 250 gives exactly 128 frames.
    """

    def __init__(self, cfg: AudioConfig) -> None:
        super().__init__()
        self.hop_length = cfg.hop_length
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=cfg.sample_rate,
            n_fft=cfg.n_fft,
            hop_length=cfg.hop_length,
            n_mels=cfg.n_mels,
            power=2.0,
            center=True,
        )
        self.to_db = torchaudio.transforms.AmplitudeToDB(stype="power", top_db=None)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """Compute log-mel features."""
        frames = wave.shape[-1] // self.hop_length
        spec = self.to_db(self.mel(wave) + 1e-10)
        return spec[..., :frames].unsqueeze(1)


def num_samples(cfg: AudioConfig) -> int:
    """Samples per clip after crop/pad."""
    return int(round(cfg.duration_s * cfg.sample_rate))


def _load_fixed(path: str, cfg: AudioConfig) -> torch.Tensor:
    return fix_length(load_audio(path, cfg.sample_rate), num_samples(cfg), "center")


def compute_features(paths: list[str], cfg: AudioConfig, batch_size: int = 64, desc: str = "") -> np.ndarray:
    """Decode ``paths`` (two threads) and compute un-normalised log-mels, (N, 1, n_mels, frames)."""
    frontend = LogMelFrontend(cfg)
    out: list[np.ndarray] = []
    with ThreadPoolExecutor(max_workers=2) as pool, tqdm(total=len(paths), desc=desc, unit="clip") as bar:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            waves = list(pool.map(lambda p: _load_fixed(p, cfg), chunk))
            with torch.no_grad():
                out.append(frontend(torch.stack(waves)).numpy())
            bar.update(len(chunk))
    return np.concatenate(out).astype(np.float32)


def preprocess(
    data_cfg: DataConfig, audio_cfg: AudioConfig, prepared_dir: str | Path, out_dir: str | Path
) -> dict:
    """Preprocess stage: log-mels per split, normalised with statistics of the train split only."""
    df = load_prepared(prepared_dir)
    targets = list(data_cfg.targets)
    missing = [t for t in targets if t not in df.columns]
    if missing:
        from audiokd.config import ConfigError

        raise ConfigError(f"data.targets: {missing} not in {Path(prepared_dir) / 'manifest.csv'}")
    feats = {
        s: compute_features(df.loc[df.split == s, "path"].tolist(), audio_cfg, desc=f"preprocess {s}")
        for s in SPLITS
    }
    train = feats["train"]
    mel_mean = train.mean(axis=(0, 1, 3))
    mel_std = train.std(axis=(0, 1, 3)) + 1e-5
    y_train = df.loc[df.split == "train", targets].to_numpy(np.float64)
    stats = {
        "mel_mean": mel_mean.tolist(),
        "mel_std": mel_std.tolist(),
        "target_mean": y_train.mean(0).tolist(),
        "target_std": (y_train.std(0) + 1e-8).tolist(),
    }
    shape = list(train.shape[1:])
    meta = {
        "task": data_cfg.task,
        "targets": targets,
        "shape": shape,
        "counts": {s: int(len(feats[s])) for s in SPLITS},
        "audio": {
            "sample_rate": audio_cfg.sample_rate,
            "duration_s": audio_cfg.duration_s,
            "n_fft": audio_cfg.n_fft,
            "hop_length": audio_cfg.hop_length,
            "n_mels": audio_cfg.n_mels,
        },
    }
    with atomic_dir(out_dir) as tmp:
        for s in SPLITS:
            (tmp / s).mkdir()
            x = (feats[s] - mel_mean[None, None, :, None]) / mel_std[None, None, :, None]
            np.save(tmp / s / "x.npy", x.astype(np.float32))
            part = df.loc[df.split == s, ["path", *targets]]
            np.save(tmp / s / "y.npy", part[targets].to_numpy(np.float32))
            part.to_csv(tmp / s / "clips.csv", index=False)
        write_json(tmp / "stats.json", stats)
        write_json(tmp / "meta.json", meta)
    log.info("features %s per clip: %s", shape, meta["counts"])
    return meta


@dataclass
class SplitData:
    """One split held in memory: normalised inputs and normalised targets."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class FeatureSet:
    """The preprocessed features and their statistics."""

    root: Path
    meta: dict
    stats: dict

    @classmethod
    def load(cls, root: str | Path) -> FeatureSet:
        """Open a features folder written by :func:`preprocess`."""
        root = Path(root)
        return cls(root, read_json(root / "meta.json"), read_json(root / "stats.json"))

    @property
    def targets(self) -> list[str]:
        """Target names."""
        return list(self.meta["targets"])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, n_mels, frames)."""
        c, h, w = self.meta["shape"]
        return int(c), int(h), int(w)

    def split(self, name: str) -> SplitData:
        """Load split ``name`` (memory-mapped, then copied into one tensor), targets normalised."""
        x = np.load(self.root / name / "x.npy", mmap_mode="r")
        y = np.load(self.root / name / "y.npy")
        return SplitData(torch.from_numpy(np.array(x)), torch.from_numpy(self.normalise_targets(y)))

    def raw_targets(self, name: str) -> np.ndarray:
        """Un-normalised targets of split ``name``."""
        return np.load(self.root / name / "y.npy")

    def normalise_targets(self, y: np.ndarray) -> np.ndarray:
        """Standardise targets with the train-split statistics."""
        mean = np.asarray(self.stats["target_mean"], np.float32)
        std = np.asarray(self.stats["target_std"], np.float32)
        return ((y - mean) / std).astype(np.float32)

    def denormalise_targets(self, y: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`normalise_targets`."""
        mean = np.asarray(self.stats["target_mean"], np.float32)
        std = np.asarray(self.stats["target_std"], np.float32)
        return y * std + mean


def clips_table(features_dir: str | Path, split: str) -> pd.DataFrame:
    """Paths and targets of ``split``, in array order."""
    return pd.read_csv(Path(features_dir) / split / "clips.csv")
