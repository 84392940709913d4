"""The train_teacher stage: a ViT trained on the spectrograms, saved with its predictions for distillation."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import pandas as pd
import torch

from audiokd import distributed
from audiokd.augment import center_frames, make_augment
from audiokd.checkpoint import open_checkpoint
from audiokd.config import (
    AugmentConfig,
    DataConfig,
    RuntimeConfig,
    TeacherConfig,
    TrackingConfig,
    section_to_dict,
)
from audiokd.data.features import FeatureSet, check_targets
from audiokd.distill import teacher_cache
from audiokd.interrupts import deferred
from audiokd.io import atomic_dir, file_sha256, write_json
from audiokd.models import count_params, predict, save_labels
from audiokd.models.teacher import build_teacher
from audiokd.tracking import MetricBuffer, log_run_inputs, setup, stage_run, tracking_uri
from audiokd.training import fit, resolve_device, seed_everything, settings_from

log = logging.getLogger(__name__)


def train_teacher(
    data: DataConfig,
    teacher: TeacherConfig,
    tracking: TrackingConfig,
    runtime: RuntimeConfig,
    augment: AugmentConfig,
    features_dir: str | Path,
    out_dir: str | Path,
    params_file: str | Path | None = None,
) -> dict:
    """Train the teacher on the hard loss, keep the best epoch by validation quality, save it and its outputs.

    Writes ``out_dir``: ``config.json`` + ``model.safetensors`` (``save_pretrained``), ``predictions/``
    (the teacher cache), ``history.csv`` and ``meta.json`` (MLflow run id, best epoch, parameter count,
    weights sha256). Checkpoints every epoch and resumes a killed run (:mod:`audiokd.checkpoint`).
    """
    device = resolve_device(runtime.device)
    with distributed.session(runtime, device) as (d, device):
        if d.main:
            setup(tracking.experiment)  # an unreachable or unwritable store fails here, before any training
        fs = FeatureSet.load(features_dir)
        check_targets(data, fs)
        if runtime.num_threads:
            torch.set_num_threads(runtime.num_threads)
        seed_everything(runtime.seed)
        task = fs.task
        model = build_teacher(teacher, fs.input_shape, task)
        n_params = count_params(model)
        train, val = fs.split("train"), fs.split("val")
        settings = settings_from(
            runtime,
            device,
            d,
            epochs=teacher.epochs,
            batch_size=teacher.batch_size,
            lr=teacher.lr,
            weight_decay=teacher.weight_decay,
            desc="teacher",
        )
        params = {
            "data": section_to_dict(data),
            "teacher": section_to_dict(teacher),
            "runtime": section_to_dict(runtime),
            "augment": section_to_dict(augment),
        }
        aug = make_augment(augment, fs, train.x.shape[-1], runtime.seed + d.rank)
        ckpt = open_checkpoint(
            "train_teacher",
            {**params, "tracking": section_to_dict(tracking), "tracking_uri": tracking_uri()},
            [features_dir, teacher.init_checkpoint],
            owner=d.main,
        )

        def objective(
            net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor
        ) -> dict[str, torch.Tensor]:
            hard = task.hard_loss(net(pixel_values=x).logits, y)
            return {"hard": hard, "total": hard}

        if not d.main:  # the other ranks train their shards and write nothing
            fit(model, objective, train, val, task, settings, None, checkpoint=ckpt, augment=aug)
            return {}
        log.info(
            "teacher: ViT %.2fM parameters, input %s, %d train / %d val clips",
            n_params / 1e6,
            fs.input_shape,
            len(train),
            len(val),
        )
        with stage_run("train_teacher", tracking.experiment, "teacher", params, run_id=ckpt.run_id) as run:
            ckpt.run_id = run.info.run_id
            log_run_inputs(params_file, n_params, resumed=ckpt.state is not None)
            buf = MetricBuffer()
            result = fit(model, objective, train, val, task, settings, buf, checkpoint=ckpt, augment=aug)
            with deferred():
                mlflow.log_metrics(
                    {f"best/val_{task.primary}": result.best_score, "best/epoch": result.best_epoch}
                )
            model.cpu()
            meta = {
                "run_id": run.info.run_id,
                "tracking_uri": tracking_uri(),
                "experiment": tracking.experiment,
                "best_epoch": result.best_epoch,
                "task": task.kind,
                f"val_{task.primary}": result.best_score,
                "params": n_params,
                "input_shape": list(fs.input_shape),
                "targets": fs.targets,
            }
            with atomic_dir(out_dir) as tmp:
                model.save_pretrained(tmp)
                save_labels(tmp, fs.task)
                meta["weights_sha256"] = file_sha256(tmp / "model.safetensors")
                # cached outputs: on the centre-cropped, un-augmented inputs distill sees without augmentation
                outputs = {
                    "train": predict(model, center_frames(train.x, fs.frames)),
                    "val": predict(model, val.x),
                }
                key = teacher_cache.cache_key(tmp / teacher_cache.WEIGHTS, Path(features_dir))
                teacher_cache.save(tmp / "predictions", outputs, fs.meta, key)
                pd.DataFrame(result.history).to_csv(tmp / "history.csv", index=False)
                write_json(tmp / "meta.json", meta)
            with deferred():
                mlflow.log_artifacts(str(out_dir), artifact_path="teacher")
        ckpt.discard()
        log.info("teacher: best epoch %d, val %s %.4f", result.best_epoch, task.primary, result.best_score)
        return meta
