"""The evaluation report: real figures from real data frames, the table and the KD verdict, the summary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from audiokd.evaluation import summary
from audiokd.report import render_markdown, write_report

TARGETS = ["arousal", "valence"]


def _model(ccc: float, params: int, latency: float) -> dict:
    return {
        "ccc_mean": ccc,
        "ccc": {"arousal": ccc + 0.01, "valence": ccc - 0.01},
        "params": params,
        "size_mb": params * 4 / 2**20,
        "latency_ms": latency,
    }


def _metrics(no_kd: float | None) -> dict:
    m = {"teacher": _model(0.9, 14_000_000, 18.0), "student": _model(0.85, 950_000, 6.0)}
    m.update(retention=0.85 / 0.9, compression=14_000_000 / 950_000, speedup=3.0)
    if no_kd is not None:
        m["student_no_kd"] = _model(no_kd, 950_000, 6.0)
        m["kd_gain"] = 0.85 - no_kd
    return m


def _history(kd: bool) -> pd.DataFrame:
    e = np.arange(1, 6)
    soft = 0.5 / e if kd else np.zeros(5)
    return pd.DataFrame(
        {
            "epoch": e,
            "train_hard_loss": 1 / e,
            "train_soft_loss": soft,
            "train_total_loss": 0.5 / e + 0.5 * soft,
            "val_loss": 1.2 / e,
            "val_ccc_mean": 1 - 1 / e,
        }
    )


def test_write_report_draws_every_figure_and_links_it(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.uniform(-1, 1, size=(40, 2))
    preds = {
        m: y + rng.normal(0, s, y.shape)
        for m, s in (("teacher", 0.1), ("student", 0.2), ("student_no_kd", 0.3))
    }
    histories = {"teacher": _history(False), "student": _history(True), "student_no_kd": _history(False)}
    metrics = _metrics(no_kd=0.80)
    figures = write_report(
        metrics, TARGETS, histories, preds, y, tmp_path / "report.md", tmp_path / "figures", "`m` version 3"
    )
    assert [f.name for f in figures] == ["losses.png", "val_ccc.png", "scatter.png"]
    text = (tmp_path / "report.md").read_text()
    for f in figures:
        assert f"](figures/{f.name})" in text
        pixels = imread(f)[..., :3]
        assert pixels.std() > 0.05, f"{f.name} looks blank"
    # the scatter grid: a row per target, a column per model
    h, w = imread(tmp_path / "figures" / "scatter.png").shape[:2]
    assert w > h and w > 3 * 300
    assert "Registered in MLflow as `m` version 3." in text


def test_table_lists_every_model_and_the_ratios():
    text = render_markdown(_metrics(no_kd=0.80), TARGETS, {})
    assert "| | teacher | student (KD) | student without KD |" in text
    assert "| CCC arousal | 0.9100 | 0.8600 | 0.8100 |" in text
    assert "| **CCC mean** | **0.9000** | **0.8500** | **0.8000** |" in text
    assert "| parameters | 14,000,000 | 950,000 | 950,000 |" in text
    assert "| speedup vs teacher | 1.00x | 3.00x | 3.00x |" in text
    assert "| compression vs teacher | 1.0x | 14.7x | 14.7x |" in text
    assert "**KD gain +0.0500 CCC**" in text


@pytest.mark.parametrize(
    ("no_kd", "expected"),
    [
        (0.80, "the distilled student beats the same student"),
        (0.90, "**KD gain -0.0500 CCC: distillation did not help here.**"),
        (None, "No no-KD baseline in this run"),
    ],
)
def test_verdict_says_whether_kd_helped(no_kd, expected):
    text = render_markdown(_metrics(no_kd), TARGETS, {})
    assert expected in text
    assert ("student without KD" in text) == (no_kd is not None)


def test_summary_shows_the_no_kd_student_and_the_gain():
    with_baseline = summary(_metrics(no_kd=0.90)).splitlines()
    assert with_baseline[3].startswith("student no-KD") and "0.9000" in with_baseline[3]
    assert with_baseline[-1].startswith("KD gain -0.0500 CCC") and "does not help" in with_baseline[-1]
    # without kd_gain_ci95 (a metrics.json from before the bootstrap) the sign alone speaks
    without = summary(_metrics(no_kd=None))
    assert "no-KD" not in without and "KD gain" not in without


@pytest.mark.parametrize(
    ("ci", "verdict"),
    [
        ((0.01, 0.09), "KD helps"),
        ((-0.09, -0.01), "KD hurts"),
        ((-0.02, 0.11), "cannot tell on this test set"),
    ],
)
def test_report_and_summary_read_the_verdict_from_the_interval(ci, verdict):
    m = {**_metrics(no_kd=0.80), "kd_gain_ci95": list(ci)}  # the gain is +0.05 in every case
    text = render_markdown(m, TARGETS, {})
    assert f"**KD gain +0.0500 CCC, 95% CI [{ci[0]:+.4f}, {ci[1]:+.4f}]: {verdict}.**" in text
    line = [x for x in summary(m).splitlines() if x.startswith("KD gain")][0]
    assert line.endswith(f"(95% CI [{ci[0]:+.4f}, {ci[1]:+.4f}]: {verdict})")


def test_report_and_summary_say_what_each_student_trained_on():
    m = _metrics(no_kd=0.80)
    m["budget"] = {
        "student": {"labelled_clips": 150, "unlabeled_clips": 550, "epochs": 30, "passes": 1, "steps": 660},
        "student_no_kd": {
            "labelled_clips": 150,
            "unlabeled_clips": 0,
            "epochs": 30,
            "passes": 5,
            "steps": 720,
        },
    }
    expected = (
        "Training: student (KD) 150 labelled + 550 unlabelled clips, 30 epochs, 660 steps; "
        "student without KD 150 labelled clips, 30 epochs of 5 passes, 720 steps."
    )
    assert expected in render_markdown(m, TARGETS, {}).splitlines()
    assert summary(m).splitlines()[-1] == expected
