"""Teacher outputs stored once by train_teacher and reused by every distill run that does not augment.

The cache lives inside the teacher's DVC output (``models/teacher/predictions``), so it is versioned with
the teacher: a new teacher or new features rerun train_teacher, which rewrites it. ``meta.json`` records
the shapes it was computed for, and :func:`load` refuses a cache that does not match the features.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from audiokd.io import read_json, write_json


class StaleCacheError(ValueError):
    """The cached teacher outputs do not belong to the current features."""


def save(folder: Path, outputs: dict[str, torch.Tensor], features_meta: dict) -> None:
    """Write per-split teacher outputs (standardised target space) and what they were computed on."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, out in outputs.items():
        np.save(folder / f"{split}.npy", out.numpy().astype(np.float32))
    write_json(
        folder / "meta.json",
        {"splits": {k: list(v.shape) for k, v in outputs.items()}, "features": features_meta},
    )


def load(
    folder: Path, features_meta: dict, splits: tuple[str, ...] = ("train", "val")
) -> dict[str, torch.Tensor]:
    """Read cached outputs for ``splits``; raise :class:`StaleCacheError` if they do not fit the features."""
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise StaleCacheError(f"{folder}: no teacher predictions; rerun the train_teacher stage")
    meta = read_json(meta_path)
    if meta.get("features") != features_meta:
        raise StaleCacheError(
            f"{folder}: teacher predictions were computed on other features; rerun the train_teacher stage"
        )
    out = {}
    for split in splits:
        arr = np.load(folder / f"{split}.npy")
        expected = features_meta["counts"][split]
        if arr.shape[0] != expected:
            raise StaleCacheError(f"{folder / f'{split}.npy'}: {arr.shape[0]} rows for {expected} clips")
        out[split] = torch.from_numpy(arr)
    return out
