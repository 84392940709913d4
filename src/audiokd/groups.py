"""Test quality per group (the manifest's ``group`` column, e.g. the speaker): which groups a model misses.

A speaker-independent split puts whole speakers in the test split, and one unseen speaker can be enough to
separate a teacher from a student. Over all test clips CCC mixes two things: how well a model follows the
target within each speaker, and whether it is off by a constant for some speaker (a bias, e.g. a speaker's
base pitch it never heard). Per group the table gives both: the group's own CCC (or accuracy) and, for
regression, the mean signed error ``mean(predicted - true)`` and the mean absolute error per target, in the
target's units. evaluate writes it to ``reports/plots/groups.csv`` and shows the worst groups in the report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from audiokd.tasks import Task

SHOWN = 20  # groups in the report's table (the student's worst first); all of them are in the CSV


def split_groups(features_dir: str | Path, split: str = "test") -> np.ndarray | None:
    """The group of every clip of ``split``, in array order; None without a group column or with one group."""
    table = pd.read_csv(Path(features_dir) / split / "clips.csv")
    if "group" not in table.columns:
        return None
    groups = table["group"].astype(str).to_numpy()
    return groups if len(np.unique(groups)) > 1 else None


def group_table(
    preds: dict[str, np.ndarray], y_true: np.ndarray, groups: np.ndarray, task: Task
) -> pd.DataFrame:
    """One row per (model, group): ``clips``, the task's quality on the group's clips and, for regression,
    ``bias_<target>`` and ``mae_<target>`` (predictions and targets in the targets' units)."""
    rows = []
    for g in sorted(np.unique(groups)):
        mask = groups == g
        for model, pred in preds.items():
            row: dict[str, object] = {"model": model, "group": g, "clips": int(mask.sum())}
            for key, value in task.flat_quality(pred[mask], y_true[mask]).items():
                row[key] = value
            if task.kind == "regression":
                err = pred[mask] - y_true[mask]
                for k, name in enumerate(task.names):
                    row[f"bias_{name}"] = float(err[:, k].mean())
                    row[f"mae_{name}"] = float(np.abs(err[:, k]).mean())
            rows.append(row)
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame, key: str, label: str, names: dict[str, str]) -> list[str]:
    """The report's section: a row per group (the student's worst ``key`` first, at most :data:`SHOWN`),
    a column per model with its ``key`` and, for regression, its bias per target."""
    if table.empty:
        return []
    models = list(dict.fromkeys(table["model"]))
    by = table.set_index(["group", "model"])
    order = (
        table[table["model"] == "student"].sort_values(key)["group"].tolist()
        if "student" in models
        else sorted(set(table["group"]))
    )
    bias_cols = [c for c in table.columns if c.startswith("bias_")]
    what = f"Each group's own {label}"
    if bias_cols:
        what += " and the mean signed error (predicted - true) per target, in the target's units"
    shown = f"the {SHOWN} where the student does worst here" if len(order) > SHOWN else "worst first"
    lines = [
        "",
        "### Test clips by group",
        "",
        f"{what}: a model can follow the target within a group and still be off by a constant for it "
        f"({shown}; every group in `reports/plots/groups.csv`).",
        "",
        "| group | clips | " + " | ".join(names.get(m, m) for m in models) + " |",
        "|---|---:|" + "---|" * len(models),
    ]
    for g in order[:SHOWN]:
        cells = []
        for m in models:
            r = by.loc[(g, m)]
            bias = ", ".join(f"{c[5:]} {r[c]:+.3g}" for c in bias_cols)
            cells.append(f"{r[key]:.4f}" + (f" (bias {bias})" if bias else ""))
        lines.append(f"| {g} | {int(by.loc[(g, models[0]), 'clips'])} | " + " | ".join(cells) + " |")
    return lines
