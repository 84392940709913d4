"""Helpers for end-to-end tests: a git repo copy of the project with the tiny params, and running commands."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DVC = str(BIN / "dvc")


def env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for pipeline commands: the venv first on PATH, no inherited MLflow/DVC settings."""
    e = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    e.update(extra or {})
    return e


def run(cmd: list[str], repo: Path, timeout: int = 900, extra_env: dict[str, str] | None = None):
    """Run ``cmd`` in ``repo``; fail the test with its output when it fails."""
    proc = subprocess.run(cmd, cwd=repo, env=env(extra_env), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def ran(output: str) -> list[str]:
    """Stages that `dvc repro` ran, in order."""
    return re.findall(r"Running stage '(\w+)'", output)


def restore(repo: Path) -> None:
    """Put a repo copy back to its last commit: params, lock and reports from git (stray member folders and
    report files removed), outputs from the DVC cache; what `dvc exp run` or an edit of params.yaml left."""
    run(["git", "checkout", "HEAD", "--", "."], repo)
    run(["git", "clean", "-fdq", "--", "models/teacher_members", "reports"], repo)  # e.g. member plots
    run([DVC, "checkout", "--force"], repo)
    assert "Data and pipelines are up to date" in run([DVC, "status"], repo).stdout


def make_repo(dest: Path) -> Path:
    """Copy the tracked and untracked-but-not-ignored files into a new git repo with the tiny params."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for f in files:
        src = ROOT / f
        output = f.startswith(("data/", "models/", "reports/", "mlruns/")) and not f.endswith(".gitignore")
        if src.is_file() and not output and f != "dvc.lock":
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)
    shutil.copy(ROOT / "tests" / "e2e" / "params_tiny.yaml", dest / "params.yaml")
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"],
    ):
        run(cmd, dest)
    return dest
