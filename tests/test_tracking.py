"""MLflow runs end FINISHED, FAILED or KILLED, never RUNNING; a resumed stage continues its run; a store that
cannot be reached or written is found at once, with one line."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import mlflow
import pytest

from audiokd.interrupts import install
from audiokd.tracking import MetricBuffer, TrackingError, end_stale_run, project_root, setup, stage_run


@pytest.fixture
def store(tmp_path, monkeypatch) -> mlflow.MlflowClient:
    """A fresh sqlite store; the process-wide MLflow state is put back afterwards."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    yield mlflow.MlflowClient(tracking_uri=uri)
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


def _status(client: mlflow.MlflowClient, run_id: str) -> str:
    return client.get_run(run_id).info.status


def test_an_exception_marks_the_run_failed(store):
    with pytest.raises(ValueError), stage_run("distill", "exp", "r", {"distill": {"lr": 1.0}}) as run:
        raise ValueError("corrupt features")
    assert _status(store, run.info.run_id) == "FAILED"
    assert mlflow.active_run() is None


def test_ctrl_c_marks_the_run_killed(store):
    with pytest.raises(KeyboardInterrupt), stage_run("distill", "exp", "r", {}) as run:
        raise KeyboardInterrupt("SIGTERM")
    assert _status(store, run.info.run_id) == "KILLED"


def test_sigterm_at_any_moment_of_metric_logging_leaves_every_run_killed(store):
    """A signal inside an sqlite transaction can wedge the store (a hang, seen); writes finish first."""
    old = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    install()
    rng = random.Random(0)
    run_ids = []
    try:
        for _ in range(12):
            timer = threading.Timer(rng.uniform(0.001, 0.05), os.kill, (os.getpid(), signal.SIGTERM))
            with pytest.raises(KeyboardInterrupt), stage_run("distill", "exp", "r", {"a": 1}) as run:
                run_ids.append(run.info.run_id)
                buf = MetricBuffer()
                timer.start()
                while True:
                    for step in range(200):
                        buf.add({"train/total_loss": 1.0, "train/hard_loss": 0.5}, step)
                    buf.flush()
            timer.join()
    finally:
        signal.signal(signal.SIGINT, old[0])
        signal.signal(signal.SIGTERM, old[1])
    assert [_status(store, r) for r in run_ids] == ["KILLED"] * 12


def test_a_resumed_stage_continues_the_same_run(store):
    with (
        pytest.raises(KeyboardInterrupt),
        stage_run("distill", "exp", "r", {"distill": {"lr": 1.0}}) as first,
    ):
        raise KeyboardInterrupt
    with stage_run("distill", "exp", "r", {"distill": {"lr": 1.0}}, run_id=first.info.run_id) as again:
        mlflow.log_metric("val/loss", 0.5, step=3)
    assert again.info.run_id == first.info.run_id
    run = store.get_run(first.info.run_id)
    assert run.info.status == "FINISHED" and run.data.params == {"distill.lr": "1.0"}
    assert len(store.search_runs([run.info.experiment_id])) == 1


def test_a_run_id_gone_from_the_store_starts_a_new_run(store, caplog):
    with stage_run("distill", "exp", "r", {}, run_id="0" * 32) as run:
        pass
    assert run.info.run_id != "0" * 32 and "starting a new run" in caplog.text
    assert _status(store, run.info.run_id) == "FINISHED"


def test_a_run_left_running_by_a_killed_job_is_closed_as_killed(store):
    setup("exp")
    run = mlflow.start_run()
    run_id = run.info.run_id
    mlflow.end_run(status="RUNNING")  # what kill -9 leaves behind
    assert _status(store, run_id) == "RUNNING"
    end_stale_run(run_id)
    assert _status(store, run_id) == "KILLED"


def test_metrics_a_kill_kept_from_mlflow_are_replayed_once(store):
    with stage_run("distill", "exp", "r", {}) as run:
        buf = MetricBuffer()
        buf.add({"train/total_loss": 1.0}, 1)
        buf.add({"val/loss": 0.7}, 1)
        pending = buf.pending()
        buf.replay(pending, "val/loss", 1)  # killed before the flush: nothing logged yet, so log them
        buf.replay(pending, "val/loss", 1)  # already there: not twice
    history = store.get_metric_history(run.info.run_id, "train/total_loss")
    assert [(m.step, m.value) for m in history] == [(1, 1.0)]


def test_an_unreachable_tracking_server_fails_fast_with_one_line(store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    t0 = time.monotonic()
    with pytest.raises(TrackingError) as err:
        setup("exp")
    assert time.monotonic() - t0 < 15
    msg = str(err.value)
    assert "http://127.0.0.1:9 is unreachable" in msg and "\n" not in msg


def test_an_unwritable_store_is_found_before_training(store, tmp_path, monkeypatch):
    (tmp_path / "not-a-folder").write_text("a file")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'not-a-folder' / 'mlflow.db'}")
    with pytest.raises(TrackingError, match="is not writable"):
        setup("exp")


def test_project_root_is_the_cwd_normally(tmp_path):
    assert project_root(tmp_path) == tmp_path.resolve()


def test_queued_experiments_log_to_the_repository_store(tmp_path):
    temp_ws = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "tmpab12cd"
    temp_ws.mkdir(parents=True)
    assert project_root(temp_ws) == (tmp_path / "repo").resolve()
    assert project_root(temp_ws / "sub") == Path(tmp_path / "repo").resolve()
