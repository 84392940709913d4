"""The real pipeline, run once per session on a clone-like copy of the repo with tiny params."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from e2e_helpers import restore

BIN = Path(sys.executable).parent


@dataclass
class Pipeline:
    """The repo copy after `dvc repro`, and a user's shell in it (the venv first on PATH)."""

    repo: Path
    output: str

    @property
    def store(self) -> str:
        """The MLflow store the pipeline logs to."""
        return f"sqlite:///{self.repo / 'mlruns' / 'mlflow.db'}"

    def env(self) -> dict[str, str]:
        """The environment commands run with: no MLflow or DVC overrides from the test runner."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        return env

    @staticmethod
    def exe(name: str) -> str:
        """``name`` from the venv (``dvc``, ``audiokd``, ``mlflow``), else from PATH (``git``)."""
        return str(BIN / name) if (BIN / name).exists() else name

    def sh(
        self, *cmd: str, check: bool = True, timeout: int = 900, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        """Run ``cmd`` in the repo (``env`` added to the environment); by default it must succeed."""
        proc = subprocess.run(
            [self.exe(cmd[0]), *cmd[1:]],
            cwd=self.repo,
            env={**self.env(), **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check:
            assert proc.returncode == 0, (
                f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        return proc

    @staticmethod
    def ran(output: str) -> list[str]:
        """Stages DVC ran, in order, from its output."""
        return re.findall(r"Running stage '(\w+)'", output)

    @contextmanager
    def restored(self) -> Iterator[None]:
        """Afterwards: params, lock and reports as committed, stray member folders gone, outputs checked out
        from the DVC cache, so a test that changes the workspace leaves the next test the default run."""
        try:
            yield
        finally:
            restore(self.repo)

    def client(self) -> mlflow.MlflowClient:
        """An MLflow client on the pipeline's store (tracking and registry)."""
        return mlflow.MlflowClient(tracking_uri=self.store, registry_uri=self.store)

    def runs(self, filter_string: str = "") -> list:
        """Runs of the e2e experiment matching ``filter_string``."""
        client = self.client()
        exp = client.get_experiment_by_name("audiokd-e2e")
        assert exp is not None
        return client.search_runs([exp.experiment_id], filter_string)


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory) -> Pipeline:
    """A git clone-like copy of the repo with tiny params, after one `dvc repro` (then committed)."""
    root = Path(__file__).resolve().parents[2]
    repo = tmp_path_factory.mktemp("repo")
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.split()
    for f in files:
        src = root / f
        output = f.startswith(("data/", "models/", "reports/", "mlruns/")) and not f.endswith(".gitignore")
        if src.is_file() and not output and f != "dvc.lock":
            (repo / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, repo / f)
    shutil.copy(root / "tests" / "e2e" / "params_tiny.yaml", repo / "params.yaml")
    p = Pipeline(repo, "")
    git = ("git", "-c", "user.name=t", "-c", "user.email=t@t")
    p.sh("git", "init", "-q")
    p.sh("git", "add", "-A")
    p.sh(*git, "commit", "-qm", "init")
    proc = p.sh("dvc", "repro")
    p.output = proc.stdout + proc.stderr
    # as a user would before `dvc exp run --queue`: queued experiments start from the last commit
    p.sh("git", "add", "-A")
    p.sh(*git, "commit", "-qm", "dvc repro")
    return p
