"""The real pipeline: `dvc repro` on a copy of the repo with tiny params, checked end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

pytestmark = pytest.mark.slow

STAGES = ["synthesize", "prepare", "preprocess", "train_teacher", "distill", "baseline", "evaluate"]
MODEL_KEYS = {"ccc_mean", "ccc", "params", "size_mb", "latency_ms"}


def _declared_outputs(repo: Path) -> list[Path]:
    spec = yaml.safe_load((repo / "dvc.yaml").read_text())
    out = []
    for stage in spec["stages"].values():
        for kind in ("outs", "metrics", "plots"):
            for item in stage.get(kind, []):
                out.append(repo / (item if isinstance(item, str) else next(iter(item))))
    return out


def test_every_stage_ran_and_every_output_exists(pipeline):
    repo = pipeline.repo
    assert pipeline.ran(pipeline.output) == STAGES
    for path in _declared_outputs(repo):
        assert path.exists(), f"{path} missing"
    for f in ("config.json", "model.safetensors", "history.csv", "meta.json"):
        for model in ("teacher", "student", "student_no_kd"):
            assert (repo / "models" / model / f).is_file(), (model, f)
    assert (repo / "models" / "teacher" / "predictions" / "train.npy").is_file()
    # the unlabelled pool: prepared, a features split, labelled by the teacher in its cache
    assert len((repo / "data" / "prepared" / "unlabeled.csv").read_text().splitlines()) == 1 + 16
    assert np.load(repo / "data" / "features" / "unlabeled" / "x.npy").shape[0] == 16
    assert np.load(repo / "models" / "teacher" / "predictions" / "unlabeled.npy").shape == (16, 2)
    assert (repo / "models" / "student" / "model.onnx").is_file()
    for f in ("model.onnx", "model.int8.onnx", "model.ts"):
        assert (repo / "models" / "student" / f).is_file(), f
    assert json.loads((repo / "models" / "student" / "meta.json").read_text())["onnx_max_abs_diff"] <= 1e-4
    for model in ("teacher", "student", "student_no_kd"):
        for kind in ("history", "predictions"):
            assert (repo / "reports" / "plots" / f"{model}_{kind}.csv").is_file()


def test_metrics_follow_the_schema(pipeline):
    m = json.loads((pipeline.repo / "reports" / "metrics.json").read_text())
    assert set(m) == {
        "teacher",
        "student",
        "student_no_kd",
        "student_int8",
        "retention",
        "compression",
        "speedup",
        "kd_gain",
        "kd_gain_ci95",
        "kd_gain_lo",
        "kd_gain_hi",
        "budget",
    }
    int8 = m["student_int8"]
    gate = {"drop", "max_drop", "deployable"}
    assert set(int8) == MODEL_KEYS | gate | {"fp32_onnx_size_mb", "fp32_onnx_latency_ms"}
    assert int8["drop"] == pytest.approx(m["student"]["ccc_mean"] - int8["ccc_mean"])
    assert int8["max_drop"] == 0.01  # the default export.int8_max_drop
    assert int8["deployable"] == (int8["drop"] <= 0.01)
    assert int8["size_mb"] < int8["fp32_onnx_size_mb"] and int8["params"] == m["student"]["params"]
    for model in ("teacher", "student", "student_no_kd"):
        assert set(m[model]) == MODEL_KEYS
        assert set(m[model]["ccc"]) == {"arousal", "valence"}
        assert -1 <= m[model]["ccc_mean"] <= 1
        assert m[model]["params"] > 0 and m[model]["size_mb"] > 0 and m[model]["latency_ms"] > 0
    assert m["compression"] == pytest.approx(m["teacher"]["params"] / m["student"]["params"])
    assert m["speedup"] == pytest.approx(m["teacher"]["latency_ms"] / m["student"]["latency_ms"])
    assert m["kd_gain"] == pytest.approx(m["student"]["ccc_mean"] - m["student_no_kd"]["ccc_mean"])
    assert m["student_no_kd"]["params"] == m["student"]["params"]  # the same student, without the teacher
    lo, hi = m["kd_gain_ci95"]
    assert -2 <= lo <= hi <= 2  # (that it brackets kd_gain is a unit test's: 8 test clips are few here)
    assert [m["kd_gain_lo"], m["kd_gain_hi"]] == [lo, hi]
    # 24 labelled + 16 unlabelled clips, batch 8: 5 steps an epoch, 2 epochs; the baseline makes 2 passes
    # over its 24 clips an epoch (48 clips, 6 steps): at least as many steps in as many epochs
    assert m["budget"] == {
        "student": {"labelled_clips": 24, "unlabeled_clips": 16, "epochs": 2, "passes": 1, "steps": 10},
        "student_no_kd": {"labelled_clips": 24, "unlabeled_clips": 0, "epochs": 2, "passes": 2, "steps": 12},
    }


def test_report_and_figures(pipeline):
    repo = pipeline.repo
    m = json.loads((repo / "reports" / "metrics.json").read_text())
    text = (repo / "reports" / "report.md").read_text()
    assert "| | teacher | student (KD) | student without KD | student int8 (ONNX Runtime) |" in text
    assert f"CCC drop {m['student_int8']['drop']:+.4f} against fp32" in text
    assert f"KD gain {m['kd_gain']:+.4f} CCC" in text
    assert f"| **CCC mean** | **{m['teacher']['ccc_mean']:.4f}** |" in text
    assert f"| parameters | {m['teacher']['params']:,} | {m['student']['params']:,} |" in text
    for png in ("losses.png", "val_ccc.png", "scatter.png"):
        assert f"](figures/{png})" in text
        data = (repo / "reports" / "figures" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, png
    lo, hi = m["kd_gain_ci95"]
    verdict = "KD helps" if lo > 0 else "KD hurts" if hi < 0 else "cannot tell on this test set"
    assert f"95% CI [{lo:+.4f}, {hi:+.4f}]: {verdict}.**" in text
    assert "Training: student (KD) 24 labelled + 16 unlabelled clips, 2 epochs, 10 steps; " in text
    assert "student without KD 24 labelled clips, 2 epochs of 2 passes, 12 steps." in text
    summary = pipeline.sh("audiokd", "summary").stdout
    assert "student no-KD" in summary and f"KD gain {m['kd_gain']:+.4f}" in summary
    assert f": {verdict})" in summary


def test_mlflow_runs_metric_names_and_model(pipeline):
    import mlflow

    from audiokd.models.student import load_student

    repo = pipeline.repo
    client = pipeline.client()
    exp = client.get_experiment_by_name("audiokd-e2e")
    assert exp is not None and exp.artifact_location.startswith((repo / "mlruns" / "artifacts").as_uri())
    runs = {r.data.tags["stage"]: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {"train_teacher", "distill", "baseline"}
    teacher, student, no_kd = runs["train_teacher"], runs["distill"], runs["baseline"]
    assert all(r.info.status == "FINISHED" for r in runs.values())
    assert student.data.tags["teacher_run_id"] == teacher.info.run_id
    assert student.info.run_name == "distill T=2 a=0.5 b=0 g=0 soft=kl"
    assert "git_commit" in student.data.tags
    for name in ("train/hard_loss", "train/soft_loss", "train/total_loss", "val/loss", "val/ccc_mean"):
        assert len(client.get_metric_history(student.info.run_id, name)) > 0, name
    steps = client.get_metric_history(student.info.run_id, "train/total_loss")
    assert len(steps) == 2 * 5  # 24 train + 16 unlabelled clips, batch 8, 2 epochs: a point per step
    assert (
        student.data.params["budget.unlabeled_clips"] == "16" and student.data.tags["kd.teacher"] == "cached"
    )
    assert len(client.get_metric_history(student.info.run_id, "val/ccc_mean")) == 2
    assert student.data.params["distill.temperature"] == "2.0"
    logged = client.get_run(student.info.run_id).data.metrics
    assert {"test/student_ccc_mean", "test/kd_gain", "test/student_no_kd_ccc_mean"} <= set(logged)
    ci = json.loads((repo / "reports" / "metrics.json").read_text())["kd_gain_ci95"]
    assert [logged["test/kd_gain_lo"], logged["test/kd_gain_hi"]] == pytest.approx(ci)
    onnx = {a.path for a in client.list_artifacts(student.info.run_id, "onnx")}
    assert onnx == {"onnx/model.onnx", "onnx/model.int8.onnx"}
    artifacts = {a.path for a in client.list_artifacts(student.info.run_id, "report/figures")}
    assert artifacts == {f"report/figures/{f}" for f in ("losses.png", "val_ccc.png", "scatter.png")}

    # the no-KD baseline: same budget, no teacher, its own run
    assert no_kd.info.run_name == "baseline no-KD a=1 b=0 g=0"
    assert no_kd.data.params["distill.alpha"] == "1.0" and no_kd.data.params["distill.epochs"] == "2"
    assert no_kd.data.params["budget.steps"] == "12" and no_kd.data.params["budget.unlabeled_clips"] == "0"
    assert no_kd.data.tags["kd.teacher"] == "none" and "teacher_run_id" not in no_kd.data.tags
    assert "test/student_ccc_mean" in client.get_run(no_kd.info.run_id).data.metrics

    meta = json.loads((repo / "models" / "student" / "meta.json").read_text())
    mlflow.set_tracking_uri(pipeline.store)
    logged_model = mlflow.pytorch.load_model(meta["model_uri"])
    saved = load_student(repo / "models" / "student")
    x = torch.from_numpy(np.load(repo / "data" / "features" / "test" / "x.npy"))
    with torch.no_grad():
        expected = saved(pixel_values=x).logits
        got = torch.cat([logged_model(x[i : i + 1]) for i in range(len(x))])
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()


def test_registry_candidate_then_promote_to_champion(pipeline):
    client = pipeline.client()
    meta = json.loads((pipeline.repo / "models" / "student" / "meta.json").read_text())
    candidate = client.get_model_version_by_alias("audiokd-e2e-student", "candidate")
    assert candidate.run_id == meta["run_id"]
    int8 = json.loads((pipeline.repo / "reports" / "metrics.json").read_text())["student_int8"]
    shipped = "model.int8.onnx" if int8["deployable"] else "model.onnx"
    assert candidate.tags["deploy.file"] == f"runs:/{meta['run_id']}/onnx/{shipped}"
    proc = pipeline.sh("audiokd", "promote")
    assert f"audiokd-e2e-student version {candidate.version} is now @champion" in proc.stdout
    assert client.get_model_version_by_alias("audiokd-e2e-student", "champion").version == candidate.version
    bad = pipeline.sh("audiokd", "promote", "--version", "99", check=False)
    assert bad.returncode == 2
    assert "error: audiokd-e2e-student version 99: no such version" in bad.stderr.splitlines()


def test_predict_wav_and_flac_from_folder_and_registry(pipeline, tmp_path):
    sr = 44100
    t = np.arange(int(1.3 * sr)) / sr
    tone = (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
    sf.write(tmp_path / "a.wav", np.stack([tone, 0.5 * tone], axis=1), sr)  # stereo, 44.1 kHz
    sf.write(tmp_path / "b.flac", tone[::2], sr // 2)  # mono flac, 22.05 kHz
    files = [str(tmp_path / "a.wav"), str(tmp_path / "b.flac")]
    local = pipeline.sh("audiokd", "predict", *files).stdout.splitlines()
    assert [line.split("  ")[0] for line in local] == files
    for line in local:
        fields = dict(f.split("=") for f in line.split("  ")[1:])
        assert set(fields) == {"arousal", "valence"} and all(np.isfinite(float(v)) for v in fields.values())
    pipeline.sh("audiokd", "promote")
    registry = pipeline.sh("audiokd", "predict", "--model", "models:/audiokd-e2e-student@champion", *files)
    assert registry.stdout.splitlines() == local  # the registered model is the saved student
    for flag in ("--onnx", "--int8"):
        lines = pipeline.sh("audiokd", "predict", flag, *files).stdout.splitlines()
        assert [line.split("  ")[0] for line in lines] == files
    missing = pipeline.sh("audiokd", "predict", "missing.wav", check=False)
    assert missing.returncode == 2 and "error: missing.wav: no such file" in missing.stderr.splitlines()


def test_second_repro_is_a_no_op_and_temperature_reruns_only_distill_and_evaluate(pipeline):
    repo = pipeline.repo
    again = pipeline.sh("dvc", "repro")
    assert pipeline.ran(again.stdout) == []
    with pipeline.restored():
        params = yaml.safe_load((repo / "params.yaml").read_text())
        params["distill"]["temperature"] = 6.0
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        changed = pipeline.sh("dvc", "repro")
        assert pipeline.ran(changed.stdout) == ["distill", "evaluate"]  # the no-KD baseline is not retrained


def test_misspelled_key_reruns_the_stage_and_is_refused(pipeline):
    repo = pipeline.repo
    with pipeline.restored():
        text = (repo / "params.yaml").read_text()
        (repo / "params.yaml").write_text(text.replace("  alpha: 0.5", "  alpha: 0.5\n  alhpa: 0.2"))
        before = (repo / "models" / "student" / "model.safetensors").read_bytes()
        proc = pipeline.sh("dvc", "repro", check=False, timeout=600)
        (repo / "params.yaml").write_text(text)
        assert proc.returncode != 0
        assert "error: distill.alhpa: unknown key" in proc.stderr + proc.stdout
        # DVC removes a stage's outputs before it runs; they come back from its cache
        pipeline.sh("dvc", "checkout")
        assert (repo / "models" / "student" / "model.safetensors").read_bytes() == before


def test_feature_and_attention_terms_through_dvc_exp_run(pipeline):
    with pipeline.restored():  # `dvc exp run` leaves its params and outputs in the workspace
        proc = pipeline.sh("dvc", "exp", "run", "-S", "distill.beta=0.4", "-S", "distill.gamma=0.3")
    assert pipeline.ran(proc.stdout) == ["distill", "evaluate"]
    client = pipeline.client()
    runs = pipeline.runs("params.`distill.beta` = '0.4'")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["kd.teacher"] == "live" and run.data.tags.get("dvc_exp_name")
    assert "a=0.5 b=0.4 g=0.3" in run.info.run_name
    for name in ("train/feature_loss", "train/attention_loss", "train/soft_loss"):
        history = client.get_metric_history(run.info.run_id, name)
        assert len(history) == 10 and all(m.value > 0 for m in history), name  # 2 epochs of 5 steps


def test_baseline_disabled_writes_a_marker_and_evaluate_leaves_the_keys_out(pipeline):
    repo = pipeline.repo
    with pipeline.restored():
        text = (repo / "params.yaml").read_text()
        params = yaml.safe_load(text)
        assert params["baseline"]["enabled"] is True
        params["baseline"]["enabled"] = False
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        try:
            proc = pipeline.sh("dvc", "repro")
            assert pipeline.ran(proc.stdout) == ["baseline", "evaluate"]
            marker = json.loads((repo / "models" / "student_no_kd" / "meta.json").read_text())
            assert marker["enabled"] is False
            assert [p.name for p in (repo / "models" / "student_no_kd").iterdir()] == ["meta.json"]
            m = json.loads((repo / "reports" / "metrics.json").read_text())
            assert "student_no_kd" not in m and "kd_gain" not in m
            assert "No no-KD baseline in this run" in (repo / "reports" / "report.md").read_text()
            assert not (repo / "reports" / "plots" / "student_no_kd_history.csv").exists()
        finally:
            (repo / "params.yaml").write_text(text)
        # back on: DVC's run cache restores the trained baseline instead of training it again
        proc = pipeline.sh("dvc", "repro")
        assert "baseline" not in pipeline.ran(proc.stdout)
        assert "kd_gain" in json.loads((repo / "reports" / "metrics.json").read_text())
