"""Everything MLflow: the store, runs and their names and tags, metric names, model logging.

Store: ``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///mlruns/mlflow.db`` with artifacts under
``mlruns/artifacts`` (MLflow 3 refuses to create a plain ``./mlruns`` file store). ``mlruns/`` is that of
the DVC repository (``DVC_ROOT``), so queued experiments, which DVC runs in a temporary copy under
``.dvc/tmp/exps``, log to the same store as ``dvc repro``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric

from audiokd.config import flatten

log = logging.getLogger(__name__)


def store_dir() -> Path:
    """``mlruns/`` of the repository root: ``DVC_ROOT`` under DVC (the main workspace even for a queued
    experiment's temporary copy), else the current folder."""
    return Path(os.environ.get("DVC_ROOT") or ".") / "mlruns"


def default_uri() -> str:
    """The project's own store: sqlite under ``mlruns/``."""
    return f"sqlite:///{(store_dir() / 'mlflow.db').resolve()}"


def tracking_uri() -> str:
    """The tracking URI in use: ``MLFLOW_TRACKING_URI`` or the project's sqlite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or default_uri()


def _artifact_location(uri: str) -> str | None:
    # note: mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI, so compare URIs rather than test the env
    if uri != default_uri():
        return None  # a server (or the user's own store) decides where artifacts go
    return (store_dir() / "artifacts").resolve().as_uri()


def setup(experiment: str) -> str:
    """Point MLflow at the store and make sure ``experiment`` exists; returns its id."""
    uri = tracking_uri()
    if uri == default_uri():
        store_dir().mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        exp_id = mlflow.create_experiment(experiment, artifact_location=_artifact_location(uri))
    else:
        exp_id = exp.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def git_commit() -> str | None:
    """The current git commit, or None outside a repository."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@contextlib.contextmanager
def stage_run(
    stage: str, experiment: str, run_name: str, params: dict[str, Any], tags: dict[str, str] | None = None
) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run for one pipeline stage, tagged ``stage``, git commit and ``DVC_EXP_NAME``.

    ``params`` (nested sections) are logged flattened, e.g. ``distill.temperature``. The run ends
    FINISHED on success, FAILED on an exception and KILLED on Ctrl-C.
    """
    setup(experiment)
    all_tags = {"stage": stage, **(tags or {})}
    commit = git_commit()
    if commit:
        all_tags["git_commit"] = commit
        all_tags["mlflow.source.git.commit"] = commit
    if os.environ.get("DVC_EXP_NAME"):
        all_tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
    run = mlflow.start_run(run_name=run_name, tags=all_tags)
    try:
        flat = {k: (",".join(map(str, v)) if isinstance(v, list) else v) for k, v in flatten(params).items()}
        items = list(flat.items())
        for i in range(0, len(items), 100):  # log_params takes at most 100 per call
            mlflow.log_params(dict(items[i : i + 100]))
        yield run
    except KeyboardInterrupt:
        mlflow.end_run(status="KILLED")
        raise
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    mlflow.end_run(status="FINISHED")


class MetricBuffer:
    """Collects per-step metrics and writes them in batches (one database round trip per flush)."""

    def __init__(self) -> None:
        self._items: list[Metric] = []

    def add(self, metrics: dict[str, float], step: int) -> None:
        """Record ``metrics`` at ``step``."""
        ts = int(time.time() * 1000)
        self._items.extend(Metric(k, float(v), ts, step) for k, v in metrics.items())

    def flush(self) -> None:
        """Send what was recorded to the active run."""
        run = mlflow.active_run()
        if run is None or not self._items:
            self._items.clear()
            return
        client = mlflow.MlflowClient()
        for i in range(0, len(self._items), 1000):
            client.log_batch(run.info.run_id, metrics=self._items[i : i + 1000])
        self._items.clear()


def log_torch_model(model: Any, name: str, input_example: Any) -> str:
    """Log ``model`` as an MLflow PyTorch model under ``name``; returns its model URI."""
    import mlflow.pytorch

    info = mlflow.pytorch.log_model(model, name=name, input_example=input_example)
    return info.model_uri
