"""dvc.yaml lists, per stage, every src/ module the stage imports and whole params sections that exist."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from audiokd.config import SECTIONS

pytestmark = pytest.mark.slow

PROBE = """
import json, runpy, sys
sys.argv = ["stage", "--help"]
try:
    runpy.run_path(sys.argv_path, run_name="probe")
except SystemExit:
    pass
print(json.dumps(sorted(m.__file__ for n, m in list(sys.modules.items())
                        if n.startswith("audiokd") and getattr(m, "__file__", None))))
"""


def _spec(repo_root):
    return yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize(
    "stage", ["synthesize", "prepare", "preprocess", "train_teacher", "teacher_member", "distill", "evaluate"]
)
def test_stage_deps_cover_every_imported_module(repo_root, stage):
    script = repo_root / "stages" / f"{stage}.py"
    code = PROBE.replace("sys.argv_path", repr(str(script)))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=repo_root, timeout=300
    )
    files = json.loads(out.stdout.strip().splitlines()[-1])
    src = repo_root / "src"
    imported = {str(Path(f).relative_to(src.parent)) for f in files if f.startswith(str(src))}
    imported = {f for f in imported if not f.endswith("__init__.py") or f.endswith("models/__init__.py")}
    spec = _spec(repo_root)[stage]
    deps = set(spec.get("do", spec)["deps"])  # a foreach stage (teacher_member): its template
    assert f"stages/{stage}.py" in deps
    missing = imported - deps
    assert not missing, f"{stage} imports {sorted(missing)} but dvc.yaml does not list them"


def test_stages_list_whole_known_sections(repo_root):
    # two exceptions: the no-KD baseline tracks distill's budget keys only, so KD weights do not rerun it;
    # an ensemble member tracks its own entry of ensemble.members, so editing one member reruns only it
    for name, stage in _spec(repo_root).items():
        for p in stage.get("do", stage).get("params", []):
            allowed = (
                p in SECTIONS
                or (name == "baseline" and p.startswith("distill."))
                or (name == "teacher_member" and p == "ensemble.members.${key}")
            )
            assert isinstance(p, str) and allowed, f"{name}: {p}"
