"""Everything MLflow: the store, runs and their names and tags, metric names, model logging.

Store: ``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///mlruns/mlflow.db`` with artifacts under
``mlruns/artifacts`` (MLflow 3 refuses to create a plain ``./mlruns`` file store). :func:`setup` checks
that the store answers and takes writes before a stage trains, with a short timeout: MLflow's own HTTP
client retries an unreachable server for minutes. ``mlruns/`` is that of the
repository, also for queued experiments that DVC runs in a temporary copy under ``.dvc/tmp/exps``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from audiokd.config import flatten
from audiokd.interrupts import deferred

log = logging.getLogger(__name__)

STORE_DIR = Path("mlruns")
PROBE_TIMEOUT_S = 5


class TrackingError(RuntimeError):
    """The MLflow store cannot be reached or written; the message is one line."""


def project_root(cwd: Path | None = None) -> Path:
    """The repository whose ``mlruns/`` holds the store.

    ``dvc exp run --queue`` and ``--temp`` run stages in a copy under ``<repo>/.dvc/tmp/exps/``; their runs
    must land in the repository's own store, not in the copy that DVC deletes afterwards.
    """
    cwd = (cwd or Path.cwd()).resolve()
    parts = cwd.parts
    for i in range(len(parts) - 3):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return cwd


def store_dir() -> Path:
    """The default store folder: ``<project root>/mlruns`` (from ``DVC_ROOT`` under DVC, else the cwd)."""
    root = os.environ.get("DVC_ROOT")
    return project_root(Path(root) if root else None) / STORE_DIR


def default_uri() -> str:
    """The project's own store: sqlite under ``mlruns/``."""
    return f"sqlite:///{store_dir() / 'mlflow.db'}"


def tracking_uri() -> str:
    """The tracking URI in use: ``MLFLOW_TRACKING_URI`` or the project's sqlite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or default_uri()


def _artifact_location(uri: str) -> str | None:
    # note: mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI, so compare URIs rather than test the env
    if uri != default_uri():
        return None  # a server (or the user's own store) decides where artifacts go
    return (store_dir() / "artifacts").as_uri()


def _one_line(e: object) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


def _probe_server(uri: str, timeout_s: float) -> None:
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s):
            pass
    except urllib.error.HTTPError:
        return  # something answered; whether it lets us in, the first real request says
    except (urllib.error.URLError, OSError) as e:
        raise TrackingError(
            f"MLflow tracking server {uri} is unreachable ({_one_line(getattr(e, 'reason', e))}); "
            "start it, or unset MLFLOW_TRACKING_URI to use the local store under mlruns/"
        ) from None


def _probe_sqlite(uri: str, timeout_s: float) -> None:
    path = uri.removeprefix("sqlite:///")
    if not path or path == ":memory:":
        return
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(path, timeout=timeout_s)
        try:
            # a real write, rolled back: a read-only file opens (read-only) and even takes the lock
            con.execute("BEGIN IMMEDIATE")
            con.execute("CREATE TABLE audiokd_write_probe (x INTEGER)")
            con.rollback()
        finally:
            con.close()
    except (OSError, sqlite3.Error) as e:
        raise TrackingError(
            f"MLflow store {uri} is not writable ({_one_line(e)}); free the disk or fix its permissions, "
            "or set MLFLOW_TRACKING_URI to a store you can write"
        ) from None


def _probe_artifacts(location: str | None) -> None:
    if not location:
        return
    parsed = urllib.parse.urlparse(location)
    if parsed.scheme not in ("", "file"):
        return  # remote artifact stores are checked by the server
    folder = Path(urllib.parse.unquote(parsed.path) if parsed.scheme else location)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise TrackingError(f"MLflow artifact store {folder} is not writable ({_one_line(e)})") from None


@contextlib.contextmanager
def _quick_http(timeout_s: float) -> Iterator[None]:
    """No retries and a short timeout for MLflow's HTTP client, unless the user set them."""
    keys = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(timeout_s))}
    added = [k for k in keys if k not in os.environ]
    os.environ.update({k: keys[k] for k in added})
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def setup(experiment: str, timeout_s: float = PROBE_TIMEOUT_S) -> str:
    """Point MLflow at the store and make sure ``experiment`` exists; returns its id.

    Fails fast with :class:`TrackingError` (one line) when a tracking server does not answer within
    ``timeout_s`` or the store or its artifact folder cannot be written: call it before training.
    """
    uri = tracking_uri()
    if uri == default_uri():
        store_dir().mkdir(parents=True, exist_ok=True)
    scheme = urllib.parse.urlparse(uri).scheme
    if scheme in ("http", "https"):
        _probe_server(uri, timeout_s)
    elif scheme == "sqlite":
        _probe_sqlite(uri, timeout_s)
    mlflow.set_tracking_uri(uri)
    with _quick_http(timeout_s), deferred():
        try:
            exp = mlflow.get_experiment_by_name(experiment)
            if exp is None:
                exp_id = mlflow.create_experiment(experiment, artifact_location=_artifact_location(uri))
                exp = mlflow.get_experiment(exp_id)
            mlflow.set_experiment(experiment_id=exp.experiment_id)
        except Exception as e:  # MlflowException, a database error, a refused connection ...
            raise TrackingError(f"MLflow store {uri}: {_one_line(e)}") from None
    _probe_artifacts(exp.artifact_location)
    return exp.experiment_id


