"""The real pipeline: `dvc repro` on a copy of the repo with tiny params, checked end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from e2e_helpers import DVC, env, make_repo, ran, run

pytestmark = pytest.mark.slow

STAGES = ["synthesize", "prepare", "preprocess", "train_teacher", "distill", "evaluate"]


def _run(cmd: list[str], repo: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    return run(cmd, repo, timeout)


def _env(repo: Path) -> dict[str, str]:
    return env()


def _ran(output: str) -> list[str]:
    return ran(output)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> tuple[Path, str]:
    """A git clone-like copy of the repo with tiny params, after one `dvc repro`."""
    repo = make_repo(tmp_path_factory.mktemp("repo"))
    proc = _run([DVC, "repro"], repo)
    return repo, proc.stdout + proc.stderr


def _declared_outputs(repo: Path) -> list[Path]:
    spec = yaml.safe_load((repo / "dvc.yaml").read_text())
    out = []
    for stage in spec["stages"].values():
        for kind in ("outs", "metrics", "plots"):
            for item in stage.get(kind, []):
                out.append(repo / (item if isinstance(item, str) else next(iter(item))))
    return out


def test_every_stage_ran_and_every_output_exists(pipeline):
    repo, output = pipeline
    assert _ran(output) == STAGES
    for path in _declared_outputs(repo):
        assert path.exists(), f"{path} missing"
    for f in ("config.json", "model.safetensors", "history.csv", "meta.json"):
        assert (repo / "models" / "teacher" / f).is_file()
        assert (repo / "models" / "student" / f).is_file()
    assert (repo / "models" / "teacher" / "predictions" / "train.npy").is_file()
    for f in (
        "teacher_history.csv",
        "student_history.csv",
        "teacher_predictions.csv",
        "student_predictions.csv",
    ):
        assert (repo / "reports" / "plots" / f).is_file()


def test_metrics_follow_the_schema(pipeline):
    repo, _ = pipeline
    m = json.loads((repo / "reports" / "metrics.json").read_text())
    assert set(m) == {"teacher", "student", "retention", "compression", "speedup"}
    for model in ("teacher", "student"):
        assert set(m[model]) == {"ccc_mean", "ccc", "params", "size_mb", "latency_ms"}
        assert set(m[model]["ccc"]) == {"arousal", "valence"}
        assert -1 <= m[model]["ccc_mean"] <= 1
        assert m[model]["params"] > 0 and m[model]["size_mb"] > 0 and m[model]["latency_ms"] > 0
    assert m["compression"] == pytest.approx(m["teacher"]["params"] / m["student"]["params"])
    assert m["speedup"] == pytest.approx(m["teacher"]["latency_ms"] / m["student"]["latency_ms"])


def test_mlflow_runs_metric_names_and_model(pipeline):
    import mlflow

    from audiokd.models.student import load_student

    repo, _ = pipeline
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("audiokd-e2e")
    assert exp is not None and exp.artifact_location.startswith((repo / "mlruns" / "artifacts").as_uri())
    runs = {r.data.tags["stage"]: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {"train_teacher", "distill"}
    teacher, student = runs["train_teacher"], runs["distill"]
    assert all(r.info.status == "FINISHED" for r in runs.values())
    assert student.data.tags["teacher_run_id"] == teacher.info.run_id
    assert student.info.run_name == "distill T=2 a=0.5 b=0 g=0 soft=kl"
    assert "git_commit" in student.data.tags
    for name in ("train/hard_loss", "train/soft_loss", "train/total_loss", "val/loss", "val/ccc_mean"):
        assert len(client.get_metric_history(student.info.run_id, name)) > 0, name
    steps = client.get_metric_history(student.info.run_id, "train/total_loss")
    assert len(steps) == 2 * 3  # 24 train clips, batch 8, 2 epochs: a point per step
    assert len(client.get_metric_history(student.info.run_id, "val/ccc_mean")) == 2
    assert student.data.params["distill.temperature"] == "2.0"
    assert "test/student_ccc_mean" in client.get_run(student.info.run_id).data.metrics

    meta = json.loads((repo / "models" / "student" / "meta.json").read_text())
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")
    logged = mlflow.pytorch.load_model(meta["model_uri"])
    saved = load_student(repo / "models" / "student")
    x = torch.from_numpy(__import__("numpy").load(repo / "data" / "features" / "test" / "x.npy"))
    with torch.no_grad():
        expected = saved(pixel_values=x).logits
        got = torch.cat([logged(x[i : i + 1]) for i in range(len(x))])
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()


def test_second_repro_is_a_no_op_and_temperature_reruns_only_distill_and_evaluate(pipeline):
    repo, _ = pipeline
    dvc = str(Path(sys.executable).parent / "dvc")
    again = _run([dvc, "repro"], repo)
    assert _ran(again.stdout) == []
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["distill"]["temperature"] = 6.0
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = _run([dvc, "repro"], repo)
    assert _ran(changed.stdout) == ["distill", "evaluate"]


def test_misspelled_key_reruns_the_stage_and_is_refused(pipeline):
    repo, _ = pipeline
    dvc = str(Path(sys.executable).parent / "dvc")
    text = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(text.replace("  alpha: 0.5", "  alpha: 0.5\n  alhpa: 0.2"))
    before = (repo / "models" / "student" / "model.safetensors").read_bytes()
    proc = subprocess.run(
        [dvc, "repro"], cwd=repo, env=_env(repo), capture_output=True, text=True, timeout=600
    )
    (repo / "params.yaml").write_text(text)
    assert proc.returncode != 0
    assert "error: distill.alhpa: unknown key" in proc.stderr + proc.stdout
    # DVC removes a stage's outputs before it runs; they come back from its cache
    _run([dvc, "checkout"], repo)
    assert (repo / "models" / "student" / "model.safetensors").read_bytes() == before


def test_feature_and_attention_terms_through_dvc_exp_run(pipeline):
    import mlflow

    repo, _ = pipeline
    dvc = str(Path(sys.executable).parent / "dvc")
    proc = _run([dvc, "exp", "run", "-S", "distill.beta=0.4", "-S", "distill.gamma=0.3"], repo)
    assert _ran(proc.stdout) == ["distill", "evaluate"]
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("audiokd-e2e")
    runs = client.search_runs([exp.experiment_id], "params.`distill.beta` = '0.4'")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["kd.teacher"] == "live" and run.data.tags.get("dvc_exp_name")
    assert "a=0.5 b=0.4 g=0.3" in run.info.run_name
    for name in ("train/feature_loss", "train/attention_loss", "train/soft_loss"):
        history = client.get_metric_history(run.info.run_id, name)
        assert len(history) == 6 and all(m.value > 0 for m in history), name


def test_augmentation_runs_the_teacher_live(pipeline):
    import mlflow

    repo, _ = pipeline
    dvc = str(Path(sys.executable).parent / "dvc")
    proc = _run([dvc, "exp", "run", "-S", "augment.freq_mask=4", "-S", "augment.mixup_alpha=0.4"], repo)
    assert _ran(proc.stdout) == ["train_teacher", "distill", "evaluate"]
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("audiokd-e2e")
    runs = client.search_runs(
        [exp.experiment_id], "params.`augment.mixup_alpha` = '0.4' and tags.stage = 'distill'"
    )
    assert len(runs) == 1 and runs[0].data.tags["kd.teacher"] == "live"


def test_classification_manifest_outside_the_repo(pipeline, tmp_path):
    """A user's own CSV (absolute audio paths, string labels) through `dvc exp run -S data.manifest=...`."""
    import pandas as pd

    repo, _ = pipeline
    embedded = pd.read_csv(repo / "data" / "embedded" / "manifest.csv")
    data_dir = tmp_path / "my-data"
    data_dir.mkdir()
    for p in embedded["path"]:
        (data_dir / Path(p).name).write_bytes((repo / "data" / "embedded" / p).read_bytes())
    manifest = pd.DataFrame(
        {
            "path": [Path(p).name for p in embedded["path"]],
            "mood": ["excited" if a > 0 else "calm" for a in embedded["arousal"]],
        }
    )
    manifest.to_csv(data_dir / "labels.csv", index=False)
    dvc = str(Path(sys.executable).parent / "dvc")
    args = [
        "-S",
        f"data.manifest={data_dir / 'labels.csv'}",
        "-S",
        "data.task=classification",
        "-S",
        "data.label_column=mood",
    ]
    proc = _run([dvc, "exp", "run", *args], repo)
    assert _ran(proc.stdout) == ["prepare", "preprocess", "train_teacher", "distill", "evaluate"]
    m = json.loads((repo / "reports" / "metrics.json").read_text())
    for model in ("teacher", "student"):
        assert set(m[model]) == {"accuracy", "macro_f1", "params", "size_mb", "latency_ms"}
        assert 0 <= m[model]["accuracy"] <= 1
    assert m["retention"] == pytest.approx(m["student"]["accuracy"] / m["teacher"]["accuracy"])
    assert json.loads((repo / "models" / "student" / "labels.json").read_text()) == {
        "labels": ["calm", "excited"]
    }
    config = json.loads((repo / "models" / "student" / "config.json").read_text())
    assert config["id2label"] == {"0": "calm", "1": "excited"}
    # new audio in the manifest's folder reruns prepare
    (data_dir / "extra.wav").write_bytes((data_dir / Path(embedded["path"][0]).name).read_bytes())
    status = _run([dvc, "status", "prepare"], repo)
    assert "modified" in status.stdout and "labels.csv/.." in status.stdout
