"""dvc.yaml lists, per stage, every src/ module the stage imports and whole params sections that exist.

A stage's imports are found two ways, since many are deferred into function bodies (lazy imports): importing
the stage script (every module-level import runs), and following, from every src/ module that loaded, the
``audiokd`` imports written anywhere in the module, function bodies included, so that a deferred import on
the stage's path counts as well. Not followed: ``if TYPE_CHECKING:`` blocks (for the type checker only) and
``cli.py``, whose functions are the other commands and ``run_stage``, which imports the library's error
classes only to catch them (listing those modules would rerun data preparation after a change to the
training loop).
"""

import ast
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from audiokd.config import SECTIONS, AugmentConfig

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


def _module_file(src: Path, name: str) -> Path | None:
    """The file of module ``name`` (``audiokd.x.y``) under ``src``, or None when it is not a module."""
    base = src.joinpath(*name.split("."))
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.is_file():
            return f
    return None


def _written_imports(src: Path, path: Path) -> set[Path]:
    """src/ files named by the ``audiokd`` imports anywhere in ``path`` (parent packages included)."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):  # `if TYPE_CHECKING:` blocks are for the type checker only
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)  # `from pkg import submodule`
    found: set[Path] = set()
    for name in names:
        parts = name.split(".")
        if parts[0] != "audiokd":
            continue
        for i in range(1, len(parts) + 1):
            f = _module_file(src, ".".join(parts[:i]))
            if f is not None:
                found.add(f)
    return found


def _with_lazy_imports(src: Path, loaded: set[Path]) -> set[Path]:
    """``loaded`` plus everything reachable from it through :func:`_written_imports`."""
    seen, todo = set(loaded), list(loaded)
    while todo:
        path = todo.pop()
        if path.name == "cli.py":
            continue
        for f in _written_imports(src, path) - seen:
            seen.add(f)
            todo.append(f)
    return seen


def _spec(repo_root):
    return yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize(
    "stage",
    [
        "synthesize",
        "prepare",
        "preprocess",
        "train_teacher",
        "teacher_member",
        "distill",
        "baseline",
        "evaluate",
    ],
)
def test_stage_deps_cover_every_imported_module(repo_root, stage):
    script = repo_root / "stages" / f"{stage}.py"
    code = PROBE.replace("sys.argv_path", repr(str(script)))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=repo_root, timeout=300
    )
    files = json.loads(out.stdout.strip().splitlines()[-1])
    src = repo_root / "src"
    loaded = {Path(f) for f in files if f.startswith(str(src))}
    imported = {str(f.relative_to(src.parent)) for f in _with_lazy_imports(src, loaded)}
    imported = {f for f in imported if not f.endswith("__init__.py") or f.endswith("models/__init__.py")}
    spec = _spec(repo_root)[stage]
    deps = set(spec.get("do", spec)["deps"])  # a foreach stage (teacher_member): its template
    assert f"stages/{stage}.py" in deps
    missing = imported - deps
    assert not missing, f"{stage} imports {sorted(missing)} but dvc.yaml does not list them"


def test_stages_list_whole_known_sections(repo_root):
    # three exceptions: the no-KD baseline tracks distill's budget keys only, so KD weights do not rerun it;
    # an ensemble member tracks its own entry of ensemble.members (and the ensemble.enabled switch), so
    # editing one member reruns only it; the teachers and the baseline track the augment keys they use, so
    # augment.teacher_view and augment.views (distill's alone) and augment.students (not the teachers') rerun
    # no teacher
    augment_keys = {f"augment.{f.name}" for f in dataclasses.fields(AugmentConfig)}
    uses_students = {"baseline": {"augment.students"}}
    teacher_aug = augment_keys - {"augment.students", "augment.teacher_view", "augment.views"}
    for name, stage in _spec(repo_root).items():
        for p in stage.get("do", stage).get("params", []):
            allowed = (
                p in SECTIONS
                or (name == "baseline" and p.startswith("distill."))
                or (name == "teacher_member" and p in ("ensemble.members.${key}", "ensemble.enabled"))
                or (
                    name in ("teacher_member", "train_teacher", "baseline")
                    and p in teacher_aug | uses_students.get(name, set())
                )
            )
            assert isinstance(p, str) and allowed, f"{name}: {p}"
        listed = {p for p in stage.get("do", stage).get("params", []) if p.startswith("augment.")}
        if listed:  # a stage that lists augment keys lists every one it reads: none may change unseen
            needed = teacher_aug | uses_students.get(name, set())
            assert listed == needed, f"{name}: augment keys {sorted(listed)}, not {sorted(needed)}"


def test_deferred_imports_count_and_type_checking_ones_do_not(repo_root):
    src = repo_root / "src"
    pkg = src / "audiokd"
    # checkpoint.py imports audiokd.tracking inside open_checkpoint only; augment.py names FeatureSet for
    # the type checker only
    assert pkg / "tracking.py" in _written_imports(src, pkg / "checkpoint.py")
    assert pkg / "data" / "features.py" not in _written_imports(src, pkg / "augment.py")
    assert pkg / "tracking.py" in _with_lazy_imports(src, {pkg / "checkpoint.py"})
