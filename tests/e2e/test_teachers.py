"""Teacher sources through the real pipeline: an ensemble of two members and a CSV of outputs (BYO).

Each runs as `dvc exp run -S ...` in the session's pipeline workspace, is checked, and the workspace is put
back to the committed default run (git and DVC checkout) for whatever runs after.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow

SPLITS = ("train", "val", "test")


def _ran(output: str) -> list[str]:
    """Stages DVC ran, foreach members included (``teacher_member@a``)."""
    return re.findall(r"Running stage '([\w@-]+)'", output)


def test_an_ensemble_of_two_members_each_in_its_own_stage(pipeline):
    repo = pipeline.repo
    with pipeline.restored():
        proc = pipeline.sh("dvc", "exp", "run", "-S", "++ensemble.members={a: {seed: 1}, b: {seed: 2}}")
        ran = _ran(proc.stdout)
        assert ran == ["teacher_member@a", "teacher_member@b", "train_teacher", "distill", "evaluate"], ran

        # the cache distill read is exactly the members' mean
        caches = {
            m: {s: np.load(repo / f"models/{m}/predictions/{s}.npy") for s in SPLITS}
            for m in ("teacher", "teacher_members/a", "teacher_members/b")
        }
        for s in SPLITS:
            a, b = caches["teacher_members/a"][s], caches["teacher_members/b"][s]
            assert not np.array_equal(a, b)
            assert np.array_equal(caches["teacher"][s], (a + b) / 2), s

        m = json.loads((repo / "reports" / "metrics.json").read_text())
        assert set(m["teacher_members"]) == {"a", "b"}
        members = m["teacher_members"]
        assert m["teacher"]["params"] == members["a"]["params"] + members["b"]["params"]
        assert m["compression"] == pytest.approx(m["teacher"]["params"] / m["student"]["params"])
        report = (repo / "reports" / "report.md").read_text()
        assert "### The teacher's members, each alone" in report
        assert f"| a | {members['a']['ccc_mean']:.4f} |" in report
        assert "The teacher is an ensemble of 2 teachers (a, b)" in report
        assert "teacher a" in pipeline.sh("audiokd", "summary").stdout
        plots = repo / "reports" / "plots"  # dvc.yaml's teacher plots: the members' epoch-wise mean
        hist = {n: pd.read_csv(plots / f"{n}_history.csv") for n in ("teacher", "teacher_a", "teacher_b")}
        mean = (hist["teacher_a"]["val_loss"] + hist["teacher_b"]["val_loss"]) / 2
        assert np.allclose(hist["teacher"]["val_loss"], mean)

        runs = {r.data.tags["teacher.member"]: r for r in pipeline.runs("tags.stage = 'teacher_member'")}
        assert set(runs) == {"a", "b"} and all(r.info.status == "FINISHED" for r in runs.values())
        distill = pipeline.runs("tags.stage = 'distill'")[0]  # the newest first
        assert distill.data.tags["teacher_run_ids"] == f"{runs['a'].info.run_id},{runs['b'].info.run_id}"

        # one member's params changed: only that member (and what follows) is stale
        params = (repo / "params.yaml").read_text()
        (repo / "params.yaml").write_text(params.replace("b: {seed: 2}", "b: {seed: 3}"))
        status = pipeline.sh("dvc", "status").stdout
        assert "teacher_member@b:" in status and "teacher_member@a:" not in status


def test_a_csv_of_teacher_outputs_replaces_the_teacher(pipeline, tmp_path):
    repo = pipeline.repo
    features = repo / "data" / "features"
    rows = []
    for split in SPLITS:  # an "oracle" teacher: the labels themselves, paths relative to the CSV's folder
        clips = pd.read_csv(features / split / "clips.csv")
        clips["path"] = [os.path.relpath(p, tmp_path) for p in clips["path"]]
        rows.append(clips[["path", "arousal", "valence"]])
    pool = pd.read_csv(
        features / "unlabeled" / "clips.csv"
    )  # the tiny set's 16 unlabelled clips need rows too
    pool = pd.DataFrame({"path": [os.path.relpath(p, tmp_path) for p in pool["path"]], "arousal": 0.5})
    rows.append(pool.assign(valence=-0.5))
    csv = tmp_path / "outputs.csv"
    pd.concat(rows).to_csv(csv, index=False)
    with pipeline.restored():
        proc = pipeline.sh("dvc", "exp", "run", "-S", f"++teacher.outputs={csv}")  # not in the tiny params
        assert _ran(proc.stdout) == ["train_teacher", "distill", "evaluate"]

        stats = json.loads((features / "stats.json").read_text())
        raw = pd.read_csv(features / "train" / "clips.csv")[["arousal", "valence"]].to_numpy(np.float32)
        mean, std = (np.asarray(stats[k], np.float32) for k in ("target_mean", "target_std"))
        want = (raw - mean) / std
        cached = np.load(repo / "models" / "teacher" / "predictions" / "train.npy")
        assert np.allclose(cached, want, atol=1e-6)  # what the student learned from: the file, standardised
        on_pool = np.load(repo / "models" / "teacher" / "predictions" / "unlabeled.npy")
        assert on_pool.shape == (16, 2) and np.allclose(
            on_pool, (np.array([0.5, -0.5]) - mean) / std, atol=1e-6
        )

        m = json.loads((repo / "reports" / "metrics.json").read_text())
        assert m["teacher"]["ccc_mean"] > 0.9999  # scored from the file's test rows
        assert m["teacher"]["params"] is None and m["teacher"]["latency_ms"] is None
        assert m["compression"] is None and m["speedup"] is None and "kd_gain" in m
        assert "teacher_members" not in m
        report = (repo / "reports" / "report.md").read_text()
        assert "| parameters | unknown |" in report and "The teacher is outputs read from a file" in report
        assert "compression and speedup are left out" in report
        summary = pipeline.sh("audiokd", "summary").stdout
        assert "unknown" in summary and "compression" not in summary
        distill = pipeline.runs("tags.stage = 'distill'")[0]
        assert distill.data.tags["kd.teacher"] == "cached" and "teacher_run_id" not in distill.data.tags
