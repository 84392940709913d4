"""Multi-process training: the stage relaunches itself under torch.distributed.run (gloo on the CPU)."""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slow


def _distill(pipeline, tmp_path, name: str, nproc: int, student: dict):
    """Run the distill stage script on the pipeline's features and teacher with its own store."""
    params = yaml.safe_load((pipeline.repo / "params.yaml").read_text())
    params["student"].update(student)
    params["runtime"].update(nproc_per_node=nproc, num_threads=1)
    params["distill"]["epochs"] = 3
    params_file = tmp_path / f"{name}.yaml"
    params_file.write_text(yaml.safe_dump(params))
    store = f"sqlite:///{tmp_path / name}.db"
    out = tmp_path / name
    env = {"MLFLOW_TRACKING_URI": store, "AUDIOKD_CHECKPOINT_DIR": str(tmp_path / f"{name}-ckpt")}
    proc = pipeline.sh(
        "python",
        "stages/distill.py",
        "--params",
        str(params_file),
        "--features",
        "data/features",
        "--teacher",
        "models/teacher",
        "--out",
        str(out),
        env=env,
    )
    log = proc.stdout + proc.stderr
    if nproc > 1:
        assert f"distributed: {nproc} processes (gloo)" in log
        assert "torch.distributed.run" in log
    client = mlflow.MlflowClient(tracking_uri=store)
    exp = client.get_experiment_by_name("audiokd-e2e")
    runs = client.search_runs([exp.experiment_id])
    meta = json.loads((out / "meta.json").read_text())
    return meta, pd.read_csv(out / "history.csv"), runs, client


def test_two_processes_match_one_process_with_the_same_global_batch(pipeline, tmp_path):
    # a ViT student has no batch norm, so 2 x 4 clips per step is the same mathematics as 1 x 8 clips
    vit = {"arch": "vit", "vit_hidden_size": 32, "vit_layers": 2, "vit_intermediate_size": 64}
    one, hist1, runs1, client1 = _distill(pipeline, tmp_path, "one", 1, vit)
    two, hist2, runs2, client2 = _distill(pipeline, tmp_path, "two", 2, vit)
    assert len(runs1) == 1 and len(runs2) == 1  # one MLflow run, never one per rank
    run = runs2[0]
    assert run.info.status == "FINISHED" and run.data.params["runtime.nproc_per_node"] == "2"
    assert two["best_epoch"] == one["best_epoch"]
    for col in ("train_total_loss", "val_loss", "val_ccc_mean"):
        assert hist2[col].to_numpy() == pytest.approx(hist1[col].to_numpy(), abs=1e-5), col
    # logged per step: the global batch's mean loss, as many steps as one process makes
    steps1 = [m.value for m in client1.get_metric_history(runs1[0].info.run_id, "train/total_loss")]
    steps2 = [m.value for m in client2.get_metric_history(run.info.run_id, "train/total_loss")]
    assert len(steps2) == len(steps1) > 0
    assert steps2 == pytest.approx(steps1, abs=1e-5)
    assert (tmp_path / "two" / "model.onnx").is_file()


def test_two_processes_train_the_default_student_family(pipeline, tmp_path):
    meta, hist, runs, _ = _distill(pipeline, tmp_path, "mvit", 2, {})
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert len(hist) == 3 and hist["train_total_loss"].notna().all()
    assert meta["params"] > 0 and (tmp_path / "mvit" / "model.safetensors").is_file()
