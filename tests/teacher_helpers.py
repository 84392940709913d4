"""Tiny features folders in the real on-disk format, and tiny teacher settings, for teacher tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from audiokd.config import (
    DataConfig,
    RuntimeConfig,
    TeacherConfig,
    TrackingConfig,
)
from audiokd.io import write_json

TARGETS = ("arousal", "valence")
CLASSES = ("calm", "happy", "sad")
COUNTS = {"train": 12, "val": 6, "test": 6}
SHAPE = (1, 32, 64)
# a one-layer ViT on 8x8 patches: trains an epoch on 12 clips in about a second
TINY = TeacherConfig(
    hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, patch_size=8, epochs=1, batch_size=4
)
RUNTIME = RuntimeConfig(device="cpu", num_threads=1, seed=0)
TRACKING = TrackingConfig(experiment="teachers", registered_model="")


def data_config(task: str = "regression") -> DataConfig:
    """The data section matching :func:`make_features`."""
    return DataConfig(task=task, targets=TARGETS)


def make_features(root: Path, task: str = "regression", groups: int = 0, seed: int = 0) -> Path:
    """A features folder as preprocess writes it; clips at ``<root>/clips/<split>_<i>.wav`` (not created).

    ``groups > 0`` adds a ``group`` column to the clips tables (clip i of a split in group ``g<i % groups>``).
    """
    rng = np.random.default_rng(seed)
    classes = list(CLASSES) if task == "classification" else []
    for split, n in COUNTS.items():
        folder = root / split
        folder.mkdir(parents=True)
        np.save(folder / "x.npy", rng.standard_normal((n, *SHAPE)).astype(np.float32))
        paths = [str((root.parent / "clips" / f"{split}_{i}.wav").resolve()) for i in range(n)]
        table = pd.DataFrame({"path": paths})
        if task == "regression":
            y = rng.uniform(-1, 1, (n, len(TARGETS))).astype(np.float32)
            for k, t in enumerate(TARGETS):
                table[t] = y[:, k]
        else:
            y = np.arange(n, dtype=np.int64) % len(classes)
            table["label"] = [classes[c] for c in y]
        if groups:
            table["group"] = [f"g{i % groups}" for i in range(n)]
        np.save(folder / "y.npy", y)
        table.to_csv(folder / "clips.csv", index=False)
    stats = {"mel_mean": [0.0] * SHAPE[1], "mel_std": [1.0] * SHAPE[1]}
    if task == "regression":
        y_train = np.load(root / "train" / "y.npy").astype(np.float64)
        stats.update(target_mean=y_train.mean(0).tolist(), target_std=(y_train.std(0) + 1e-8).tolist())
    write_json(root / "stats.json", stats)
    write_json(
        root / "meta.json",
        {
            "task": task,
            "targets": list(TARGETS) if task == "regression" else [],
            "classes": classes,
            "shape": list(SHAPE),
            "counts": COUNTS,
            "random_crop": False,
            "audio": {},
        },
    )
    return root
