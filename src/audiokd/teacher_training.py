"""Teacher training: one ``teacher.arch`` teacher (from scratch or ``teacher.pretrained``) or
``teacher.folds`` fold teachers, saved with their outputs for distill.

- One teacher (the default): trained on the train split, best epoch by validation quality; its outputs on
  every split are cached (:mod:`audiokd.distill.teacher_cache`).
- Fold teachers (``teacher.folds = k >= 2``): the train split is cut into k folds (whole ``group``s when the
  features carry them, else clips; :func:`audiokd.teaching.folds.assign_folds`); teacher i trains on the other
  k - 1 folds and predicts fold i. The cached train outputs are therefore out of fold: no clip's target comes
  from a teacher that saw it. Val, test (every other split) get the mean of the k fold teachers: each saw
  (k - 1) / k of the data and their mean is a k-model ensemble, which usually beats one teacher, at no extra
  training (a full teacher on all clips would be a (k + 1)-th training run).

The same function trains an ensemble member (``member``: its own MLflow stage tag and checkpoints).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch

from audiokd import distributed
from audiokd.augment import center_frames, make_augment
from audiokd.checkpoint import Checkpointer, open_checkpoint
from audiokd.config import (
    AugmentConfig,
    DataConfig,
    RuntimeConfig,
    TeacherConfig,
    TrackingConfig,
    section_to_dict,
)
from audiokd.data.features import FeatureSet, SplitData, check_targets
from audiokd.distill import teacher_cache
from audiokd.interrupts import deferred
from audiokd.io import atomic_dir, file_sha256, write_json
from audiokd.models import count_params, predict, save_labels
from audiokd.models.teacher import build_teacher, resolve_pretrained
from audiokd.teaching.combine import mean_outputs
from audiokd.teaching.folds import assign_folds, train_groups
from audiokd.tracking import MetricBuffer, log_run_inputs, setup, stage_run, tracking_uri
from audiokd.training import FitResult, fit, passes_for, resolve_device, seed_everything, settings_from

log = logging.getLogger(__name__)

Save = Callable[[torch.nn.Module, FitResult, dict[str, Any]], None]


@dataclass
class _Job:
    """What every teacher fit of one stage run shares."""

    data: DataConfig
    teacher: TeacherConfig
    tracking: TrackingConfig
    runtime: RuntimeConfig
    augment: AugmentConfig
    features_dir: Path
    params_file: str | Path | None
    fs: FeatureSet
    d: distributed.Dist
    device: torch.device
    member: str | None

    @property
    def stage(self) -> str:
        """The MLflow ``stage`` tag and checkpoint name: the DVC stage that runs this."""
        return "teacher_member" if self.member else "train_teacher"

    @property
    def checkpoint_name(self) -> str:
        """One checkpoint folder per member, so members can train side by side."""
        return f"teacher_member-{self.member}" if self.member else "train_teacher"

    @property
    def label(self) -> str:
        """Run name and progress-bar label."""
        return f"teacher {self.member}" if self.member else "teacher"

    @property
    def params(self) -> dict[str, Any]:
        """The params sections this teacher depends on, as logged to MLflow."""
        return {
            "data": section_to_dict(self.data),
            "teacher": section_to_dict(self.teacher),
            "runtime": section_to_dict(self.runtime),
            "augment": section_to_dict(self.augment),
        }

    def inputs(self) -> dict[str, SplitData]:
        """Every split (``unlabeled`` too, when the features have it: distill trains on the teacher's outputs
        for those clips) at the model's input width (train clips may be stored wider for random crops)."""
        return {s: self.fs.split(s) for s in self.fs.meta["counts"]}


