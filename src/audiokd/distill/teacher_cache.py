"""Teacher outputs stored once per teacher and reused by every distill run that does not augment.

The cache lives inside the teacher's DVC output (``models/teacher/predictions``), one ``<split>.npy`` per
split (any split names: ``train``, ``val``, ``test`` and whatever else a teacher predicts), in the
standardised target space (regression) or as logits (classification). Whatever the teacher was (one model,
an ensemble, fold teachers, or a CSV of outputs brought from elsewhere), distill sees only this cache.

It is keyed by content: ``meta.json`` records the SHA-256 of the files the outputs were computed from (every
``model.safetensors`` under the teacher folder, or the ``outputs.csv`` a user supplied; for one model this is
the hash of its weights) and of the whole features folder, and :func:`load` recomputes both and refuses a
cache whose key differs. A different teacher or different features can therefore never reuse it, whatever DVC
or a user did to the folders (hashing the ~25 MB of default features takes ~0.1 s).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from audiokd.io import file_sha256, read_json, tree_sha256, write_json

WEIGHTS = "model.safetensors"
OUTPUTS_CSV = "outputs.csv"  # a copy of the teacher.outputs file, inside the teacher folder
FOLDER = "predictions"


class StaleCacheError(ValueError):
    """The cached teacher outputs do not belong to the current teacher or features."""


def sources(teacher_dir: Path) -> list[Path]:
    """The files under ``teacher_dir`` that its outputs derive from: every model's weights, or a BYO CSV."""
    return sorted(p for p in Path(teacher_dir).rglob("*") if p.name in (WEIGHTS, OUTPUTS_CSV) and p.is_file())


def teacher_sha256(teacher_dir: Path) -> str:
    """Hash of :func:`sources`: one file's own SHA-256 (one model), else a hash over names and hashes."""
    teacher_dir = Path(teacher_dir)
    files = sources(teacher_dir)
    if not files:
        raise StaleCacheError(f"{teacher_dir}: no {WEIGHTS} or {OUTPUTS_CSV}; rerun the train_teacher stage")
    if len(files) == 1:
        return file_sha256(files[0])
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(teacher_dir).as_posix().encode() + b"\0" + file_sha256(f).encode() + b"\n")
    return h.hexdigest()


def cache_key(teacher_dir: Path, features_dir: Path) -> dict[str, str]:
    """What the cache is valid for: the teacher's source files and the features, by content."""
    return {"teacher_sha256": teacher_sha256(teacher_dir), "features_sha256": tree_sha256(features_dir)}


def save(folder: Path, outputs: dict[str, torch.Tensor], features_meta: dict, key: dict[str, str]) -> None:
    """Write per-split teacher outputs (standardised target space, or logits) with their :func:`cache_key`."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, out in outputs.items():
        np.save(folder / f"{split}.npy", out.numpy().astype(np.float32))
    write_json(
        folder / "meta.json",
        {"key": key, "splits": {k: list(v.shape) for k, v in outputs.items()}, "features": features_meta},
    )


def splits(teacher_dir: Path) -> list[str]:
    """The splits the cache of ``teacher_dir`` holds (none when there is no cache)."""
    meta = Path(teacher_dir) / FOLDER / "meta.json"
    return list(read_json(meta).get("splits", {})) if meta.is_file() else []


def load(
    teacher_dir: Path, features_dir: Path, features_meta: dict, splits: tuple[str, ...] = ("train", "val")
) -> dict[str, torch.Tensor]:
    """Read the cached outputs of ``teacher_dir`` for ``splits``; raise :class:`StaleCacheError` unless they
    were computed by this teacher on these features."""
    teacher_dir = Path(teacher_dir)
    folder = teacher_dir / FOLDER
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise StaleCacheError(f"{folder}: no teacher predictions; rerun the train_teacher stage")
    meta = read_json(meta_path)
    now = cache_key(teacher_dir, features_dir)
    stored = meta.get("key") or {}
    for name, what in (("teacher_sha256", "teacher weights"), ("features_sha256", "features")):
        if stored.get(name) != now[name]:
            raise StaleCacheError(
                f"{folder}: computed for other {what} ({name} {str(stored.get(name))[:12]} != "
                f"{now[name][:12]}); rerun the train_teacher stage (dvc repro does)"
            )
    out = {}
    for split in splits:
        path = folder / f"{split}.npy"
        if not path.is_file():
            raise StaleCacheError(f"{path}: the teacher has no outputs for the {split} split")
        arr = np.load(path)
        expected = features_meta["counts"][split]
        if arr.shape[0] != expected:
            raise StaleCacheError(f"{path}: {arr.shape[0]} rows for {expected} clips")
        out[split] = torch.from_numpy(arr)
    return out
