"""Test quality per group: each model's own quality and bias on each group of test clips, and the report."""

from __future__ import annotations

import numpy as np
import pytest

from audiokd.groups import SHOWN, group_table, markdown, split_groups
from audiokd.report import MODELS, render_markdown
from audiokd.tasks import Task
from teacher_helpers import make_features

REG = Task("regression", ("rate", "pitch"))


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.uniform(0, 100, (40, 2))
    groups = np.array(["a"] * 20 + ["b"] * 20)
    return y, groups


def test_a_constant_offset_on_one_group_shows_as_its_bias_and_lowers_only_its_ccc():
    y, groups = _data()
    shifted = y.copy()
    shifted[groups == "b", 1] += 30.0  # pitch 30 too high on group b only
    table = group_table({"student": shifted, "student_no_kd": y}, y, groups, REG)
    row = table.set_index(["model", "group"])
    assert row.loc[("student", "b"), "bias_pitch"] == pytest.approx(30.0)
    assert row.loc[("student", "b"), "mae_pitch"] == pytest.approx(30.0)
    assert row.loc[("student", "a"), "bias_pitch"] == pytest.approx(0.0)
    assert row.loc[("student", "b"), "bias_rate"] == pytest.approx(0.0)
    assert row.loc[("student", "b"), "ccc_pitch"] < 0.8  # the offset costs CCC within the group
    assert row.loc[("student", "a"), "ccc_mean"] == pytest.approx(1.0)
    assert row.loc[("student_no_kd", "b"), "ccc_mean"] == pytest.approx(1.0)
    assert set(table["clips"]) == {20}


def test_classification_groups_get_their_own_accuracy():
    task = Task("classification", ("x", "y", "z"))
    y = np.array([0, 1, 2, 0, 1, 2])
    logits = np.eye(3)[[0, 1, 2, 1, 2, 0]]  # right on group a, wrong on group b
    groups = np.array(["a", "a", "a", "b", "b", "b"])
    table = group_table({"student": logits}, y, groups, task).set_index("group")
    assert table.loc["a", "accuracy"] == 1.0
    assert table.loc["b", "accuracy"] == 0.0
    assert "bias_x" not in table.columns


def test_split_groups_reads_the_test_clips_groups_in_array_order(tmp_path):
    grouped = make_features(tmp_path / "g", groups=3)
    groups = split_groups(grouped)
    assert groups is not None
    assert list(groups[:4]) == ["g0", "g1", "g2", "g0"]
    assert split_groups(make_features(tmp_path / "none")) is None
    assert split_groups(make_features(tmp_path / "one", groups=1)) is None  # one group: nothing to compare


def test_the_report_lists_the_students_worst_group_first_with_each_models_bias():
    y, groups = _data()
    bad = y.copy()
    bad[groups == "a", 0] -= 30.0
    table = group_table({"teacher": y, "student": bad}, y, groups, REG)
    lines = markdown(table, "ccc_mean", "CCC", MODELS)
    rows = [ln for ln in lines if ln.startswith("| a ") or ln.startswith("| b ")]
    assert [r.split()[1] for r in rows] == ["a", "b"]  # a is the student's worse group
    assert "rate -30" in rows[0]
    assert "| teacher | student (KD) |" in "\n".join(lines)
    metrics = {
        "teacher": {
            "ccc_mean": 0.9,
            "ccc": {"rate": 0.9, "pitch": 0.9},
            "params": 10,
            "size_mb": 1.0,
            "latency_ms": 1.0,
        },
        "student": {
            "ccc_mean": 0.8,
            "ccc": {"rate": 0.8, "pitch": 0.8},
            "params": 5,
            "size_mb": 0.5,
            "latency_ms": 0.5,
        },
        "retention": 0.8 / 0.9,
        "compression": 2.0,
        "speedup": 2.0,
    }
    text = render_markdown(metrics, ["rate", "pitch"], {}, by_group=table)
    assert "### Test clips by group" in text
    assert "### Test clips by group" not in render_markdown(metrics, ["rate", "pitch"], {})


def test_the_report_shows_at_most_the_worst_groups():
    rng = np.random.default_rng(1)
    n = SHOWN + 5
    groups = np.repeat([f"s{i:02d}" for i in range(n)], 4)
    y = rng.uniform(0, 1, (len(groups), 2))
    pred = y + rng.normal(0, 0.1, y.shape) * np.repeat(np.arange(n), 4)[:, None] / n
    table = group_table({"student": pred}, y, groups, REG)
    rows = [ln for ln in markdown(table, "ccc_mean", "CCC", MODELS) if ln.startswith("| s")]
    assert len(rows) == SHOWN
    worst = table.sort_values("ccc_mean")["group"].iloc[0]
    assert rows[0].startswith(f"| {worst} ")
