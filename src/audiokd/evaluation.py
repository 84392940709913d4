"""The evaluate stage: teacher vs student (and no-KD student) on the test split; metrics, plots, report."""

from __future__ import annotations

import functools
import logging
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException

from audiokd.config import DataConfig, EvaluateConfig, ExportConfig, TrackingConfig
from audiokd.data.features import FeatureSet, check_targets
from audiokd.deployable import deploy_tags, gate, score_int8
from audiokd.groups import group_table, split_groups
from audiokd.io import read_json, write_json
from audiokd.metrics import gain_verdict, paired_bootstrap_ci
from audiokd.models import count_params, predict, weights_size_mb
from audiokd.models.student import load_student
from audiokd.registry import CANDIDATE, register_candidate
from audiokd.report import budget_lines, write_report
from audiokd.teaching.folder import parts
from audiokd.teaching.scores import ratio, teacher_note, teacher_report
from audiokd.tracking import setup, tracking_uri

log = logging.getLogger(__name__)

QUALITY_KEYS = ("ccc_mean", "accuracy", "macro_f1")


@torch.no_grad()
def latency_ms(
    model: torch.nn.Module, example: torch.Tensor, repeats: int, warmup: int, threads: int
) -> float:
    """Median wall time of one forward pass on the CPU, in milliseconds, after ``warmup`` passes."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    # denormal floats cost ~100x a normal operation on some CPUs; deployments flush them (README: latency)
    torch.set_flush_denormal(True)
    try:
        model.eval()
        for _ in range(warmup):
            model(pixel_values=example)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(pixel_values=example)
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        torch.set_num_threads(old)
        torch.set_flush_denormal(False)
    return float(statistics.median(times))


def trained(folder: str | Path) -> bool:
    """Whether ``folder`` holds a trained no-KD baseline, not the marker of ``baseline.enabled: false``."""
    meta_path = Path(folder) / "meta.json"
    return meta_path.is_file() and bool(read_json(meta_path).get("enabled", True))


def _model_report(
    model: torch.nn.Module,
    folder: Path,
    fs: FeatureSet,
    x: torch.Tensor,
    y_true: np.ndarray,
    cfg: EvaluateConfig,
) -> tuple[dict[str, Any], np.ndarray]:
    pred = fs.denormalise_targets(predict(model, x).numpy())
    report = {
        **fs.task.quality(pred, y_true),
        "params": count_params(model),
        "size_mb": round(weights_size_mb(folder), 4),
        "latency_ms": round(
            latency_ms(model, x[:1], cfg.latency_repeats, cfg.latency_warmup, cfg.latency_threads), 4
        ),
    }
    return report, pred


def _predictions_table(pred: np.ndarray, true: np.ndarray, targets: list[str]) -> pd.DataFrame:
    if true.ndim == 1:  # classification: true and predicted class per clip, with the predicted probability
        prob = torch.softmax(torch.from_numpy(pred), dim=1).numpy()
        return pd.DataFrame(
            {
                "target": "class",
                "label": [targets[int(c)] for c in true],
                "predicted": [targets[int(c)] for c in pred.argmax(1)],
                "probability": prob.max(1),
            }
        )
    rows = [
        {"target": t, "label": float(true[i, k]), "predicted": float(pred[i, k])}
        for k, t in enumerate(targets)
        for i in range(len(true))
    ]
    return pd.DataFrame(rows)


def evaluate(
    data: DataConfig,
    cfg: EvaluateConfig,
    tracking: TrackingConfig,
    features_dir: str | Path,
    teacher_dir: str | Path,
    student_dir: str | Path,
    metrics_path: str | Path,
    plots_dir: str | Path,
    baseline_dir: str | Path | None = None,
    report_path: str | Path | None = None,
    figures_dir: str | Path | None = None,
    export: ExportConfig | None = None,
) -> dict[str, Any]:
    """Score the models on the test split; write ``metrics.json`` (schema in the design notes) and plot data.

    ``plots_dir`` receives ``<model>_history.csv`` (per-epoch losses; for a teacher of several models,
    ``teacher_<name>_history.csv`` per model and their epoch-wise mean as the teacher's) and
    ``<model>_predictions.csv`` (target, label, predicted) for ``teacher``, ``student`` and, when
    ``baseline_dir`` holds a trained no-KD student, ``student_no_kd`` (then ``metrics.json`` gains
    ``student_no_kd`` and ``kd_gain``). When the test clips come from several groups (the manifest's
    ``group`` column, e.g. speakers), ``groups.csv`` holds each model's quality and bias per group
    (:mod:`audiokd.groups`), and the report shows the student's worst groups.
    ``report_path`` (with ``figures_dir``) receives the markdown report and its PNG figures. The test
    metrics, report and figures go to the student's MLflow run, and the student is registered under
    ``tracking.registered_model`` with alias ``candidate`` (unless that name is empty). When the student
    folder holds ``model.int8.onnx``, ``student_int8`` is scored too and gated by ``export.int8_max_drop``
    (:mod:`audiokd.deployable`); the registered version's tags name the file to deploy.
    """
    fs = FeatureSet.load(features_dir)
    check_targets(data, fs)
    folders = {"teacher": Path(teacher_dir), "student": Path(student_dir)}
    if baseline_dir is not None and trained(baseline_dir):
        folders["student_no_kd"] = Path(baseline_dir)
    test = fs.split("test")
    y_true = fs.raw_targets("test")
    reports, preds = {}, {}
    score = functools.partial(_model_report, fs=fs, x=test.x, y_true=y_true, cfg=cfg)
    reports["teacher"], teacher_pred, members = teacher_report(folders["teacher"], fs, y_true, score)
    if teacher_pred is not None:
        preds["teacher"] = teacher_pred
    for name, folder in list(folders.items())[1:]:
        reports[name], preds[name] = _model_report(load_student(folder), folder, fs, test.x, y_true, cfg)
    t_rep, s_rep = reports["teacher"], reports["student"]
    key = fs.task.primary
    metrics = {
        **reports,
        "retention": ratio(s_rep[key], t_rep[key]),
        "compression": ratio(t_rep["params"], s_rep["params"]),
        "speedup": ratio(t_rep["latency_ms"], s_rep["latency_ms"]),
    }
    if "student_no_kd" in reports:
        metrics["kd_gain"] = s_rep[key] - reports["student_no_kd"][key]
        ci = paired_bootstrap_ci(
            preds["student"],
            preds["student_no_kd"],
            y_true,
            fs.task.kind,
            cfg.bootstrap_resamples,
            cfg.bootstrap_seed,
        )
        metrics["kd_gain_ci95"] = list(ci)
        # DVC shows numbers, not lists: the ends again as scalars, for `dvc exp show` across seeds
        metrics["kd_gain_lo"], metrics["kd_gain_hi"] = ci
    budgets = {m: read_json(f / "meta.json").get("budget") for m, f in folders.items() if m != "teacher"}
    if all(budgets.values()):  # clips, epochs and steps each student trained for
        metrics["budget"] = budgets
    x_test = test.x.numpy()
    scored = score_int8(
        folders["student"], x_test, y_true, fs.task, fs.denormalise_targets, s_rep["params"], cfg
    )
    if scored is not None:
        metrics["student_int8"] = scored[0]
        gate(metrics, key, export or ExportConfig())
    if members:  # "teacher" is what the student learned from: the ensemble (or fold teachers) as a whole
        metrics["teacher_members"] = members
    plots_dir = Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    histories = {
        name: pd.read_csv(folder / "history.csv")
        for name, folder in [
            *folders.items(),
            *((f"teacher_{n}", sub) for n, sub in parts(folders["teacher"]).items()),
        ]
        if (folder / "history.csv").is_file()
    }
    for name, history in histories.items():
        history.to_csv(plots_dir / f"{name}_history.csv", index=False)
    member_histories = [h for n, h in histories.items() if n.startswith("teacher_")]
    if "teacher" not in histories and member_histories:  # dvc.yaml's teacher plots: the members' mean
        mean = pd.concat(member_histories).groupby("epoch", as_index=False).mean()
        mean.to_csv(plots_dir / "teacher_history.csv", index=False)  # not a model: the report leaves it out
    for name, pred in preds.items():
        _predictions_table(pred, y_true, fs.targets).to_csv(
            plots_dir / f"{name}_predictions.csv", index=False
        )
    groups = split_groups(features_dir)
    by_group = group_table(preds, y_true, groups, fs.task) if groups is not None else None
    if by_group is not None:
        by_group.to_csv(plots_dir / "groups.csv", index=False)
    else:
        (plots_dir / "groups.csv").unlink(missing_ok=True)  # a previous run's, for other clips
    write_json(metrics_path, metrics)
    setup(tracking.experiment)
    registered = _register(folders["student"], tracking, metrics.get("student_int8"))
    figures: list[Path] = []
    if report_path is not None:
        figures_dir = Path(figures_dir) if figures_dir is not None else Path(report_path).parent / "figures"
        note = teacher_note(folders["teacher"], metrics)
        figures = write_report(
            metrics,
            fs.targets,
            histories,
            preds,
            y_true,
            report_path,
            figures_dir,
            registered,
            note,
            by_group,
        )
    tables = [plots_dir / "groups.csv"] if by_group is not None else []
    _log_to_runs(folders, metrics, Path(metrics_path), report_path, figures, tables)
    return metrics


def _tracked_run(folder: Path) -> str | None:
    """The MLflow run id in ``folder/meta.json`` if the store holds that run, else None (with a warning).

    A run can be missing when the store was reset, or when DVC restored the folder from its run cache after
    the run was logged to another store.
    """
    run_id = read_json(folder / "meta.json").get("run_id")
    if not run_id:
        return None
    try:
        mlflow.MlflowClient().get_run(run_id)
    except MlflowException:
        log.warning("%s: MLflow run %s is not in %s; not logging to it", folder, run_id, tracking_uri())
        return None
    return str(run_id)


def _register(student_dir: Path, tracking: TrackingConfig, int8: dict[str, Any] | None = None) -> str | None:
    """Register the student under ``tracking.registered_model`` with alias ``candidate``; a label or None."""
    model_uri = read_json(student_dir / "meta.json").get("model_uri")
    run_id = _tracked_run(student_dir)
    if not tracking.registered_model or not model_uri or not run_id:
        return None
    name = tracking.registered_model
    version = register_candidate(name, model_uri, run_id, tags=deploy_tags(run_id, int8))
    return f"`{name}` version {version} (`models:/{name}@{CANDIDATE}`)"


def _log_to_runs(
    folders: dict[str, Path],
    metrics: dict[str, Any],
    metrics_path: Path,
    report_path: str | Path | None,
    figures: list[Path],
    tables: Sequence[Path] = (),
) -> None:
    """Attach the test metrics, report, figures and ``tables`` (per-group scores) to the distill run (and
    the no-KD run's own scores)."""
    client = mlflow.MlflowClient()
    run_id = _tracked_run(folders["student"])
    if run_id:
        flat = {
            "test/retention": metrics["retention"],
            "test/compression": metrics["compression"],
            "test/speedup": metrics["speedup"],
        }
        for model in ("teacher", "student", "student_no_kd", "student_int8"):
            for key, value in metrics.get(model, {}).items():
                if key in QUALITY_KEYS:
                    flat[f"test/{model}_{key}"] = value
        for name, member in metrics.get("teacher_members", {}).items():
            flat.update({f"test/teacher_{name}_{k}": v for k, v in member.items() if k in QUALITY_KEYS})
        flat = {k: v for k, v in flat.items() if v is not None}  # unknown for a teacher read from a file
        flat.update({f"test/student_ccc_{k}": v for k, v in metrics["student"].get("ccc", {}).items()})
        if "kd_gain" in metrics:
            flat["test/kd_gain"] = metrics["kd_gain"]
        if "kd_gain_ci95" in metrics:
            flat["test/kd_gain_lo"], flat["test/kd_gain_hi"] = metrics["kd_gain_ci95"]
        if "student_int8" in metrics:
            flat["test/int8_drop"] = metrics["student_int8"]["drop"]
        for k, v in flat.items():
            client.log_metric(run_id, k, float(v))
        client.log_artifact(run_id, str(metrics_path), artifact_path="reports")
        for table in tables:
            client.log_artifact(run_id, str(table), artifact_path="reports")
        if report_path is not None:
            client.log_artifact(run_id, str(report_path), artifact_path="report")
            for fig in figures:
                client.log_artifact(run_id, str(fig), artifact_path=f"report/{fig.parent.name}")
    base_run = _tracked_run(folders["student_no_kd"]) if "student_no_kd" in folders else None
    if base_run:
        # the same metric names as the distill runs', so MLflow's compare view lines the baseline up with them
        no_kd = metrics["student_no_kd"]
        for key in QUALITY_KEYS:
            if key in no_kd:
                client.log_metric(base_run, f"test/student_{key}", float(no_kd[key]))
        for k, v in no_kd.get("ccc", {}).items():
            client.log_metric(base_run, f"test/student_ccc_{k}", float(v))


def _cell(value: float | None, fmt: str, width: int) -> str:
    """A right-aligned table cell; ``unknown`` for a teacher's missing figure."""
    return f"{'unknown':>{width}}" if value is None else f"{value:>{width}{fmt}}"


def summary(metrics: dict[str, Any]) -> str:
    """A short human-readable summary of ``metrics.json`` (with the no-KD student and KD gain if present)."""
    models = [m for m in ("teacher", "student", "student_no_kd", "student_int8") if m in metrics]
    key = "ccc_mean" if "ccc_mean" in metrics["student"] else "accuracy"
    unit = "CCC" if key == "ccc_mean" else "accuracy"
    lines = [
        f"{'':14}{'CCC mean' if key == 'ccc_mean' else 'accuracy':>10}{'params':>12}{'size MB':>10}"
        f"{'latency ms':>12}"
    ]
    rows = [(n, metrics[n]) for n in models]
    rows[1:1] = [(f"teacher {n}", m) for n, m in metrics.get("teacher_members", {}).items()]
    for name, m in rows:
        label = {"student_no_kd": "student no-KD", "student_int8": "student int8"}.get(name, name)
        lines.append(
            f"{label:14}{_cell(m[key], '.4f', 10)}{_cell(m['params'], ',', 12)}"
            f"{_cell(m['size_mb'], '.2f', 10)}{_cell(m['latency_ms'], '.2f', 12)}"
        )
    ratios = {
        "retention": f"retention {{:.3f}} of the teacher's {unit}",
        "compression": "compression {:.1f}x",
        "speedup": "speedup {:.2f}x (CPU, batch 1)",
    }
    known = ", ".join(f.format(metrics[k]) for k, f in ratios.items() if metrics[k] is not None)
    lines.append(known or "retention, compression and speedup unknown (the teacher is a file of outputs)")
    if key == "ccc_mean":
        targets = ", ".join(f"{k} {v:.3f}" for k, v in metrics["student"]["ccc"].items())
        lines.append(f"student CCC per target: {targets}")
    else:
        lines.append(f"student macro F1 {metrics['student']['macro_f1']:.3f}")
    if "student_int8" in metrics:
        q = metrics["student_int8"]
        verdict = "deployable" if q["deployable"] else "NOT deployable: ship the fp32 ONNX file"
        lines.append(
            f"int8 ONNX: {unit} drop {q['drop']:+.4f} (max {q['max_drop']:g}), {q['size_mb']:.2f} MB vs "
            f"{q['fp32_onnx_size_mb']:.2f} MB and {q['latency_ms']:.2f} ms vs "
            f"{q['fp32_onnx_latency_ms']:.2f} ms fp32 ONNX ({verdict})"
        )
    if "kd_gain" in metrics:
        gain = metrics["kd_gain"]
        if "kd_gain_ci95" in metrics:
            lo, hi = metrics["kd_gain_ci95"]
            verdict = f"95% CI [{lo:+.4f}, {hi:+.4f}]: {gain_verdict((lo, hi))}"
        else:  # metrics.json from before the bootstrap
            verdict = (
                "KD helps" if gain > 0 else "KD does not help here: the no-KD student is as good or better"
            )
        lines.append(
            f"KD gain {gain:+.4f} {unit} over the same student trained without a teacher ({verdict})"
        )
    lines += budget_lines(metrics)
    return "\n".join(lines)
