"""The unlabelled pool: clips without targets, labelled by the teacher for distillation.

``data.unlabeled_manifest`` names a CSV with a ``path`` column (other columns are ignored), given relative to
the folder of ``data.manifest`` (its clip paths are relative to its own folder, or absolute). Its clips are
checked like the labelled ones (missing, unreadable, empty, silent, duplicate: refused or, with
``data.on_bad_clip: skip``, dropped into ``rejected.csv``). Why relative to the labelled manifest's folder:
DVC watches the labelled manifest's folder and ``${data.manifest}/../${data.unlabeled_manifest}``, which
stays a valid path when the key is empty, where ``${data.unlabeled_manifest}/..`` would be ``/..``, the
root of the file system.

The prepare stage writes the usable clips to ``unlabeled.csv`` beside the prepared manifest, and
preprocess makes them a split of their own (``unlabeled``) with the train split's statistics.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from audiokd.config import DataConfig
from audiokd.data.clips import lines, path_problems, portable, read_csv_manifest, rejected_rows, resolve_paths

UNLABELED = "unlabeled"  # the split name of the pool in the features folder and the teacher cache
UNLABELED_FILE = "unlabeled.csv"  # the pool's prepared list (repo-relative paths) in the prepared folder


def unlabeled_path(cfg: DataConfig) -> Path | None:
    """``data.unlabeled_manifest`` resolved against the folder of ``data.manifest``; None when it is ""."""
    return Path(cfg.manifest).parent / cfg.unlabeled_manifest if cfg.unlabeled_manifest else None


def read_unlabeled(cfg: DataConfig, labelled: set[str]) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Validate the unlabelled manifest (a ``path`` column; other columns are ignored) with the labelled
    manifest's file checks: (usable rows, rejected rows, problem lines naming file and row).

    A clip that the labelled manifest lists too (``labelled``: its resolved paths) is refused: the student
    would otherwise train on val or test audio through the teacher's outputs.
    """
    mpath = unlabeled_path(cfg)
    assert mpath is not None
    df = read_csv_manifest(mpath, [], "data.unlabeled_manifest", "data.unlabeled_manifest")
    resolved = resolve_paths(df, mpath)
    problems = path_problems(df, resolved)
    for i, path in enumerate(resolved):
        if path and path in labelled:
            problems[i].append("also listed in the labelled manifest (data.manifest)")
    problems = {i: p for i, p in problems.items() if p}
    good = pd.DataFrame({"path": [portable(Path(p)) for i, p in enumerate(resolved) if i not in problems]})
    return good, rejected_rows(df, problems, mpath), lines(df, problems, mpath)
