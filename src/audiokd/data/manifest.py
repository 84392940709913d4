"""Manifests: read a CSV of clips, validate every row before any work, assign splits.

A manifest has one row per clip: ``path`` (relative to the manifest's folder, or absolute), the target
columns (``data.targets``, regression) or the label column (``data.label_column``, classification),
optional ``split`` and optional ``group`` (e.g. speaker; no group spans two splits).

``split`` is ``train``, ``val`` or ``test``, blank (that row is assigned by ``data.split``, like every row
of a manifest without the column), or ``unlabeled``: a clip without targets, used like the clips of
``data.unlabeled_manifest`` (teacher outputs only). So one manifest can carry its own unlabelled pool, and
swapping the manifest swaps the pool with it (the embedded set works that way).

Every problem is collected and reported together, one line each naming the file and row. With
``data.on_bad_clip: skip`` bad rows are dropped instead and listed with reasons in ``rejected.csv``.
The prepared folder is replaced atomically: on any error the previous one is left intact.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from audiokd.config import DataConfig, SplitConfig
from audiokd.data.clips import (
    ManifestError,
    check_audio,
    lines,
    path_problems,
    portable,
    read_csv_manifest,
    rejected_rows,
    resolve_paths,
)
from audiokd.data.unlabeled import UNLABELED, UNLABELED_FILE, read_unlabeled, unlabeled_path
from audiokd.io import atomic_dir, read_json, write_json

log = logging.getLogger(__name__)

__all__ = ["SPLITS", "ManifestError", "check_audio", "load_prepared", "prepare", "read_manifest"]

SPLITS = ("train", "val", "test")


def assign_splits(n: int, fractions: SplitConfig, seed: int, groups: pd.Series | None = None) -> np.ndarray:
    """Split ``n`` rows into train/val/test by ``fractions``, deterministic in ``seed``.

    With ``groups``, whole groups are assigned (each to the split furthest below its share), so no group
    spans two splits.
    """
    rng = np.random.default_rng(seed)
    out = np.empty(n, dtype=object)
    if groups is None:
        order = rng.permutation(n)
        n_train = int(round(fractions.train * n))
        n_val = int(round(fractions.val * n))
        out[order[:n_train]] = "train"
        out[order[n_train : n_train + n_val]] = "val"
        out[order[n_train + n_val :]] = "test"
        return out
    keys = groups.astype(str).to_numpy()
    uniq = np.array(sorted(set(keys)))
    uniq = uniq[rng.permutation(len(uniq))]
    filled = dict.fromkeys(SPLITS, 0)
    want = {"train": fractions.train * n, "val": fractions.val * n, "test": fractions.test * n}
    split_of: dict[str, str] = {}
    for g in uniq:
        s = max(SPLITS, key=lambda s: (want[s] - filled[s]) / max(want[s], 1e-9))
        split_of[g] = s
        filled[s] += int((keys == g).sum())
    return np.array([split_of[k] for k in keys], dtype=object)


def _read_csv(mpath: Path, cfg: DataConfig) -> pd.DataFrame:
    if cfg.task == "regression":
        return read_csv_manifest(mpath, list(cfg.targets), "data.manifest", "data.targets")
    return read_csv_manifest(mpath, [cfg.label_column], "data.manifest", "data.label_column")


def _pool_rows(df: pd.DataFrame) -> np.ndarray:
    """Mask of the rows whose ``split`` is ``unlabeled`` (none without a split column)."""
    if "split" not in df.columns:
        return np.zeros(len(df), dtype=bool)
    return (df["split"].astype(str).str.strip() == UNLABELED).to_numpy()


def _row_problems(df: pd.DataFrame, cfg: DataConfig, resolved: list[str]) -> dict[int, list[str]]:
    problems = path_problems(df, resolved)
    labelled = ~_pool_rows(df)  # unlabelled rows have no targets to check
    if cfg.task == "regression":
        for t in cfg.targets:
            values = pd.to_numeric(df[t], errors="coerce")
            bad = ~np.isfinite(values.to_numpy(dtype=float)) & labelled
            for i in np.flatnonzero(bad):
                problems[i].append(f"target {t!r} is missing or not a finite number: {df[t].iloc[i]!r}")
    else:
        labels = df[cfg.label_column]
        for i in np.flatnonzero(labels.isna().to_numpy() & labelled):
            problems[i].append(f"label {cfg.label_column!r} is missing")
        if cfg.labels:
            for i, v in enumerate(labels):
                if labelled[i] and not pd.isna(v) and str(v) not in cfg.labels:
                    problems[i].append(f"unknown label {v!r}; data.labels allows {', '.join(cfg.labels)}")
    if "split" in df.columns:
        for i, v in enumerate(df["split"]):
            if not pd.isna(v) and str(v).strip() not in (*SPLITS, UNLABELED, ""):
                problems[i].append(
                    f"unknown split {v!r}; use train, val, test, {UNLABELED} or leave it blank"
                )
    return {i: p for i, p in problems.items() if p}


def _check_labelled(
    cfg: DataConfig,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[str], set[str]]:
    """The labelled manifest's usable rows, rejected rows, problem lines and every row's resolved path."""
    mpath = Path(cfg.manifest)
    df = _read_csv(mpath, cfg)
    resolved = resolve_paths(df, mpath)
    problems = _row_problems(df, cfg, resolved)
    good = df.drop(index=list(problems)).copy()
    good["path"] = [portable(Path(resolved[i])) for i in good.index]
    pool = _pool_rows(good)
    inline = good.loc[pool, ["path"]].reset_index(drop=True)  # the manifest's own unlabelled clips
    good = good.loc[~pool].copy()
    if "split" in good.columns:
        good["split"] = [("" if pd.isna(v) else str(v).strip()) for v in good["split"]]
    if cfg.task == "regression":
        for t in cfg.targets:
            good[t] = pd.to_numeric(good[t]).astype(float)
    else:
        good[cfg.label_column] = good[cfg.label_column].astype(str)
    problem_lines = lines(df, problems, mpath)
    labelled = {r for r, in_pool in zip(resolved, _pool_rows(df), strict=True) if not in_pool}
    return good.reset_index(drop=True), inline, rejected_rows(df, problems, mpath), problem_lines, labelled


def read_manifest(cfg: DataConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read and validate ``cfg.manifest``: (usable rows with resolved paths, rejected rows with reasons).

    With ``on_bad_clip: error`` any problem raises :class:`ManifestError` listing all of them.
    """
    good, _, rejected, problem_lines, _ = _check_labelled(cfg)
    if problem_lines and cfg.on_bad_clip == "error":
        raise ManifestError("\n".join(problem_lines))
    return good, rejected


