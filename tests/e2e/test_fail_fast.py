"""A misspelled params key stops `dvc repro` at its first stage, before anything trains."""

from __future__ import annotations

import subprocess

import pytest
import yaml
from e2e_helpers import DVC, env, make_repo, ran

pytestmark = pytest.mark.slow


def test_dvc_repro_stops_at_the_first_stage_on_a_typo_in_the_distill_section(tmp_path):
    repo = make_repo(tmp_path / "repo")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["distill"]["temprature"] = 2.0
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = subprocess.run([DVC, "repro"], cwd=repo, env=env(), capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert ran(proc.stdout) == ["synthesize"]  # the first stage, not train_teacher's minutes later
    assert "error: distill.temprature: unknown key" in out
    for later in ("data/embedded/manifest.csv", "data/features", "models/teacher", "models/student"):
        assert not (repo / later).exists(), later