def end_stale_run(run_id: str) -> None:
    """Mark ``run_id`` KILLED if a killed job left it RUNNING (its checkpoint was set aside)."""
    client = mlflow.MlflowClient()
    try:
        with deferred():
            if client.get_run(run_id).info.status == "RUNNING":
                client.set_terminated(run_id, status="KILLED")
                log.info("MLflow run %s, left RUNNING by a killed job, marked KILLED", run_id)
    except MlflowException:
        pass  # gone from the store: nothing to close


def _resumable(run_id: str, experiment_id: str) -> bool:
    try:
        with deferred():
            run = mlflow.MlflowClient().get_run(run_id)
    except MlflowException:
        return False
    return run.info.lifecycle_stage == "active" and run.info.experiment_id == experiment_id


def git_commit() -> str | None:
    """The current git commit, or None outside a repository."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@contextlib.contextmanager
def stage_run(
    stage: str,
    experiment: str,
    run_name: str,
    params: dict[str, Any],
    tags: dict[str, str] | None = None,
    run_id: str | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run for one pipeline stage, tagged ``stage``, git commit and ``DVC_EXP_NAME``.

    ``params`` (nested sections) are logged flattened, e.g. ``distill.temperature``. ``run_id`` continues
    that run (a resumed stage) when it is still in the experiment; else a new run starts. The run ends
    FINISHED on success, FAILED on an exception and KILLED on Ctrl-C or SIGTERM.
    """
    exp_id = setup(experiment)
    if run_id and not _resumable(run_id, exp_id):
        log.warning("MLflow run %s of the checkpoint is gone from the experiment; starting a new run", run_id)
        run_id = None
    all_tags = {"stage": stage, **(tags or {})}
    commit = git_commit()
    if commit:
        all_tags["git_commit"] = commit
        all_tags["mlflow.source.git.commit"] = commit
    if os.environ.get("DVC_EXP_NAME"):
        all_tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
    flat = {k: (",".join(map(str, v)) if isinstance(v, list) else v) for k, v in flatten(params).items()}
    items = list(flat.items())
    try:
        with deferred():  # a signal inside a store transaction can wedge the store: let writes finish
            run = mlflow.start_run(run_id=run_id, run_name=run_name, tags=all_tags)
            for i in range(0, len(items), 100):  # log_params takes at most 100 per call
                mlflow.log_params(dict(items[i : i + 100]))
        yield run
    except KeyboardInterrupt:
        _end_run("KILLED")
        raise
    except BaseException:
        _end_run("FAILED")
        raise
    with deferred():
        mlflow.end_run(status="FINISHED")