def train_teacher(
    data: DataConfig,
    teacher: TeacherConfig,
    tracking: TrackingConfig,
    runtime: RuntimeConfig,
    augment: AugmentConfig,
    features_dir: str | Path,
    out_dir: str | Path,
    params_file: str | Path | None = None,
    member: str | None = None,
) -> dict:
    """Train the teacher (or ``teacher.folds`` fold teachers) on the hard loss and save it with its outputs.

    Writes ``out_dir``: one teacher: ``config.json`` + ``model.safetensors`` (``save_pretrained``),
    ``predictions/`` (the teacher cache: every split), ``history.csv`` and ``meta.json`` (MLflow run id, best
    epoch, parameter count, weights sha256). Fold teachers: ``folds/<i>/`` (each laid out as one teacher),
    ``folds.json`` (the fold of every train clip), ``predictions/`` and ``meta.json``. Each training run
    checkpoints every epoch and resumes a killed run (:mod:`audiokd.checkpoint`); fold checkpoints stay until
    the last fold is saved, so a rerun skips the folds already trained.
    """
    device = resolve_device(runtime.device)
    with distributed.session(runtime, device) as (d, device):
        if d.main:
            setup(tracking.experiment)  # an unreachable or unwritable store fails here, before any training
        fs = FeatureSet.load(features_dir)
        check_targets(data, fs)
        if runtime.num_threads:
            torch.set_num_threads(runtime.num_threads)
        job = _Job(
            data, teacher, tracking, runtime, augment, Path(features_dir), params_file, fs, d, device, member
        )
        if teacher.folds >= 2:
            return _train_folds(job, Path(out_dir))
        return _train_one(job, Path(out_dir))


