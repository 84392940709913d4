"""The evaluate stage: teacher vs student on the test split (quality, size, latency), metrics, plot data."""

from __future__ import annotations

import logging
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch

from audiokd.config import DataConfig, EvaluateConfig, TrackingConfig
from audiokd.data.features import FeatureSet, check_targets
from audiokd.io import read_json, write_json
from audiokd.models import count_params, predict, weights_size_mb
from audiokd.models.student import load_student
from audiokd.models.teacher import load_teacher
from audiokd.tracking import setup

log = logging.getLogger(__name__)

QUALITY_KEYS = ("ccc_mean", "accuracy", "macro_f1")


@torch.no_grad()
def latency_ms(
    model: torch.nn.Module, example: torch.Tensor, repeats: int, warmup: int, threads: int
) -> float:
    """Median wall time of one forward pass on the CPU, in milliseconds, after ``warmup`` passes."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
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
    return float(statistics.median(times))


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
) -> dict[str, Any]:
    """Score both models on the test split; write ``metrics.json`` (schema in the design notes) and plot data.

    ``plots_dir`` receives ``{teacher,student}_history.csv`` (per-epoch losses) and
    ``{teacher,student}_predictions.csv`` (target, label, predicted). The test metrics are also logged to
    the student's MLflow run, with ``metrics.json`` as an artifact.
    """
    fs = FeatureSet.load(features_dir)
    check_targets(data, fs)
    teacher_dir, student_dir, plots_dir = Path(teacher_dir), Path(student_dir), Path(plots_dir)
    test = fs.split("test")
    y_true = fs.raw_targets("test")
    teacher, student = load_teacher(teacher_dir), load_student(student_dir)
    t_rep, t_pred = _model_report(teacher, teacher_dir, fs, test.x, y_true, cfg)
    s_rep, s_pred = _model_report(student, student_dir, fs, test.x, y_true, cfg)
    primary = fs.task.primary
    metrics = {
        "teacher": t_rep,
        "student": s_rep,
        "retention": s_rep[primary] / t_rep[primary] if t_rep[primary] else float("nan"),
        "compression": t_rep["params"] / s_rep["params"],
        "speedup": t_rep["latency_ms"] / s_rep["latency_ms"],
    }
    plots_dir.mkdir(parents=True, exist_ok=True)
    for name, folder, pred in (("teacher", teacher_dir, t_pred), ("student", student_dir, s_pred)):
        shutil.copyfile(folder / "history.csv", plots_dir / f"{name}_history.csv")
        _predictions_table(pred, y_true, fs.targets).to_csv(
            plots_dir / f"{name}_predictions.csv", index=False
        )
    write_json(metrics_path, metrics)
    _log_to_student_run(student_dir, tracking, metrics, Path(metrics_path))
    return metrics


def _log_to_student_run(
    student_dir: Path, tracking: TrackingConfig, metrics: dict[str, Any], metrics_path: Path
) -> None:
    """Attach the test metrics to the distill run, so MLflow compares runs on test quality too."""
    run_id = read_json(student_dir / "meta.json").get("run_id")
    if not run_id:
        return
    setup(tracking.experiment)
    flat = {
        "test/retention": metrics["retention"],
        "test/compression": metrics["compression"],
        "test/speedup": metrics["speedup"],
    }
    for model in ("teacher", "student"):
        for key, value in metrics[model].items():
            if key in QUALITY_KEYS:
                flat[f"test/{model}_{key}"] = value
    flat.update({f"test/student_ccc_{k}": v for k, v in metrics["student"].get("ccc", {}).items()})
    client = mlflow.MlflowClient()
    for k, v in flat.items():
        client.log_metric(run_id, k, float(v))
    client.log_artifact(run_id, str(metrics_path), artifact_path="reports")


def summary(metrics: dict[str, Any]) -> str:
    """A short human-readable summary of ``metrics.json`` (regression or classification)."""
    t, s = metrics["teacher"], metrics["student"]
    key = "ccc_mean" if "ccc_mean" in s else "accuracy"
    title = "CCC mean" if key == "ccc_mean" else "accuracy"
    lines = [f"{'':10}{title:>10}{'params':>12}{'size MB':>10}{'latency ms':>12}"]
    for name, m in (("teacher", t), ("student", s)):
        lines.append(
            f"{name:10}{m[key]:>10.4f}{m['params']:>12,}{m['size_mb']:>10.2f}{m['latency_ms']:>12.2f}"
        )
    lines.append(
        f"retention {metrics['retention']:.3f} of the teacher's {title}, compression "
        f"{metrics['compression']:.1f}x, speedup {metrics['speedup']:.2f}x (CPU, batch 1)"
    )
    if key == "ccc_mean":
        targets = ", ".join(f"{k} {v:.3f}" for k, v in s["ccc"].items())
        lines.append(f"student CCC per target: {targets}")
    else:
        lines.append(f"student macro F1 {s['macro_f1']:.3f} (teacher {t['macro_f1']:.3f})")
    return "\n".join(lines)
