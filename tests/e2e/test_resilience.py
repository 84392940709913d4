"""Nothing lost, nothing trusted blindly: real stages killed, interrupted, fed bad weights or a dead store.

A copy of the repo with tiny params (distill: 4 epochs of 10 steps) runs `dvc repro train_teacher` once; the
tests then run the distill stage the way a user would, through `dvc repro` or its stage script.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch
import yaml

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
CKPT = Path(".checkpoints") / "distill" / "last.pt"
DISTILL = ["stages/distill.py", "--features", "data/features", "--teacher", "models/teacher"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return {**env, **extra}


def _run(cmd: list[str], repo: Path, ok: bool = True, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=repo, env=_env(**env), capture_output=True, text=True, timeout=900)
    if ok:
        assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _client(repo: Path) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")


def _write_params(repo: Path, name: str, **distill: object) -> str:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["distill"].update(distill)
    (repo / name).write_text(yaml.safe_dump(params, sort_keys=False))
    return name


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A copy of the repo (tracked and untracked, not ignored, files) with tiny params, teacher trained."""
    root = Path(__file__).resolve().parents[2]
    repo = tmp_path_factory.mktemp("resilience")
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.split()
    for f in files:
        output = f.startswith(("data/", "models/", "reports/", "mlruns/")) and not f.endswith(".gitignore")
        if (root / f).is_file() and not output:
            (repo / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / f, repo / f)
    (repo / "dvc.lock").unlink(missing_ok=True)
    params = yaml.safe_load((root / "tests" / "e2e" / "params_tiny.yaml").read_text())
    params["distill"].update(epochs=4, batch_size=4)  # 24 train + 16 unlabelled clips: 10 steps an epoch
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"],
    ):
        _run(cmd, repo)
    _run([str(BIN / "dvc"), "repro", "train_teacher"], repo)
    assert not (repo / ".checkpoints").exists()  # the teacher's checkpoint went away with its success
    return repo


@pytest.fixture(autouse=True)
def no_checkpoint_left(repo):
    """Each test starts without a distill checkpoint, whatever the one before it left."""
    yield
    shutil.rmtree(repo / ".checkpoints", ignore_errors=True)


def _outcome(repo: Path, out: Path) -> dict:
    """What a run produced: per-epoch history, best epoch, weights, and every MLflow metric point."""
    meta = yaml.safe_load((out / "meta.json").read_text())
    with open(out / "history.csv") as f:
        history = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    client = _client(repo)
    run = client.get_run(meta["run_id"])
    points = {
        k: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, k))
        for k in run.data.metrics
    }
    return {
        "run_id": meta["run_id"],
        "status": run.info.status,
        "best": (meta["best_epoch"], meta["val_ccc_mean"]),
        "history": history,
        "weights": (out / "model.safetensors").read_bytes(),
        "points": points,
    }


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 600) -> None:
    t0 = time.monotonic()
    while not path.is_file():
        assert proc.poll() is None, "the stage ended before its first checkpoint"
        assert time.monotonic() - t0 < timeout, f"no {path} after {timeout} s"
        time.sleep(0.02)


@pytest.fixture
def params_restored(repo) -> Path:
    """The copy's params.yaml, put back as it was after the test (the tests after it expect it unchanged)."""
    path = repo / "params.yaml"
    before = path.read_text()
    yield path
    path.write_text(before)


