"""Scoring a teacher folder of any kind on the test split, for the evaluate stage and its report.

``metrics.json`` keeps ``teacher`` = what the student learned from: one model, or an ensemble or fold teachers
as a whole (their combined test outputs), or a file of outputs; ``teacher_members`` adds each member (or fold
teacher) scored alone. Parameters, size and latency of several models are their sums (they run one after
another); for a file of outputs they are unknown (None, null in JSON), and so are compression and speedup.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audiokd.data.features import FeatureSet
from audiokd.distill import teacher_cache
from audiokd.models.teacher import load_teacher
from audiokd.teaching.folder import describe, kind, parts, runs_live

# (model, its folder) -> (report: quality, params, size_mb, latency_ms; test predictions, target units)
ScoreModel = Callable[[torch.nn.Module, Path], tuple[dict[str, Any], np.ndarray]]
SIZES = ("params", "size_mb", "latency_ms")


def teacher_report(
    folder: Path, fs: FeatureSet, y_true: np.ndarray, score: ScoreModel
) -> tuple[dict[str, Any], np.ndarray | None, dict[str, dict[str, Any]]]:
    """A teacher folder's report, its test predictions (None when unknown) and its parts' reports.

    One model is scored by ``score`` like the students. Several (ensemble members, fold teachers) are scored
    by the cached test outputs the student's teacher is made of, sizes summed over the models. A file of
    outputs has no model: quality from its test rows when it has them, sizes None.
    """
    if runs_live(folder):
        report, pred = score(load_teacher(folder), folder)
        return report, pred, {}
    members = {name: teacher_report(sub, fs, y_true, score)[0] for name, sub in parts(folder).items()}
    pred = None
    if "test" in teacher_cache.splits(folder):
        cached = teacher_cache.load(folder, fs.root, fs.meta, ("test",))["test"]
        pred = fs.denormalise_targets(cached.numpy())
    if pred is not None:
        quality: dict[str, Any] = fs.task.quality(pred, y_true)
    else:
        keys = ("ccc_mean", "ccc") if fs.task.kind == "regression" else ("accuracy", "macro_f1")
        quality = dict.fromkeys(keys)
    sizes: dict[str, Any] = dict.fromkeys(SIZES)
    if members:
        sizes = {k: round(sum(m[k] for m in members.values()), 4) for k in SIZES}
        sizes["params"] = int(sizes["params"])
    return {**quality, **sizes}, pred, members


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``; None when either is unknown (a teacher read from a file), NaN when ``b`` is 0."""
    if a is None or b is None:
        return None
    return a / b if b else float("nan")


def teacher_note(folder: Path, metrics: dict[str, Any]) -> str | None:
    """What the report says about a teacher that is not one trained model (None for one model)."""
    k = kind(folder)
    if k == "single":
        return None
    note = f"The teacher is {describe(folder)}."
    if k in ("ensemble", "folds"):
        note += " Its parameters, size and latency are the sums over its models (run one after another)."
    if k == "outputs":
        note += " Its size and latency are unknown: compression and speedup are left out (null)."
    primary = "ccc_mean" if "ccc_mean" in metrics["student"] else "accuracy"
    if metrics["teacher"][primary] is None:
        note += " Its test quality is unknown: the outputs do not cover the whole test split."
    return note
