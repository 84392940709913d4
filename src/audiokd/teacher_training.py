"""The train_teacher stage: a ViT trained on the spectrograms, saved with its predictions for distillation."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import pandas as pd
import torch

from audiokd.checkpoint import open_checkpoint
from audiokd.config import (
    ConfigError,
    DataConfig,
    RuntimeConfig,
    TeacherConfig,
    TrackingConfig,
    section_to_dict,
)
from audiokd.data.features import FeatureSet
from audiokd.distill import teacher_cache
from audiokd.distill.losses import hard_mse
from audiokd.interrupts import deferred
from audiokd.io import atomic_dir, file_sha256, write_json
from audiokd.models import count_params, predict
from audiokd.models.teacher import build_teacher
from audiokd.tracking import MetricBuffer, setup, stage_run, tracking_uri
from audiokd.training import FitSettings, fit, resolve_device, seed_everything

log = logging.getLogger(__name__)


def check_targets(data: DataConfig, fs: FeatureSet) -> None:
    """The features must carry the targets params.yaml names."""
    if list(data.targets) != fs.targets:
        raise ConfigError(
            f"data.targets = {list(data.targets)} but the features hold {fs.targets}; "
            "rerun preprocess (dvc repro does)"
        )


def train_teacher(
    data: DataConfig,
    teacher: TeacherConfig,
    tracking: TrackingConfig,
    runtime: RuntimeConfig,
    features_dir: str | Path,
    out_dir: str | Path,
    params_file: str | Path | None = None,
) -> dict:
    """Train the teacher with MSE, keep the best epoch by validation CCC, save it and its predictions.

    Writes ``out_dir``: ``config.json`` + ``model.safetensors`` (``save_pretrained``), ``predictions/``
    (the teacher cache), ``history.csv`` and ``meta.json`` (MLflow run id, best epoch, parameter count,
    weights sha256). Checkpoints every epoch and resumes a killed run (:mod:`audiokd.checkpoint`).
    """
    setup(tracking.experiment)  # an unreachable or unwritable store fails here, before any training
    fs = FeatureSet.load(features_dir)
    check_targets(data, fs)
    device = resolve_device(runtime.device)
    if runtime.num_threads:
        torch.set_num_threads(runtime.num_threads)
    seed_everything(runtime.seed)
    model = build_teacher(teacher, fs.input_shape, len(fs.targets))
    n_params = count_params(model)
    train, val = fs.split("train"), fs.split("val")
    settings = FitSettings(
        epochs=teacher.epochs,
        batch_size=teacher.batch_size,
        lr=teacher.lr,
        weight_decay=teacher.weight_decay,
        seed=runtime.seed,
        device=device,
        desc="teacher",
    )
    params = {
        "data": section_to_dict(data),
        "teacher": section_to_dict(teacher),
        "runtime": section_to_dict(runtime),
    }
    ckpt = open_checkpoint(
        "train_teacher",
        {**params, "tracking": section_to_dict(tracking), "tracking_uri": tracking_uri()},
        [features_dir, teacher.init_checkpoint],
    )

    def objective(
        net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        out = net(pixel_values=x).logits
        hard = hard_mse(out, y)
        return {"hard": hard, "total": hard}

    log.info(
        "teacher: ViT %.2fM parameters, input %s, %d train / %d val clips",
        n_params / 1e6,
        fs.input_shape,
        len(train),
        len(val),
    )
    with stage_run("train_teacher", tracking.experiment, "teacher", params, run_id=ckpt.run_id) as run:
        ckpt.run_id = run.info.run_id
        with deferred():  # no signal half-way through a store write
            if params_file:  # first, so an unwritable artifact store fails before training
                mlflow.log_artifact(str(params_file))
            if ckpt.state is None:  # a resumed run has it already
                mlflow.log_metric("model/params", n_params)
        buf = MetricBuffer()
        result = fit(model, objective, train, val, fs.targets, settings, buf, checkpoint=ckpt)
        with deferred():
            mlflow.log_metrics({"best/val_ccc_mean": result.best_score, "best/epoch": result.best_epoch})
        model.cpu()
        meta = {
            "run_id": run.info.run_id,
            "tracking_uri": tracking_uri(),
            "experiment": tracking.experiment,
            "best_epoch": result.best_epoch,
            "val_ccc_mean": result.best_score,
            "params": n_params,
            "input_shape": list(fs.input_shape),
            "targets": fs.targets,
        }
        with atomic_dir(out_dir) as tmp:
            model.save_pretrained(tmp)
            meta["weights_sha256"] = file_sha256(tmp / "model.safetensors")
            teacher_cache.save(
                tmp / "predictions", {"train": predict(model, train.x), "val": predict(model, val.x)}, fs.meta
            )
            pd.DataFrame(result.history).to_csv(tmp / "history.csv", index=False)
            write_json(tmp / "meta.json", meta)
        with deferred():
            mlflow.log_artifacts(str(out_dir), artifact_path="teacher")
    ckpt.discard()
    log.info("teacher: best epoch %d, val CCC %.4f", result.best_epoch, result.best_score)
    return meta