@pytest.mark.parametrize(
    ("arch", "augment"),
    [("mobilevit", {}), ("vit", {}), ("vit", {"freq_mask": 8, "mixup_alpha": 0.2})],
    ids=["mobilevit", "vit", "vit-augmented"],
)
def test_kill_9_then_dvc_repro_resumes_and_matches_an_uninterrupted_run(repo, params_restored, arch, augment):
    """MobileViT: dropout and batch-norm buffers must come back; the small ViT learns more on tiny data.
    Augmented (SpecAugment, mixup; the teacher runs live): the augmentation generator must come back too."""
    params = yaml.safe_load(params_restored.read_text())
    params["student"].update(arch=arch, vit_hidden_size=32, vit_layers=2, vit_intermediate_size=64)
    params["augment"].update(augment)
    params_restored.write_text(yaml.safe_dump(params, sort_keys=False))
    name = f"{arch}-augmented" if augment else arch
    reference_out = repo.parent / f"{repo.name}-reference-{name}"
    _run([sys.executable, *DISTILL, "--out", str(reference_out)], repo)  # outside DVC: no run cache entry
    reference = _outcome(repo, reference_out)
    assert not (repo / CKPT).exists()

    log = open(repo.parent / f"{repo.name}-killed-{name}.log", "w")  # noqa: SIM115 - closed below
    # augment is a train_teacher param too: through DVC the teacher would retrain; run the stage itself
    out = repo.parent / f"{repo.name}-resumed-{name}" if augment else repo / "models" / "student"
    rerun = (
        [sys.executable, *DISTILL, "--out", str(out)] if augment else [str(BIN / "dvc"), "repro", "distill"]
    )
    proc = subprocess.Popen(
        rerun,
        cwd=repo,
        env=_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    _wait_for(repo / CKPT, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # dvc and the stage it runs
    proc.wait()
    log.close()
    state = torch.load(repo / CKPT, map_location="cpu", weights_only=True)
    killed_after, run_id = state["epoch"], state["run_id"]
    assert 1 <= killed_after <= 4
    assert _client(repo).get_run(run_id).info.status == "RUNNING"  # kill -9 leaves no chance to say more
    assert not out.exists()

    proc = _run(rerun, repo)
    output = proc.stdout + proc.stderr
    assert f"resuming from {CKPT} after epoch {killed_after}/4" in output
    assert f"continuing MLflow run {run_id}" in output
    resumed = _outcome(repo, out)
    assert not (repo / CKPT).exists()

    assert resumed["run_id"] == run_id and resumed["status"] == "FINISHED"
    assert resumed["history"] == reference["history"]
    assert resumed["best"] == reference["best"]
    assert resumed["weights"] == reference["weights"]
    assert resumed["points"] == reference["points"]  # every step logged once, none lost, none twice
    print(f"\n{name}: killed after epoch {killed_after}; per epoch, uninterrupted | resumed:")
    for a, b in zip(reference["history"], resumed["history"], strict=True):
        print(
            f"  epoch {int(a['epoch'])}: train_total_loss {a['train_total_loss']:.10f} | "
            f"{b['train_total_loss']:.10f}   val_loss {a['val_loss']:.10f} | {b['val_loss']:.10f}   "
            f"val_ccc_mean {a['val_ccc_mean']:.6f} | {b['val_ccc_mean']:.6f}"
        )


def test_sigterm_marks_the_run_killed_then_other_params_set_the_checkpoint_aside(repo):
    proc = subprocess.Popen(
        [sys.executable, *DISTILL, "--out", "models/student"],
        cwd=repo,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(repo / CKPT, proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    assert stderr.strip().splitlines()[-1].startswith("error: interrupted (SIGTERM)")
    assert "Traceback" not in stderr
    run_id = torch.load(repo / CKPT, map_location="cpu", weights_only=True)["run_id"]
    client = _client(repo)
    assert client.get_run(run_id).info.status == "KILLED"

    # other params: the checkpoint is set aside (renamed); a temperature this small overflows the soft loss
    params = _write_params(repo, "params_overflow.yaml", temperature=1e-30)
    proc = _run([sys.executable, *DISTILL, "--out", "models/student", "--params", params], repo, ok=False)
    assert proc.returncode == 2
    assert "was made with other params; not resumed, set aside as" in proc.stderr
    (aside,) = (repo / CKPT.parent).glob("set-aside-*.pt")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    assert errors[0].startswith("error: distill: non-finite loss at epoch 1, step 1: term(s) soft, total")
    assert "no checkpoint written yet" in errors[0]
    failed = client.search_runs(
        [client.get_run(run_id).info.experiment_id], "params.`distill.temperature` = '1e-30'"
    )
    assert [r.info.status for r in failed] == ["FAILED"]
    assert client.get_run(run_id).info.status == "KILLED"
    assert aside.is_file() and not (repo / CKPT).exists()


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("http://127.0.0.1:9", "error: MLflow tracking server http://127.0.0.1:9 is unreachable"),
        ("sqlite:///{repo}/params.yaml/mlflow.db", "error: MLflow store sqlite:///"),
    ],
)
def test_a_dead_or_unwritable_store_stops_the_stage_at_once_with_one_line(repo, uri, expected):
    t0 = time.monotonic()
    proc = _run(
        [sys.executable, *DISTILL, "--out", "models/student"],
        repo,
        ok=False,
        MLFLOW_TRACKING_URI=uri.format(repo=repo),
    )
    assert proc.returncode == 2 and time.monotonic() - t0 < 120
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith(expected) and "Traceback" not in proc.stderr
    assert [line for line in lines if line.startswith("error:")] == [lines[-1]]
    assert not (repo / ".checkpoints").exists()  # it stopped before anything was trained


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (
            lambda b: b[: len(b) // 2],
            "model.safetensors: not a valid safetensors file, truncated or tampered",
        ),
        (
            lambda b: b[:-8] + bytes(x ^ 0xFF for x in b[-8:]),
            "model.safetensors: content differs from the sha256",
        ),
    ],
    ids=["truncated", "changed"],
)
def test_damaged_teacher_weights_are_refused_with_one_line_naming_the_file(repo, damage, expected):
    teacher = repo.parent / f"{repo.name}-damaged-teacher"
    shutil.rmtree(teacher, ignore_errors=True)
    shutil.copytree(repo / "models" / "teacher", teacher)
    weights = teacher / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    params = _write_params(repo, "params_live_teacher.yaml", beta=0.5)  # feature KD loads the teacher
    cmd = [sys.executable, "stages/distill.py", "--features", "data/features", "--teacher", str(teacher)]
    proc = _run([*cmd, "--out", "models/student", "--params", params], repo, ok=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {weights}") and expected in last
