"""Bring your own teacher outputs (``teacher.outputs``): a CSV of predictions per clip from any model.

Columns: ``path``, then one per target (regression, in the targets' own units) or one logit per class named by
its label (classification; for probabilities give their log). Paths are read like the manifest's: relative to
the CSV's folder, or absolute. Every train and val clip needs a row (the student learns from train, picks its
best epoch on val); rows for every test clip let evaluate score the teacher, otherwise its quality is unknown.
Rows for clips the features do not hold (e.g. clips that prepare skipped) are ignored.

Regression outputs are standardised with the train-split target statistics the features store
(:meth:`audiokd.data.features.FeatureSet.normalise_targets`), the space every trained teacher predicts in, so
the student cannot tell them from a trained teacher's cache.
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from audiokd.config import ConfigError, DataConfig, TeacherConfig
from audiokd.data.features import FeatureSet, check_targets, clips_table
from audiokd.data.unlabeled import UNLABELED
from audiokd.distill import teacher_cache
from audiokd.io import atomic_dir, write_json

log = logging.getLogger(__name__)

# distill trains on these splits (unlabelled clips too: data.unlabeled_manifest), so every clip needs a row
REQUIRED = ("train", "val", UNLABELED)
SHOWN = 3  # missing paths named in the error


def _read(csv: Path, columns: list[str], kind: str) -> tuple[pd.DataFrame, np.ndarray]:
    """The CSV's resolved paths (and rows) and its output columns as float32, validated."""
    if not csv.is_file():
        raise ConfigError(f"teacher.outputs: {csv}: no such file")
    try:
        df = pd.read_csv(csv, dtype={"path": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ConfigError(
            f"teacher.outputs: {csv}: not a readable CSV ({str(e).strip().splitlines()[0]})"
        ) from None
    what = "a column per target" if kind == "regression" else "a logit column per class, named by its label"
    missing = [c for c in ["path", *columns] if c not in df.columns]
    if missing:
        raise ConfigError(
            f"teacher.outputs: {csv} lacks column(s) {', '.join(missing)} (needs path and {what}: "
            f"{', '.join(columns)})"
        )
    values = df[columns].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    bad = np.argwhere(~np.isfinite(values))
    if len(bad):
        r, c = bad[0]
        raise ConfigError(
            f"teacher.outputs: {csv} row {r + 2}: {columns[c]} = {df[columns[c]].iloc[r]!r} "
            "is not a finite number"
        )
    root = csv.resolve().parent
    df["resolved"] = [
        "" if pd.isna(p) else str(Path(p) if Path(p).is_absolute() else (root / p).resolve())
        for p in df["path"]
    ]
    dup = df["resolved"].duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise ConfigError(f"teacher.outputs: {csv} row {i + 2}: {df['path'].iloc[i]} has a row already")
    return df, values.astype(np.float32)


def _match(clips: list[str], rows: dict[str, int], here: Path) -> list[int | None]:
    """The CSV row of each clip: the same resolved path, else the same path re-rooted in this workspace.

    The features store absolute paths of the checkout that ran preprocess; a DVC experiment's temporary copy
    (or a clone that pulled the features) sees them under another root. Re-rooting tries the clip's path with
    its leading parts dropped, longest remainder first, below the current directory.
    """
    out: list[int | None] = []
    for clip in clips:
        hit = rows.get(clip)
        parts = Path(clip).parts
        for i in range(1, len(parts) - 1):
            if hit is not None:
                break
            hit = rows.get(str(here.joinpath(*parts[i:])))
        out.append(hit)
    return out


def read_outputs(csv: str | Path, fs: FeatureSet, features_dir: str | Path) -> dict[str, torch.Tensor]:
    """The CSV's outputs per split, in array order: standardised (regression) or logits (classification).

    Every train, val and unlabelled clip must have a row (else a :class:`ConfigError` naming the first missing
    paths); another split is included when all its clips have rows, and left out (with a warning) otherwise.
    """
    csv = Path(csv)
    df, values = _read(csv, fs.targets, fs.task.kind)
    rows = {p: i for i, p in enumerate(df["resolved"]) if p}
    here = Path.cwd().resolve()
    out: dict[str, torch.Tensor] = {}
    absent: list[str] = []
    used = 0
    required = [split for split in fs.meta["counts"] if split in REQUIRED]
    for split in fs.meta["counts"]:
        clips = clips_table(features_dir, split)["path"].astype(str).tolist()
        idx = _match(clips, rows, here)
        lost = [c for c, i in zip(clips, idx, strict=True) if i is None]
        if split in REQUIRED:
            absent += [f"{c} ({split})" for c in lost]
        elif lost:
            log.warning(
                "teacher.outputs: %s has rows for %d of %d %s clips; the teacher's %s quality stays unknown",
                csv,
                len(clips) - len(lost),
                len(clips),
                split,
                split,
            )
        if lost:
            continue
        picked = values[np.asarray(idx, dtype=np.int64)] if clips else values[:0]
        if fs.task.kind == "regression":
            picked = fs.normalise_targets(picked)
        out[split] = torch.from_numpy(np.ascontiguousarray(picked, dtype=np.float32))
        used += len(clips)
    if absent:
        raise ConfigError(
            f"teacher.outputs: {csv} has no row for {len(absent)} {'/'.join(required)} clip(s), e.g. "
            f"{'; '.join(absent[:SHOWN])} (paths are read relative to the CSV's folder, like the manifest's)"
        )
    log.info("teacher.outputs: %s: %d of its %d rows used (%s)", csv, used, len(df), ", ".join(out))
    return out


def import_outputs(
    data: DataConfig, teacher: TeacherConfig, features_dir: str | Path, out_dir: str | Path
) -> dict:
    """Write ``out_dir`` as a teacher folder (kind ``outputs``) whose cache is the CSV ``teacher.outputs``."""
    features_dir = Path(features_dir)
    fs = FeatureSet.load(features_dir)
    check_targets(data, fs)
    task = fs.task
    csv = Path(teacher.outputs)
    outputs = read_outputs(csv, fs, features_dir)
    quality = task.flat_quality(outputs["val"].numpy(), fs.split("val").y.numpy())[task.primary]
    with atomic_dir(out_dir) as tmp:
        # the copy is the cache's source file: its hash keys the cache, and the folder is complete on its own
        shutil.copy2(csv, tmp / teacher_cache.OUTPUTS_CSV)
        key = teacher_cache.cache_key(tmp, features_dir)
        teacher_cache.save(tmp / teacher_cache.FOLDER, outputs, fs.meta, key)
        meta = {
            "kind": "outputs",
            "source": str(csv),
            "splits": {s: int(len(v)) for s, v in outputs.items()},
            "task": task.kind,
            f"val_{task.primary}": quality if math.isfinite(quality) else None,
            "params": None,
            "input_shape": list(fs.input_shape),
            "targets": fs.targets,
        }
        write_json(tmp / "meta.json", meta)
    log.info("teacher: outputs from %s, val %s %.4f; no teacher trains", csv, task.primary, quality)
    return meta
