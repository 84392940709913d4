"""Real data and augmentation through DVC experiments, on a repo copy of their own (they edit params)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from e2e_helpers import DVC, make_repo, ran, restore, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A repo copy after one `dvc repro`, committed, as a user would have it before `dvc exp run`."""
    path = make_repo(tmp_path_factory.mktemp("data-repo"))
    run([DVC, "repro"], path)
    run(["git", "add", "-A"], path)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "repro"], path)
    return path


@pytest.fixture(autouse=True)
def restored(repo) -> Iterator[None]:
    """Each test starts from the committed default run, whatever the test before it ran."""
    yield
    restore(repo)


def test_augmentation_runs_the_teacher_live(repo):
    proc = run([DVC, "exp", "run", "-S", "augment.freq_mask=4", "-S", "augment.mixup_alpha=0.4"], repo)
    assert ran(proc.stdout) == ["train_teacher", "distill", "baseline", "evaluate"]
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("audiokd-e2e")
    runs = client.search_runs(
        [exp.experiment_id], "params.`augment.mixup_alpha` = '0.4' and tags.stage = 'distill'"
    )
    assert len(runs) == 1 and runs[0].data.tags["kd.teacher"] == "live"


def test_teacher_only_augmentation_keeps_the_cache(repo):
    """augment.students false: the teacher trains augmented, distill reads its cached outputs."""
    proc = run([DVC, "exp", "run", "-S", "augment.freq_mask=4", "-S", "augment.students=false"], repo)
    assert ran(proc.stdout) == ["train_teacher", "distill", "baseline", "evaluate"]
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("audiokd-e2e")
    runs = client.search_runs([exp.experiment_id], "params.`augment.students` = 'False'")
    stages = {r.data.tags["stage"]: r for r in runs}
    assert set(stages) >= {"train_teacher", "distill", "baseline"}
    assert stages["distill"].data.tags["kd.teacher"] == "cached"


def test_classification_manifest_outside_the_repo(repo, tmp_path):
    """A user's own CSV (string labels, audio beside it) through `dvc exp run -S data.manifest=...`."""
    embedded = pd.read_csv(repo / "data" / "embedded" / "manifest.csv")
    embedded = embedded[embedded["split"] != "unlabeled"]  # the labelled clips (split blank here)
    data_dir = tmp_path / "my-data"
    data_dir.mkdir()
    for p in embedded["path"]:
        (data_dir / Path(p).name).write_bytes((repo / "data" / "embedded" / p).read_bytes())
    moods = ["excited" if a > 0 else "calm" for a in embedded["arousal"]]
    pd.DataFrame({"path": [Path(p).name for p in embedded["path"]], "mood": moods}).to_csv(
        data_dir / "labels.csv", index=False
    )
    args = [
        "-S",
        f"data.manifest={data_dir / 'labels.csv'}",
        "-S",
        "data.unlabeled_manifest=",  # none beside this manifest: an empty value turns the pool off
        "-S",
        "data.task=classification",
        "-S",
        "data.label_column=mood",
    ]
    proc = run([DVC, "exp", "run", *args], repo)
    assert ran(proc.stdout) == ["prepare", "preprocess", "train_teacher", "distill", "baseline", "evaluate"]
    m = json.loads((repo / "reports" / "metrics.json").read_text())
    for model in ("teacher", "student", "student_no_kd"):
        assert set(m[model]) == {"accuracy", "macro_f1", "params", "size_mb", "latency_ms"}
        assert 0 <= m[model]["accuracy"] <= 1
    assert m["retention"] == pytest.approx(m["student"]["accuracy"] / m["teacher"]["accuracy"])
    assert m["kd_gain"] == pytest.approx(m["student"]["accuracy"] - m["student_no_kd"]["accuracy"])
    assert json.loads((repo / "models" / "student" / "labels.json").read_text()) == {
        "labels": ["calm", "excited"]
    }
    assert json.loads((repo / "models" / "student" / "config.json").read_text())["id2label"] == {
        "0": "calm",
        "1": "excited",
    }
    assert "accuracy" in (repo / "reports" / "report.md").read_text()
    # new audio in the manifest's folder reruns prepare
    (data_dir / "extra.wav").write_bytes((data_dir / Path(embedded["path"][0]).name).read_bytes())
    status = run([DVC, "status", "prepare"], repo)
    assert "modified" in status.stdout and "labels.csv/.." in status.stdout
