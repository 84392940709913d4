"""Beyond one machine: a real MLflow tracking server over HTTP, and a DVC remote round trip."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from e2e_helpers import DVC, make_repo, ran, run

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _backend(tmp_path: Path) -> str:
    """PostgreSQL when AUDIOKD_TEST_POSTGRES_URI is set, else a sqlite file (what CI has)."""
    return os.environ.get("AUDIOKD_TEST_POSTGRES_URI") or f"sqlite:///{tmp_path / 'server.db'}"


@pytest.fixture
def server(tmp_path):
    from audiokd.server import server_command

    port = _free_port()
    cmd = server_command(_backend(tmp_path), str(tmp_path / "artifacts"), port)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if urllib.request.urlopen(f"{url}/health", timeout=2).read() == b"OK":
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not come up")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_pipeline_logs_to_a_tracking_server_over_http(server, tmp_path):
    import mlflow

    repo = make_repo(tmp_path / "repo")
    run([DVC, "repro"], repo, extra_env={"MLFLOW_TRACKING_URI": server})
    assert not (repo / "mlruns" / "mlflow.db").exists()  # nothing went to the local store
    client = mlflow.MlflowClient(tracking_uri=server)
    exp = client.get_experiment_by_name("audiokd-e2e")
    runs = {r.data.tags["stage"]: r for r in client.search_runs([exp.experiment_id])}
    assert {"train_teacher", "distill"} <= set(runs)
    assert all(r.info.status == "FINISHED" for r in runs.values())
    assert len(client.get_metric_history(runs["distill"].info.run_id, "train/total_loss")) > 0
    # the student model was uploaded through the server and loads back from it
    import json

    import torch

    meta = json.loads((repo / "models" / "student" / "meta.json").read_text())
    mlflow.set_tracking_uri(server)
    model = mlflow.pytorch.load_model(meta["model_uri"])
    assert model(torch.zeros(1, *meta["input_shape"])).shape == (1, 2)


def test_dvc_remote_round_trip_leaves_nothing_to_do(tmp_path):
    repo = make_repo(tmp_path / "a")
    run([DVC, "remote", "add", "-d", "local", str(tmp_path / "remote")], repo)
    run([DVC, "repro"], repo)
    run([DVC, "push"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "pipeline outputs"], repo)
    clone = tmp_path / "b"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    run([DVC, "pull"], clone)
    assert (clone / "models" / "student" / "model.safetensors").is_file()
    proc = run([DVC, "repro"], clone)
    assert ran(proc.stdout) == []
    assert "up to date" in proc.stdout
    status = subprocess.run(
        [DVC, "status"],
        cwd=clone,
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"},
    )
    assert "up to date" in status.stdout
