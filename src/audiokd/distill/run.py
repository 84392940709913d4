"""The distill stage: train the student against labels and the teacher (cached outputs, or live features)."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import pandas as pd
import torch

from audiokd.checkpoint import open_checkpoint
from audiokd.config import (
    DataConfig,
    DistillConfig,
    RuntimeConfig,
    StudentConfig,
    TrackingConfig,
    section_to_dict,
)
from audiokd.data.features import FeatureSet
from audiokd.distill import teacher_cache
from audiokd.distill.objective import build_objective
from audiokd.interrupts import deferred
from audiokd.io import atomic_dir, file_sha256, read_json, write_json
from audiokd.models import LogitsOnly, count_params
from audiokd.models.student import build_student
from audiokd.teacher_training import check_targets
from audiokd.tracking import MetricBuffer, log_torch_model, setup, stage_run, tracking_uri
from audiokd.training import FitSettings, fit, resolve_device, seed_everything

log = logging.getLogger(__name__)


def run_name(cfg: DistillConfig) -> str:
    """A run name that says the KD settings, so the MLflow compare view lines runs up."""
    return (
        f"distill T={cfg.temperature:g} a={cfg.alpha:g} b={cfg.beta:g} g={cfg.gamma:g} soft={cfg.soft_loss}"
    )


def distill(
    data: DataConfig,
    student: StudentConfig,
    cfg: DistillConfig,
    tracking: TrackingConfig,
    runtime: RuntimeConfig,
    features_dir: str | Path,
    teacher_dir: str | Path,
    out_dir: str | Path,
    params_file: str | Path | None = None,
) -> dict:
    """Train the student with ``total = alpha * hard + (1 - alpha) * soft`` (:mod:`audiokd.distill.losses`).

    The teacher's outputs come from its cache (computed once by train_teacher), so each step runs one
    forward pass, the student's. Writes ``out_dir`` (``save_pretrained`` files, ``history.csv``,
    ``meta.json``) and logs the student to MLflow as a model named ``student``. Checkpoints every epoch
    and resumes a killed run (:mod:`audiokd.checkpoint`).
    """
    setup(tracking.experiment)  # an unreachable or unwritable store fails here, before any training
    fs = FeatureSet.load(features_dir)
    check_targets(data, fs)
    teacher_dir = Path(teacher_dir)
    teacher_meta = read_json(teacher_dir / "meta.json")
    inner_on = cfg.beta > 0 or cfg.gamma > 0
    cached = (
        teacher_cache.load(teacher_dir / "predictions", fs.meta) if cfg.alpha < 1 and not inner_on else {}
    )
    if cfg.soft_loss == "mse" and cfg.temperature != 1.0 and cfg.alpha < 1:
        log.warning("distill.temperature = %g has no effect with distill.soft_loss = mse", cfg.temperature)
    device = resolve_device(runtime.device)
    if runtime.num_threads:
        torch.set_num_threads(runtime.num_threads)
    seed_everything(runtime.seed)
    model = build_student(student, fs.input_shape, len(fs.targets))
    n_params = count_params(model)
    train, val = fs.split("train"), fs.split("val")
    model.to(device)
    plan = build_objective(cfg, model, teacher_dir, cached.get("train"), train.x[:2].to(device), device)

    settings = FitSettings(
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        seed=runtime.seed,
        device=device,
        desc="distill",
    )
    params = {
        "data": section_to_dict(data),
        "student": section_to_dict(student),
        "distill": section_to_dict(cfg),
        "runtime": section_to_dict(runtime),
    }
    ckpt = open_checkpoint(
        "distill",
        {**params, "tracking": section_to_dict(tracking), "tracking_uri": tracking_uri()},
        [features_dir, teacher_dir],
    )
    tags = {
        "teacher_run_id": str(teacher_meta.get("run_id", "")),
        "kd.terms": ",".join(plan.terms),
        "kd.teacher": "live" if plan.live_teacher else "cached",
    }
    log.info(
        "student: %s %.2fM parameters (teacher %.2fM, %.1fx smaller)",
        student.arch,
        n_params / 1e6,
        teacher_meta["params"] / 1e6,
        teacher_meta["params"] / n_params,
    )
    with stage_run("distill", tracking.experiment, run_name(cfg), params, tags, run_id=ckpt.run_id) as run:
        ckpt.run_id = run.info.run_id
        with deferred():  # no signal half-way through a store write
            if params_file:  # first, so an unwritable artifact store fails before training
                mlflow.log_artifact(str(params_file))
            if ckpt.state is None:  # a resumed run has it already
                mlflow.log_metric("model/params", n_params)
        result = fit(
            model, plan.objective, train, val, fs.targets, settings, MetricBuffer(), plan.extra_modules, ckpt
        )
        with deferred():
            mlflow.log_metrics({"best/val_ccc_mean": result.best_score, "best/epoch": result.best_epoch})
        model.cpu().eval()
        model_uri = log_torch_model(LogitsOnly(model).eval(), "student", val.x[:1].numpy())
        meta = {
            "run_id": run.info.run_id,
            "tracking_uri": tracking_uri(),
            "experiment": tracking.experiment,
            "model_uri": model_uri,
            "teacher_run_id": teacher_meta.get("run_id"),
            "best_epoch": result.best_epoch,
            "val_ccc_mean": result.best_score,
            "params": n_params,
            "input_shape": list(fs.input_shape),
            "targets": fs.targets,
        }
        with atomic_dir(out_dir) as tmp:
            model.save_pretrained(tmp)
            meta["weights_sha256"] = file_sha256(tmp / "model.safetensors")
            pd.DataFrame(result.history).to_csv(tmp / "history.csv", index=False)
            write_json(tmp / "meta.json", meta)
    ckpt.discard()
    log.info("student: best epoch %d, val CCC %.4f", result.best_epoch, result.best_score)
    return meta