def _unseen_labels(df: pd.DataFrame, cfg: DataConfig) -> tuple[list[str], pd.Series]:
    """Classes (``data.labels`` or the train split's labels, sorted) and a mask of rows outside them."""
    labels = df[cfg.label_column]
    classes = list(cfg.labels) or sorted(set(labels[df["split"] == "train"]))
    return classes, ~labels.isin(classes)


def prepare(cfg: DataConfig, out_dir: str | Path) -> pd.DataFrame:
    """Prepare stage: validate, split, write ``manifest.csv``, ``rejected.csv`` and ``summary.json``."""
    out_dir = Path(out_dir)
    df, inline, rejected, problem_lines, labelled = _check_labelled(cfg)
    pool, sources = (inline, [str(Path(cfg.manifest))]) if len(inline) else (None, [])
    if cfg.unlabeled_manifest:  # checked now, so that every bad row of both manifests is reported together
        extra, pool_rejected, pool_lines = read_unlabeled(cfg, labelled)
        pool = extra if pool is None else pd.concat([pool, extra], ignore_index=True).drop_duplicates("path")
        sources.append(str(unlabeled_path(cfg)))
        rejected = pd.concat([rejected, pool_rejected], ignore_index=True)
        problem_lines += pool_lines
    if problem_lines and cfg.on_bad_clip == "error":
        raise ManifestError("\n".join(problem_lines))
    if "split" not in df.columns:
        df["split"] = ""
    blank = (df["split"] == "").to_numpy()
    if blank.any():  # rows without a split (all of them without the column): by data.split
        groups = df.loc[blank, "group"] if "group" in df.columns else None
        df.loc[blank, "split"] = assign_splits(int(blank.sum()), cfg.split, cfg.seed, groups)
    classes: list[str] = []
    if cfg.task == "classification":
        classes, unseen = _unseen_labels(df, cfg)
        if unseen.any():
            bad = df[unseen]
            msgs = [
                f"{p}: unknown label {v!r} (not in the train split)"
                for p, v in zip(bad["path"], bad[cfg.label_column], strict=True)
            ]
            if cfg.on_bad_clip == "error":
                raise ManifestError("\n".join(f"{cfg.manifest}: {m}" for m in msgs))
            extra = pd.DataFrame(
                {
                    "manifest": cfg.manifest,
                    "row": -1,
                    "path": bad["path"],
                    "reason": "unknown label (not in the train split)",
                }
            )
            rejected = pd.concat([rejected, extra], ignore_index=True)
            df = df[~unseen].reset_index(drop=True)
    counts = {s: int((df["split"] == s).sum()) for s in SPLITS}
    short = [f"{s} has {c}" for s, c in counts.items() if c < cfg.min_clips_per_split]
    if short:
        raise ManifestError(
            f"{cfg.manifest}: a split is left with too few clips ({'; '.join(short)}; "
            f"need at least {cfg.min_clips_per_split}, data.min_clips_per_split)"
        )
    if len(rejected):
        log.warning("skipped %d bad clip(s); reasons in %s", len(rejected), out_dir / "rejected.csv")
    target_cols = list(cfg.targets) if cfg.task == "regression" else [cfg.label_column]
    cols = ["path", *target_cols, "split"] + (["group"] if "group" in df.columns else [])
    with atomic_dir(out_dir) as tmp:
        df[cols].to_csv(tmp / "manifest.csv", index=False)
        rejected.to_csv(tmp / "rejected.csv", index=False)
        summary = {
            "source": str(Path(cfg.manifest)),
            "task": cfg.task,
            "clips": len(df),
            "rejected": len(rejected),
            "splits": counts,
            "targets": target_cols,
            "classes": classes,
        }
        if pool is not None:
            summary.update(unlabeled_source=" + ".join(sources), unlabeled=len(pool))
            if len(pool):
                pool.to_csv(tmp / UNLABELED_FILE, index=False)
        write_json(tmp / "summary.json", summary)
    log.info("prepared %d clips from %s: %s", len(df), cfg.manifest, counts)
    if pool is not None:
        log.info("prepared %d unlabelled clips from %s", len(pool), " + ".join(sources))
        if not len(pool):
            log.warning("every clip of %s was skipped: no unlabelled clips", " + ".join(sources))
    return df


def load_prepared(prepared_dir: str | Path) -> tuple[pd.DataFrame, dict]:
    """A prepared manifest (paths made absolute) and its summary."""
    prepared_dir = Path(prepared_dir)
    df = pd.read_csv(prepared_dir / "manifest.csv", dtype={"path": str})
    df["path"] = [str(Path(p).resolve()) for p in df["path"]]
    return df, read_json(prepared_dir / "summary.json")
