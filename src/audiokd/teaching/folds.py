"""Fold assignment for out-of-fold teacher outputs (``teacher.folds``): no group or clip in two folds."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from audiokd.config import ConfigError
from audiokd.data.features import clips_table


def assign_folds(n: int, k: int, seed: int, groups: Sequence[str] | None = None) -> np.ndarray:
    """The fold (0 .. k - 1) of each of ``n`` train clips, deterministic in ``seed``.

    Without ``groups``: a seeded permutation dealt round-robin, so fold sizes differ by at most one clip. With
    ``groups`` (e.g. speakers): whole groups, largest first (ties in seeded order), each to the fold with the
    fewest clips so far, so that no group spans two folds and a fold teacher never sees the speaker of a clip
    it predicts.
    """
    rng = np.random.default_rng(seed)
    if groups is None:
        if n < k:
            raise ConfigError(f"teacher.folds = {k} is more than the {n} train clips")
        folds = np.empty(n, dtype=np.int64)
        folds[rng.permutation(n)] = np.arange(n) % k
        return folds
    keys = np.asarray([str(g) for g in groups])
    names, counts = np.unique(keys, return_counts=True)
    if len(names) < k:
        raise ConfigError(f"teacher.folds = {k} is more than the {len(names)} groups of the train split")
    order = rng.permutation(len(names))
    order = order[np.argsort(-counts[order], kind="stable")]
    sizes = np.zeros(k, dtype=np.int64)
    fold_of: dict[str, int] = {}
    for g in order:
        f = int(np.argmin(sizes))
        fold_of[str(names[g])] = f
        sizes[f] += counts[g]
    return np.asarray([fold_of[g] for g in keys], dtype=np.int64)


def train_groups(features_dir: Path) -> list[str] | None:
    """The ``group`` of every train clip (e.g. speaker) when the features carry one, else None."""
    clips = clips_table(features_dir, "train")
    return clips["group"].astype(str).tolist() if "group" in clips.columns else None