def log_run_inputs(params_file: str | Path | None, n_params: int, resumed: bool) -> None:
    """At the start of a training stage's run: the params file first (an unwritable artifact store fails
    before any training), then the parameter count (a resumed run has it already)."""
    with deferred():  # no signal half-way through a store write
        if params_file:
            mlflow.log_artifact(str(params_file))
        if not resumed:
            mlflow.log_metric("model/params", n_params)


def _end_run(status: str) -> None:
    """End the active run as ``status`` without masking the error that ended it."""
    try:
        with deferred():
            mlflow.end_run(status=status)
    except Exception as e:  # e.g. the server went away: the original error matters more
        log.warning("could not mark the MLflow run %s: %s", status, _one_line(e))


class MetricBuffer:
    """Collects per-step metrics and writes them in batches (one database round trip per flush)."""

    def __init__(self) -> None:
        self._items: list[Metric] = []

    def add(self, metrics: dict[str, float], step: int) -> None:
        """Record ``metrics`` at ``step``."""
        ts = int(time.time() * 1000)
        self._items.extend(Metric(k, float(v), ts, step) for k, v in metrics.items())

    def pending(self) -> dict[str, list]:
        """What :meth:`flush` would send, as plain lists (for a checkpoint)."""
        return {
            "key": [m.key for m in self._items],
            "value": [m.value for m in self._items],
            "timestamp": [m.timestamp for m in self._items],
            "step": [m.step for m in self._items],
        }

    def replay(self, pending: dict[str, list], marker: str, step: int) -> None:
        """Send ``pending`` (from :meth:`pending`) unless the active run already has ``marker`` at ``step``.

        A checkpoint is written just before its epoch's metrics are flushed; a kill in between would lose
        them, and replaying them blindly would log them twice.
        """
        run = mlflow.active_run()
        if run is None:
            return
        with deferred():
            history = mlflow.MlflowClient().get_metric_history(run.info.run_id, marker)
        if any(m.step == step for m in history):
            return
        self._items.extend(
            Metric(k, float(v), int(t), int(s))
            for k, v, t, s in zip(
                pending["key"], pending["value"], pending["timestamp"], pending["step"], strict=True
            )
        )
        self.flush()
        log.info("logged the metrics of epoch %d that a kill kept from MLflow", step)

    def flush(self) -> None:
        """Send what was recorded to the active run."""
        run = mlflow.active_run()
        if run is None or not self._items:
            self._items.clear()
            return
        client = mlflow.MlflowClient()
        with deferred():  # a signal mid-transaction could leave the store unable to mark the run KILLED
            for i in range(0, len(self._items), 1000):
                client.log_batch(run.info.run_id, metrics=self._items[i : i + 1000])
            self._items.clear()


def log_torch_model(model: Any, name: str, input_example: Any) -> str:
    """Log ``model`` (on the CPU) as an MLflow PyTorch model under ``name``; returns its model URI.

    MLflow checks the input example through the pyfunc flavour, which picks CUDA when a GPU is present and
    then refuses a model exported with CPU weights; the check runs on the CPU, where the model is. (To
    serve the logged model on a GPU with ``mlflow.pyfunc.load_model``, pass ``model_config={"device":
    "cpu"}``, or load it with ``mlflow.pytorch.load_model`` and move it.)
    """
    import mlflow.pytorch

    saved = os.environ.get("MLFLOW_DEFAULT_PREDICTION_DEVICE")
    os.environ["MLFLOW_DEFAULT_PREDICTION_DEVICE"] = "cpu"
    try:
        with deferred():  # it writes the store too; a signal takes effect when it is done
            info = mlflow.pytorch.log_model(model, name=name, input_example=input_example)
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_DEFAULT_PREDICTION_DEVICE", None)
        else:
            os.environ["MLFLOW_DEFAULT_PREDICTION_DEVICE"] = saved
    return info.model_uri
