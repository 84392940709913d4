"""Evaluate's view of teachers that are not one model: unknown sizes and quality are said, never crash."""

from __future__ import annotations

import numpy as np
import pandas as pd

from audiokd.config import TeacherConfig
from audiokd.data.features import FeatureSet, clips_table
from audiokd.evaluation import summary
from audiokd.report import render_markdown
from audiokd.teaching.outputs import import_outputs
from audiokd.teaching.scores import ratio, teacher_note, teacher_report
from teacher_helpers import TARGETS, data_config, make_features


def _unused(model, folder):  # a file of outputs has no model to score
    raise AssertionError("no model should be scored")


def _byo(workdir, with_test: bool):
    features = make_features(workdir / "features")
    splits = ("train", "val", "test") if with_test else ("train", "val")
    rows = [clips_table(features, s)[["path", *TARGETS]] for s in splits]
    csv = workdir / "outputs.csv"
    pd.concat(rows).to_csv(csv, index=False)
    out = workdir / "teacher"
    import_outputs(data_config(), TeacherConfig(outputs=str(csv)), features, out)
    fs = FeatureSet.load(features)
    return out, fs


def test_a_file_with_test_rows_is_scored_sizes_unknown(workdir):
    out, fs = _byo(workdir, with_test=True)
    report, pred, members = teacher_report(out, fs, fs.raw_targets("test"), _unused)
    assert report["ccc_mean"] > 0.9999 and members == {}  # the labels themselves, round-tripped
    assert np.allclose(pred, fs.raw_targets("test"), atol=1e-5)
    assert report["params"] is None and report["size_mb"] is None and report["latency_ms"] is None


def test_a_file_without_test_rows_leaves_quality_unknown_and_the_report_says_so(workdir):
    out, fs = _byo(workdir, with_test=False)
    teacher, pred, _ = teacher_report(out, fs, fs.raw_targets("test"), _unused)
    assert pred is None and teacher["ccc_mean"] is None and teacher["ccc"] is None
    student = {"ccc_mean": 0.8, "ccc": {"arousal": 0.8, "valence": 0.8}, "params": 10, "size_mb": 0.1,
               "latency_ms": 2.0}  # fmt: skip
    metrics = {
        "teacher": teacher,
        "student": student,
        "retention": ratio(student["ccc_mean"], teacher["ccc_mean"]),
        "compression": ratio(teacher["params"], student["params"]),
        "speedup": ratio(teacher["latency_ms"], student["latency_ms"]),
    }
    assert metrics["retention"] is None and metrics["compression"] is None
    note = teacher_note(out, metrics)
    assert note is not None and "Its test quality is unknown" in note and "compression and speedup" in note
    text = render_markdown(metrics, list(TARGETS), {}, None, note)
    assert "| **CCC mean** | **unknown** | **0.8000** |" in text and "| parameters | unknown | 10 |" in text
    assert "| speedup vs teacher | n/a |" in text
    assert "Student: retention, compression and speedup unknown." in text
    lines = summary(metrics).splitlines()
    assert lines[1].split()[:2] == ["teacher", "unknown"]
    assert "retention, compression and speedup unknown" in lines[3]
