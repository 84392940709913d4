"""A queued KD grid (`dvc exp run --queue`, `dvc queue start`), then the MLflow UI in headless Chromium.

The UI test needs Chromium from the system packages (Debian: `apt-get install -y chromium`) and skips
without it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
GRID = {"1": "distill T=1 a=0.5 b=0 g=0 soft=kl", "3": "distill T=3 a=0.5 b=0 g=0 soft=kl"}


def _wait_for_queue(pipeline, timeout_s: float = 1200) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = pipeline.sh("dvc", "queue", "status").stdout
        if not any(s in status for s in ("Queued", "Running")):
            return status
        time.sleep(5)
    raise AssertionError(f"dvc queue still busy after {timeout_s} s:\n{status}")


def test_queued_grid_lands_in_mlflow_and_dvc_exp_show(pipeline):
    baselines = len(pipeline.runs("tags.stage = 'baseline'"))
    # the grid of the README (two values here); beta and gamma pinned, the workspace may hold other values
    pipeline.sh(
        "dvc", "exp", "run", "--queue", "-S", "distill.temperature=1,3", "-S", "distill.alpha=0.5",
        "-S", "distill.beta=0", "-S", "distill.gamma=0",
    )  # fmt: skip
    pipeline.sh("dvc", "queue", "start")
    status = _wait_for_queue(pipeline)
    assert status.count("Success") == 2 and "Failed" not in status, status

    # every run in the main store (not the queue's temporary copy), named by its settings
    runs = {r.info.run_name: r for r in pipeline.runs("tags.stage = 'distill' and tags.dvc_exp_name != ''")}
    assert set(GRID.values()) <= set(runs)
    for name in GRID.values():
        run = runs[name]
        assert run.info.status == "FINISHED"
        assert {"test/student_ccc_mean", "test/kd_gain"} <= set(run.data.metrics)
    assert len(pipeline.runs("tags.stage = 'baseline'")) == baselines  # the grid does not retrain it

    table = pipeline.sh("dvc", "exp", "show", "--csv").stdout
    rows = [r for r in csv.DictReader(io.StringIO(table)) if r["typ"].startswith("branch")]
    by_t = {r["distill.temperature"]: r for r in rows if r["distill.alpha"] == "0.5"}
    assert set(GRID) <= set(by_t), table[:2000]
    for t in GRID:
        row = by_t[t]
        kd_gain = float(row["student.ccc_mean"]) - float(row["student_no_kd.ccc_mean"])
        assert float(row["kd_gain"]) == pytest.approx(kd_gain, abs=1e-9)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def mlflow_ui(pipeline, tmp_path):
    """`mlflow server` on a free 127.0.0.1 port against the pipeline's store; yields its base URL."""
    port = _free_port()
    log = (tmp_path / "mlflow.log").open("w")
    cmd = [pipeline.exe("mlflow"), "server", "--backend-store-uri", pipeline.store, "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--workers", "1"]
    proc = subprocess.Popen(
        cmd, cwd=pipeline.repo, env=pipeline.env(), stdout=log, stderr=log, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, (tmp_path / "mlflow.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "mlflow server did not come up in 120 s"
            time.sleep(1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its workers: the group this test started
        proc.wait(timeout=30)
        log.close()


def _chromium(url: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
        "--virtual-time-budget=15000", *args, url,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs headless Chromium: apt-get install -y chromium")
def test_mlflow_compare_view_lines_up_runs_and_shows_loss_curves(pipeline, mlflow_ui, tmp_path):
    from matplotlib.image import imread

    runs = [r for r in pipeline.runs("tags.stage = 'distill'") if r.info.run_name in GRID.values()]
    if len(runs) < 2:  # run on its own, without the grid test: two distill runs of another kind will do
        runs = pipeline.runs("tags.stage = 'distill'")[:2]
    assert len(runs) >= 2
    ids = json.dumps([r.info.run_id for r in runs[:2]])
    exp = json.dumps([runs[0].info.experiment_id])
    compare = f"{mlflow_ui}/#/compare-runs?" + urllib.parse.urlencode({"runs": ids, "experiments": exp})
    dom = _chromium(compare, tmp_path / "profile", "--dump-dom").stdout
    for r in runs[:2]:
        assert r.info.run_name in dom  # the run names, which carry the KD settings, head the columns
    assert "train/total_loss" in dom and "distill.temperature" in dom

    keys = ["train/total_loss", "train/hard_loss", "train/soft_loss"]
    query = {
        "runs": ids,
        "experiments": exp,
        "metric": json.dumps(keys[0]),
        "plot_metric_keys": json.dumps(keys),
    }
    curves = f"{mlflow_ui}/#/metric?" + urllib.parse.urlencode({**query, "x_axis": "step"})
    dom = _chromium(curves, tmp_path / "profile", "--dump-dom").stdout
    assert dom.count('class="js-line"') >= 2 * len(keys), "no loss curves drawn"
    for r in runs[:2]:
        assert f"{r.info.run_name} (train/total_loss)" in dom  # one legend entry per run and loss

    shot = Path(os.environ.get("AUDIOKD_SCREENSHOT_DIR", tmp_path)) / "mlflow_loss_curves.png"
    proc = _chromium(curves, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1400,1000")
    assert shot.is_file(), proc.stderr[-2000:]
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (1000, 1400)
    assert pixels.std() > 0.05 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100, "blank screenshot"
