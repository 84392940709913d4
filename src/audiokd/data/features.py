"""Log-mel front end and the preprocess stage: clips -> normalised spectrogram arrays per split.

Layout of the features folder (memory-mappable ``.npy``, one array per split, not a file per clip)::

    features/meta.json            task, shape, targets or classes, clip counts, audio settings
    features/stats.json           per-mel-bin mean/std and per-target mean/std, from the train split only
    features/<split>/x.npy        float32 (N, 1, n_mels, frames), normalised
    features/<split>/y.npy        float32 (N, n_targets) raw targets, or int64 (N,) class indices
    features/<split>/clips.csv    path and targets (or label) [and group] per row, in array order
    features/unlabeled/           with data.unlabeled_manifest: x.npy and clips.csv (paths), no y.npy

With ``audio.random_crop`` the train split keeps ``audio.crop_pool_s`` seconds per clip (more frames) and
training crops a random window of the model's width from it each time; val and test stay centre-cropped.
Unlabelled clips are stored like the train split (they are trained on beside it).
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import os
import sys
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from audiokd.config import AudioConfig, ConfigError, DataConfig
from audiokd.data.frontend import file_features, one_blas_thread, single_threaded_blas
from audiokd.data.manifest import SPLITS, load_prepared
from audiokd.data.unlabeled import UNLABELED, UNLABELED_FILE
from audiokd.io import atomic_dir, read_json, write_json
from audiokd.tasks import Task

log = logging.getLogger(__name__)


def num_samples(cfg: AudioConfig) -> int:
    """Samples per clip after crop/pad."""
    return int(round(cfg.duration_s * cfg.sample_rate))


PROCESS_MIN_CLIPS = 2000  # below this a process pool's start-up costs more than the GIL saves


def compute_features(
    paths: list[str],
    cfg: AudioConfig,
    batch_size: int = 32,
    desc: str = "",
    seconds: float | None = None,
    workers: int | None = None,
    processes: bool | None = None,
) -> np.ndarray:
    """Decode ``paths``, centre-crop/pad to ``seconds`` (default ``audio.duration_s``), and compute
    un-normalised log-mels, (N, 1, n_mels, frames).

    Decoding (libsndfile), resampling (:mod:`audiokd.data.resample`) and log-mels
    (:mod:`audiokd.data.frontend`) are NumPy/C code without torch. Chunks of up to ``batch_size`` clips go to
    ``workers`` (default: every core) with one BLAS thread each: worker processes forked from this one
    (Linux; they run no torch, so torch's OpenMP state does not matter) when ``processes`` is true or, by
    default, for ``PROCESS_MIN_CLIPS`` clips or more; threads of this process otherwise (the C code releases
    the GIL for most of the work, and a small job is done before a process pool has started).
    """
    n = int(round((seconds or cfg.duration_s) * cfg.sample_rate))
    workers = workers or os.cpu_count() or 1
    size = max(1, min(batch_size, math.ceil(len(paths) / (4 * workers))))  # a few chunks per worker
    chunks = [paths[i : i + size] for i in range(0, len(paths), size)]
    if processes is None:
        processes = workers > 1 and len(paths) >= PROCESS_MIN_CLIPS
    processes = processes and sys.platform.startswith("linux")  # fork is unsafe on macOS
    out: list[np.ndarray] = []
    with contextlib.ExitStack() as stack:
        if processes:
            context = multiprocessing.get_context("fork")  # spawn would re-import the caller's torch
            pool: Executor = ProcessPoolExecutor(workers, context, initializer=single_threaded_blas)
        else:
            stack.enter_context(one_blas_thread())
            pool = ThreadPoolExecutor(max_workers=workers)
        stack.enter_context(pool)
        bar = stack.enter_context(tqdm(total=len(paths), desc=desc, unit="clip"))
        jobs = pool.map(file_features, chunks, [cfg] * len(chunks), [n] * len(chunks))
        for chunk, feats in zip(chunks, jobs, strict=True):
            out.append(feats)
            bar.update(len(chunk))
    return np.concatenate(out).astype(np.float32)


def preprocess(
    data_cfg: DataConfig, audio_cfg: AudioConfig, prepared_dir: str | Path, out_dir: str | Path
) -> dict:
    """Preprocess stage: log-mels per split, normalised with statistics of the train split only."""
    df, summary = load_prepared(prepared_dir)
    regression = data_cfg.task == "regression"
    cols = list(data_cfg.targets) if regression else [data_cfg.label_column]
    missing = [t for t in cols if t not in df.columns]
    if missing or summary.get("task") != data_cfg.task:
        raise ConfigError(
            f"data: {Path(prepared_dir) / 'manifest.csv'} was prepared for another task or "
            f"targets ({summary.get('task')}, {summary.get('targets')}); rerun prepare"
        )
    frames = num_samples(audio_cfg) // audio_cfg.hop_length
    feats = {}
    paths_of = {s: df.loc[df.split == s, "path"].tolist() for s in SPLITS}
    if (Path(prepared_dir) / UNLABELED_FILE).is_file():
        pool = pd.read_csv(Path(prepared_dir) / UNLABELED_FILE, dtype={"path": str})
        paths_of[UNLABELED] = [str(Path(p).resolve()) for p in pool["path"]]
    for s, paths in paths_of.items():
        wide = audio_cfg.random_crop and s in ("train", UNLABELED)  # the splits that are trained on
        pool_s = audio_cfg.crop_pool_s if wide else None
        feats[s] = compute_features(paths, audio_cfg, desc=f"preprocess {s}", seconds=pool_s)
    train = feats["train"]
    mel_mean = train.mean(axis=(0, 1, 3))
    mel_std = train.std(axis=(0, 1, 3)) + 1e-5
    stats: dict = {"mel_mean": mel_mean.tolist(), "mel_std": mel_std.tolist()}
    classes = summary.get("classes", [])
    if regression:
        y_train = df.loc[df.split == "train", cols].to_numpy(np.float64)
        stats.update(target_mean=y_train.mean(0).tolist(), target_std=(y_train.std(0) + 1e-8).tolist())
    meta = {
        "task": data_cfg.task,
        "targets": cols if regression else [],
        "classes": classes,
        "shape": [1, audio_cfg.n_mels, frames],
        "counts": {s: int(len(f)) for s, f in feats.items()},
        "random_crop": bool(audio_cfg.random_crop),
        "audio": {
            "sample_rate": audio_cfg.sample_rate,
            "duration_s": audio_cfg.duration_s,
            "n_fft": audio_cfg.n_fft,
            "hop_length": audio_cfg.hop_length,
            "n_mels": audio_cfg.n_mels,
        },
    }
    with atomic_dir(out_dir) as tmp:
        for s in feats:
            (tmp / s).mkdir()
            x = (feats[s] - mel_mean[None, None, :, None]) / mel_std[None, None, :, None]
            np.save(tmp / s / "x.npy", x.astype(np.float32))
            if s == UNLABELED:  # no targets to store
                pd.DataFrame({"path": paths_of[s]}).to_csv(tmp / s / "clips.csv", index=False)
                continue
            # the group (e.g. speaker) goes along: fold teachers keep a group in one fold (teacher.folds)
            part = df.loc[df.split == s, ["path", *cols, *(["group"] if "group" in df.columns else [])]]
            if regression:
                y = part[cols].to_numpy(np.float32)
            else:
                y = part[cols[0]].map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64)
            np.save(tmp / s / "y.npy", y)
            part.to_csv(tmp / s / "clips.csv", index=False)
        write_json(tmp / "stats.json", stats)
        write_json(tmp / "meta.json", meta)
    log.info("features %s per clip: %s", meta["shape"], meta["counts"])
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
        """Target names (regression) or class names (classification)."""
        return list(self.meta["targets"] or self.meta.get("classes", []))

    @property
    def task(self) -> Task:
        """The run's task: regression over targets or classification over classes."""
        return Task(self.meta.get("task", "regression"), tuple(self.targets))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, n_mels, frames)."""
        c, h, w = self.meta["shape"]
        return int(c), int(h), int(w)

    def split(self, name: str) -> SplitData:
        """Open split ``name``: the spectrograms memory-mapped (a batch is a slice of the file, pages shared
        by every process and DataLoader worker that opens it), regression targets normalised in memory.

        The ``unlabeled`` split has no targets: it gets zeros of the targets' shape and type, placeholders
        that keep a batch NaN-free and that no loss on labels may read (the losses mask those rows out).
        """
        # copy-on-write mapping: a tensor over it may be written to without touching the file
        x = np.load(self.root / name / "x.npy", mmap_mode="c")
        if not (self.root / name / "y.npy").is_file():
            regression = self.task.kind == "regression"
            shape = (len(x), len(self.targets)) if regression else (len(x),)
            return SplitData(
                torch.from_numpy(x), torch.zeros(shape, dtype=torch.float32 if regression else torch.int64)
            )
        y = np.load(self.root / name / "y.npy")
        if self.task.kind == "regression":
            y = self.normalise_targets(y)
        return SplitData(torch.from_numpy(x), torch.from_numpy(y))

    def count(self, name: str) -> int:
        """Clips in split ``name`` (0 for a split the features do not have, e.g. no unlabelled clips)."""
        return int(self.meta["counts"].get(name, 0))

    @property
    def frames(self) -> int:
        """The model's input width in frames (train clips may hold more when random_crop is on)."""
        return int(self.meta["shape"][2])

    def raw_targets(self, name: str) -> np.ndarray:
        """Un-normalised targets of split ``name``."""
        return np.load(self.root / name / "y.npy")

    def normalise_targets(self, y: np.ndarray) -> np.ndarray:
        """Standardise regression targets with the train-split statistics (classes pass through)."""
        if self.task.kind != "regression":
            return y
        mean = np.asarray(self.stats["target_mean"], np.float32)
        std = np.asarray(self.stats["target_std"], np.float32)
        return ((y - mean) / std).astype(np.float32)

    def denormalise_targets(self, y: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`normalise_targets` (model outputs pass through for classification)."""
        if self.task.kind != "regression":
            return y
        mean = np.asarray(self.stats["target_mean"], np.float32)
        std = np.asarray(self.stats["target_std"], np.float32)
        return y * std + mean


def check_targets(data: DataConfig, fs: FeatureSet) -> None:
    """The features must carry the task and targets params.yaml names."""
    if data.task != fs.task.kind or (data.task == "regression" and list(data.targets) != fs.targets):
        raise ConfigError(
            f"data.task/targets = {data.task}/{list(data.targets)} but the features hold "
            f"{fs.task.kind}/{fs.targets}; rerun preprocess (dvc repro does)"
        )


def clips_table(features_dir: str | Path, split: str) -> pd.DataFrame:
    """Paths and targets of ``split``, in array order."""
    return pd.read_csv(Path(features_dir) / split / "clips.csv")
