"""Manifests: read and validate a user's CSV (or synthesise the embedded set), assign splits.

A manifest has one row per clip: ``path`` (relative to the manifest's folder, or absolute), the target
columns, optional ``split`` (train/val/test) and optional ``group`` (no group spans two splits).
The prepared manifest written by :func:`prepare` always has a ``split`` column and absolute or
prepared-folder-relative paths.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from audiokd.config import DataConfig, SplitConfig
from audiokd.data import synthetic
from audiokd.io import atomic_dir, write_json

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MIN_CLIPS_PER_SPLIT = 2


class ManifestError(ValueError):
    """Bad manifest content; the message lists every problem, one per line, naming file and row."""


def assign_splits(n: int, fractions: SplitConfig, seed: int, groups: pd.Series | None = None) -> np.ndarray:
    """Split ``n`` rows into train/val/test by ``fractions``, deterministic in ``seed``.

    With ``groups``, whole groups are assigned (largest-remainder on group sizes), so no group spans two
    splits.
    """
    rng = np.random.default_rng(seed)
    if groups is None:
        order = rng.permutation(n)
        n_train = int(round(fractions.train * n))
        n_val = int(round(fractions.val * n))
        out = np.empty(n, dtype=object)
        out[order[:n_train]] = "train"
        out[order[n_train : n_train + n_val]] = "val"
        out[order[n_train + n_val :]] = "test"
        return out
    keys = groups.astype(str).to_numpy()
    uniq = np.array(sorted(set(keys)))
    uniq = uniq[rng.permutation(len(uniq))]
    sizes = {g: int((keys == g).sum()) for g in uniq}
    split_of: dict[str, str] = {}
    filled = {s: 0 for s in SPLITS}
    want = {"train": fractions.train * n, "val": fractions.val * n, "test": fractions.test * n}
    for g in uniq:
        # the split furthest below its share takes the next group
        s = max(SPLITS, key=lambda s: (want[s] - filled[s]) / max(want[s], 1e-9))
        split_of[g] = s
        filled[s] += sizes[g]
    return np.array([split_of[k] for k in keys], dtype=object)


def read_manifest(cfg: DataConfig) -> pd.DataFrame:
    """Read ``cfg.manifest`` and validate it; paths are resolved to absolute paths.

    Raises :class:`ManifestError` listing every problem found (file, row, what is wrong).
    """
    mpath = Path(cfg.manifest)
    if not mpath.is_file():
        raise ManifestError(f"{mpath}: manifest not found")
    try:
        df = pd.read_csv(mpath)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ManifestError(f"{mpath}: not a readable CSV ({e})") from None
    needed = ["path", *cfg.targets]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ManifestError(f"{mpath}: missing column(s) {', '.join(missing)}; has {', '.join(df.columns)}")
    if df.empty:
        raise ManifestError(f"{mpath}: the manifest has no rows")
    problems: list[str] = []
    root = mpath.resolve().parent
    resolved = []
    for i, p in enumerate(df["path"].astype(str)):
        full = Path(p) if Path(p).is_absolute() else root / p
        resolved.append(str(full))
        row = f"{mpath} row {i + 2}"  # +2: header line, 1-based
        if not full.is_file():
            problems.append(f"{row}: audio file not found: {p}")
        for t in cfg.targets:
            v = pd.to_numeric(pd.Series([df[t].iloc[i]]), errors="coerce").iloc[0]
            if pd.isna(v) or not np.isfinite(v):
                problems.append(f"{row}: target {t!r} is missing or not a finite number: {df[t].iloc[i]!r}")
        if "split" in df.columns and df["split"].iloc[i] not in SPLITS:
            problems.append(f"{row}: unknown split {df['split'].iloc[i]!r}; use train, val or test")
    dup = df["path"][df["path"].duplicated()].tolist()
    if dup:
        problems.append(f"{mpath}: duplicate path(s): {', '.join(map(str, dup[:5]))}")
    if problems:
        raise ManifestError("\n".join(problems))
    df = df.copy()
    df["path"] = resolved
    for t in cfg.targets:
        df[t] = pd.to_numeric(df[t]).astype(float)
    return df


def prepare(cfg: DataConfig, out_dir: str | Path) -> pd.DataFrame:
    """Prepare stage: write ``out_dir/manifest.csv`` (with ``split``) and, for the embedded set, the clips.

    The output folder is replaced atomically: on any error the previous one is left intact.
    """
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        if cfg.manifest:
            df = read_manifest(cfg)
            source = str(Path(cfg.manifest).resolve())
        else:
            df = synthetic.generate(cfg, tmp)
            source = "embedded synthetic set"
        if "split" not in df.columns:
            groups = df["group"] if "group" in df.columns else None
            df["split"] = assign_splits(len(df), cfg.split, cfg.seed, groups)
        counts = {s: int((df["split"] == s).sum()) for s in SPLITS}
        short = [f"{s} has {c}" for s, c in counts.items() if c < MIN_CLIPS_PER_SPLIT]
        if short:
            raise ManifestError(
                f"{cfg.manifest or 'data'}: too few clips per split ({'; '.join(short)}; "
                f"need at least {MIN_CLIPS_PER_SPLIT})"
            )
        cols = ["path", *cfg.targets, "split"] + (["group"] if "group" in df.columns else [])
        df[cols].to_csv(tmp / "manifest.csv", index=False)
        write_json(
            tmp / "summary.json",
            {"source": source, "clips": len(df), "splits": counts, "targets": list(cfg.targets)},
        )
    log.info("prepared %d clips from %s: %s", len(df), source, counts)
    return df


def load_prepared(prepared_dir: str | Path) -> pd.DataFrame:
    """Read a prepared manifest, with paths made absolute."""
    prepared_dir = Path(prepared_dir)
    df = pd.read_csv(prepared_dir / "manifest.csv")
    df["path"] = [p if Path(p).is_absolute() else str((prepared_dir / p).resolve()) for p in df["path"]]
    return df