def _fit(
    job: _Job, train: SplitData, name: str, label: str, tags: dict[str, str], save: Save
) -> Checkpointer:
    """Build and train one teacher on ``train``; on rank 0 call ``save`` inside its MLflow run."""
    seed_everything(job.runtime.seed)
    fs, task = job.fs, job.fs.task
    pretrained = resolve_pretrained(job.teacher.pretrained)  # a hub id without network fails here
    model = build_teacher(job.teacher, fs.input_shape, task, audio=fs.meta.get("audio"))
    n_params = count_params(model)
    val = fs.split("val")
    settings = settings_from(
        job.runtime,
        job.device,
        job.d,
        epochs=job.teacher.epochs,
        batch_size=job.teacher.batch_size,
        lr=job.teacher.lr,
        weight_decay=job.teacher.weight_decay,
        grad_clip=job.teacher.grad_clip,
        ema_decay=job.teacher.ema_decay,
        desc=label,
        passes=passes_for(len(train), job.teacher.batch_size, job.teacher.epochs, job.teacher.min_steps),
    )
    aug = make_augment(job.augment, fs, train.x.shape[-1], job.runtime.seed + job.d.rank)
    ckpt = open_checkpoint(
        name,
        {**job.params, "tracking": section_to_dict(job.tracking), "tracking_uri": tracking_uri()},
        [job.features_dir, pretrained or ""],  # resume only from the same checkpoint content
        owner=job.d.main,
    )

    def objective(
        net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        hard = task.hard_loss(net(pixel_values=x).logits, y)
        return {"hard": hard, "total": hard}

    if not job.d.main:  # the other ranks train their shards and write nothing
        fit(model, objective, train, val, task, settings, None, checkpoint=ckpt, augment=aug)
        return ckpt
    log.info(
        "%s: %s %.2fM parameters%s, input %s, %d train / %d val clips, %d epochs of %d pass(es)",
        label,
        job.teacher.arch,
        n_params / 1e6,
        f" from {job.teacher.pretrained}" if pretrained else "",
        fs.input_shape,
        len(train),
        len(val),
        settings.epochs,
        settings.passes,
    )
    with stage_run(job.stage, job.tracking.experiment, label, job.params, tags, run_id=ckpt.run_id) as run:
        ckpt.run_id = run.info.run_id
        log_run_inputs(job.params_file, n_params, resumed=ckpt.state is not None)
        result = fit(
            model, objective, train, val, task, settings, MetricBuffer(), checkpoint=ckpt, augment=aug
        )
        with deferred():
            mlflow.log_metrics(
                {f"best/val_{task.primary}": result.best_score, "best/epoch": result.best_epoch}
            )
        model.cpu()
        meta = {
            "kind": "single",
            **({"member": job.member} if job.member else {}),
            "run_id": run.info.run_id,
            "tracking_uri": tracking_uri(),
            "experiment": job.tracking.experiment,
            "best_epoch": result.best_epoch,
            "passes": settings.passes,  # per epoch (teacher.min_steps)
            "task": task.kind,
            f"val_{task.primary}": result.best_score,
            "params": n_params,
            "arch": job.teacher.arch,
            "pretrained": str(pretrained or ""),
            "input_shape": list(fs.input_shape),
            "targets": fs.targets,
        }
        save(model, result, meta)
    log.info("%s: best epoch %d, val %s %.4f", label, result.best_epoch, task.primary, result.best_score)
    return ckpt


def _save_model(folder: Path, model: torch.nn.Module, fs: FeatureSet, result: FitResult, meta: dict) -> None:
    """A trained teacher's files: weights and config, labels, per-epoch history, ``meta.json``."""
    model.save_pretrained(folder)
    save_labels(folder, fs.task)
    meta["weights_sha256"] = file_sha256(folder / teacher_cache.WEIGHTS)
    pd.DataFrame(result.history).to_csv(folder / "history.csv", index=False)
    write_json(folder / "meta.json", meta)


def _train_one(job: _Job, out_dir: Path) -> dict:
    inputs = job.inputs()
    saved: dict[str, Any] = {}

    def save(model: torch.nn.Module, result: FitResult, meta: dict) -> None:
        with atomic_dir(out_dir) as tmp:
            _save_model(tmp, model, job.fs, result, meta)
            # cached outputs: on the centre-cropped, un-augmented inputs distill sees without augmentation
            outputs = {s: predict(model, center_frames(v.x, job.fs.frames)) for s, v in inputs.items()}
            key = teacher_cache.cache_key(tmp, job.features_dir)
            teacher_cache.save(tmp / teacher_cache.FOLDER, outputs, job.fs.meta, key)
        with deferred():
            mlflow.log_artifacts(str(out_dir), artifact_path="teacher")
        saved.update(meta)

    tags = {"teacher.member": job.member} if job.member else {}
    ckpt = _fit(job, inputs["train"], job.checkpoint_name, job.label, tags, save)
    if job.d.main:
        ckpt.discard()
    return saved


def _train_folds(job: _Job, out_dir: Path) -> dict:
    k, fs, task = job.teacher.folds, job.fs, job.fs.task
    inputs = job.inputs()
    train = inputs["train"]
    groups = train_groups(job.features_dir)
    fold = assign_folds(len(train), k, job.data.seed, groups)
    oof = torch.zeros(len(train), task.num_outputs)
    others: dict[str, list[torch.Tensor]] = {s: [] for s in inputs if s != "train"}
    metas: list[dict] = []
    ckpts: list[Checkpointer] = []
    writing = atomic_dir(out_dir) if job.d.main else contextlib.nullcontext(Path())
    with writing as tmp:
        for i in range(k):
            keep, held = np.flatnonzero(fold != i), np.flatnonzero(fold == i)
            part = SplitData(train.x[torch.from_numpy(keep)], train.y[torch.from_numpy(keep)])

            def save(
                model: torch.nn.Module, result: FitResult, meta: dict, i: int = i, held: np.ndarray = held
            ) -> None:
                folder = tmp / "folds" / str(i)
                folder.mkdir(parents=True)
                meta.update(fold=i, train_clips=int(len(fold) - len(held)))
                _save_model(folder, model, fs, result, meta)
                # the clips this teacher never saw: their cached targets come from it alone
                rows = torch.from_numpy(held)
                oof[rows] = predict(model, center_frames(train.x[rows], fs.frames))
                for s in others:
                    others[s].append(predict(model, center_frames(inputs[s].x, fs.frames)))
                with deferred():
                    mlflow.log_artifacts(str(folder), artifact_path="teacher")
                metas.append(meta)

            tags = {"teacher.fold": str(i), **({"teacher.member": job.member} if job.member else {})}
            name, label = f"{job.checkpoint_name}-fold{i}", f"{job.label} fold {i}/{k}"
            ckpts.append(_fit(job, part, name, label, tags, save))
        if not job.d.main:
            return {}
        outputs = {"train": oof, **{s: mean_outputs(v, task) for s, v in others.items()}}
        write_json(
            tmp / "folds.json",
            {"k": k, "by": "group" if groups is not None else "clip", "fold": fold.tolist()},
        )
        teacher_cache.save(
            tmp / teacher_cache.FOLDER, outputs, fs.meta, teacher_cache.cache_key(tmp, job.features_dir)
        )
        quality = task.flat_quality(outputs["val"].numpy(), inputs["val"].y.numpy())[task.primary]
        meta = {
            "kind": "folds",
            **({"member": job.member} if job.member else {}),
            "folds": k,
            "run_ids": [m["run_id"] for m in metas],
            "task": task.kind,
            f"val_{task.primary}": quality,
            "params": sum(m["params"] for m in metas),
            "input_shape": list(fs.input_shape),
            "targets": fs.targets,
        }
        write_json(tmp / "meta.json", meta)
    for ckpt in ckpts:
        ckpt.discard()
    log.info("%s: %d fold teachers; val %s of their mean %.4f", job.label, k, task.primary, quality)
    return meta
