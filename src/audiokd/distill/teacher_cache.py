"""Teacher outputs stored once by train_teacher and reused by every distill run that does not augment.

The cache lives inside the teacher's DVC output (``models/teacher/predictions``), so it is versioned with
the teacher. It is keyed by content: ``meta.json`` records the SHA-256 of the teacher's weights
(``model.safetensors``) and of the whole features folder it was computed on, and :func:`load` recomputes
both and refuses a cache whose key differs. A different teacher or different features can therefore never
reuse it, whatever DVC or a user did to the folders (hashing the ~25 MB of default features takes ~0.1 s).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from audiokd.io import file_sha256, read_json, tree_sha256, write_json

WEIGHTS = "model.safetensors"


class StaleCacheError(ValueError):
    """The cached teacher outputs do not belong to the current teacher or features."""


def cache_key(teacher_weights: Path, features_dir: Path) -> dict[str, str]:
    """What the cache is valid for: the teacher's weights and the features, by content."""
    return {"teacher_sha256": file_sha256(teacher_weights), "features_sha256": tree_sha256(features_dir)}


def save(folder: Path, outputs: dict[str, torch.Tensor], features_meta: dict, key: dict[str, str]) -> None:
    """Write per-split teacher outputs (standardised target space) with their :func:`cache_key`."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, out in outputs.items():
        np.save(folder / f"{split}.npy", out.numpy().astype(np.float32))
    write_json(
        folder / "meta.json",
        {"key": key, "splits": {k: list(v.shape) for k, v in outputs.items()}, "features": features_meta},
    )


def load(
    teacher_dir: Path, features_dir: Path, features_meta: dict, splits: tuple[str, ...] = ("train", "val")
) -> dict[str, torch.Tensor]:
    """Read the cached outputs of ``teacher_dir`` for ``splits``; raise :class:`StaleCacheError` unless they
    were computed by these teacher weights on these features."""
    folder = teacher_dir / "predictions"
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise StaleCacheError(f"{folder}: no teacher predictions; rerun the train_teacher stage")
    meta = read_json(meta_path)
    now = cache_key(teacher_dir / WEIGHTS, features_dir)
    stored = meta.get("key") or {}
    for name, what in (("teacher_sha256", "teacher weights"), ("features_sha256", "features")):
        if stored.get(name) != now[name]:
            raise StaleCacheError(
                f"{folder}: computed for other {what} ({name} {str(stored.get(name))[:12]} != "
                f"{now[name][:12]}); rerun the train_teacher stage (dvc repro does)"
            )
    out = {}
    for split in splits:
        arr = np.load(folder / f"{split}.npy")
        expected = features_meta["counts"][split]
        if arr.shape[0] != expected:
            raise StaleCacheError(f"{folder / f'{split}.npy'}: {arr.shape[0]} rows for {expected} clips")
        out[split] = torch.from_numpy(arr)
    return out
