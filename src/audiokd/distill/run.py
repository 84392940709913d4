"""The distill stage: train the student against labels and the teacher (cached outputs, or live features)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import mlflow
import pandas as pd
import torch

from audiokd import distributed
from audiokd.augment import ViewBank, center_frames, make_augment
from audiokd.checkpoint import open_checkpoint
from audiokd.config import (
    AugmentConfig,
    ConfigError,
    DataConfig,
    DistillConfig,
    RuntimeConfig,
    StudentConfig,
    TrackingConfig,
    section_to_dict,
)
from audiokd.data.features import FeatureSet, check_targets
from audiokd.data.unlabeled import UNLABELED
from audiokd.distill import teacher_cache
from audiokd.distill.losses import resolve_soft_loss
from audiokd.distill.objective import build_objective
from audiokd.distill.unlabeled import budget, training_set
from audiokd.export import INT8_FILE, ONNX_FILE, export_student
from audiokd.interrupts import deferred
from audiokd.io import atomic_dir, file_sha256, read_json, write_json
from audiokd.models import LogitsOnly, count_params, save_labels
from audiokd.models.student import build_student
from audiokd.tasks import Task
from audiokd.teaching.live import augment_keys, check_live, score_views
from audiokd.tracking import MetricBuffer, log_run_inputs, log_torch_model, setup, stage_run, tracking_uri
from audiokd.training import fit, passes_for, resolve_device, seed_everything, settings_from

log = logging.getLogger(__name__)


def _as_list(v: object) -> list:
    return list(v) if isinstance(v, list) else [v]


def run_name(cfg: DistillConfig, task: Task | None = None) -> str:
    """A run name that says the KD settings (the soft loss ``auto`` stands for), so the MLflow compare view
    lines runs up."""
    soft = resolve_soft_loss(cfg.soft_loss, task)
    return f"distill T={cfg.temperature:g} a={cfg.alpha:g} b={cfg.beta:g} g={cfg.gamma:g} soft={soft}"


def distill(
    data: DataConfig,
    student: StudentConfig,
    cfg: DistillConfig,
    tracking: TrackingConfig,
    runtime: RuntimeConfig,
    augment: AugmentConfig,
    features_dir: str | Path,
    teacher_dir: str | Path | None,
    out_dir: str | Path,
    params_file: str | Path | None = None,
    stage: str = "distill",
    passes: int | None = None,
) -> dict:
    """Train the student with ``total = alpha * hard + (1 - alpha) * soft`` (:mod:`audiokd.distill.losses`),
    on the labelled clips and, when the features have them, the unlabelled ones
    (:mod:`audiokd.distill.unlabeled`; ``meta.json`` records the ``budget``: clips, epochs, passes, steps).
    ``passes``: shuffled passes over the training clips per epoch (the baseline's matched budget); None = as
    many as ``distill.min_steps`` needs (:func:`audiokd.training.passes_for`), 1 when it is 0.

    For response-only KD without augmentation, or with ``augment.teacher_view`` clean, the teacher's outputs
    come from its cache (computed once by train_teacher), so each step runs one forward pass, the student's;
    feature/attention terms, or augmentation with ``teacher_view`` augmented, run the teacher live, once per
    step (:mod:`audiokd.distill.objective`). Writes ``out_dir``
    (``save_pretrained`` files, ``history.csv``, ``meta.json``) and logs the student to MLflow as a model
    named ``student``. Checkpoints every
    epoch and resumes a killed run (:mod:`audiokd.checkpoint`).

    ``teacher_dir=None`` trains without a teacher (needs ``alpha == 1`` and ``beta == gamma == 0``); ``stage``
    names the MLflow run's ``stage`` tag (the no-KD baseline passes ``baseline``, see
    :mod:`audiokd.distill.baseline`).
    """
    device = resolve_device(runtime.device)
    with distributed.session(runtime, device) as (d, device):
        if d.main:
            setup(tracking.experiment)  # an unreachable or unwritable store fails here, before any training
        fs = FeatureSet.load(features_dir)
        check_targets(data, fs)
        inner_on = cfg.beta > 0 or cfg.gamma > 0
        if teacher_dir is None and (cfg.alpha < 1 or inner_on):
            raise ValueError("distill: training without a teacher needs alpha = 1, beta = 0, gamma = 0")
        teacher_dir = Path(teacher_dir) if teacher_dir is not None else None
        teacher_meta = read_json(teacher_dir / "meta.json") if teacher_dir is not None else {}
        # unlabelled clips carry knowledge only through a teacher: without one (the baseline) they are unused
        with_pool = teacher_dir is not None and (cfg.alpha < 1 or inner_on) and fs.count(UNLABELED) > 0
        train, labelled_rows = training_set(fs, with_pool)
        val = fs.split("val")
        student_aug = augment.for_students()  # augment.students false: the teacher's alone
        aug = make_augment(student_aug, fs, train.x.shape[-1], runtime.seed + d.rank, labelled_rows)
        # augmented batches see the teacher live, unless augment.teacher_view = clean keeps its cached outputs
        # (or stored: its outputs on fixed views, scored below)
        live_aug = aug is not None and augment.teacher_view == "augmented"
        stored = aug is not None and augment.teacher_view == "stored" and teacher_dir is not None
        stored = stored and cfg.alpha < 1 and not inner_on
        if stored and train.x.shape[-1] > fs.frames:
            raise ConfigError(
                "augment.teacher_view = stored keeps views of the centre crop, but audio.random_crop draws "
                "other windows: turn audio.random_crop off or use teacher_view clean or augmented"
            )
        if teacher_dir is not None and (inner_on or (cfg.alpha < 1 and (live_aug or stored))):
            # an ensemble, fold teachers or a file of outputs may not run live: refuse before any training
            check_live(teacher_dir, inner_on, augment_keys(student_aug, train.x.shape[-1] > fs.frames))
        use_cache = teacher_dir is not None and cfg.alpha < 1 and not inner_on and not live_aug
        splits = ("train", "val", UNLABELED) if with_pool else ("train", "val")
        cached = teacher_cache.load(teacher_dir, Path(features_dir), fs.meta, splits) if use_cache else {}
        if with_pool and cached:
            cached["train"] = torch.cat([cached["train"], cached.pop(UNLABELED)])  # the rows' order
        if resolve_soft_loss(cfg.soft_loss, fs.task) == "mse" and cfg.temperature != 1.0 and cfg.alpha < 1:
            log.warning(
                "distill.temperature = %g has no effect with distill.soft_loss = mse", cfg.temperature
            )
        if runtime.num_threads:
            torch.set_num_threads(runtime.num_threads)
        if stored:
            assert aug is not None and teacher_dir is not None
            aug.bank = ViewBank(
                student_aug, len(train), augment.views, fs.input_shape[1], fs.frames, runtime.seed
            )
            started = time.perf_counter()
            cached["train"] = score_views(teacher_dir, fs.task, train.x, aug.bank, device)
            log.info(
                "%s: the teacher scored %d stored views of each of %d training clips in %.1f s",
                stage,
                augment.views,
                len(train),
                time.perf_counter() - started,
            )
        seed_everything(runtime.seed)
        model = build_student(student, fs.input_shape, fs.task)
        n_params = count_params(model)
        model.to(device)
        sample = center_frames(train.x[:2], fs.frames).to(device)
        plan = build_objective(
            cfg,
            model,
            teacher_dir,
            cached.get("train"),
            sample,
            device,
            fs.task,
            force_live=live_aug,
            labelled_rows=labelled_rows,
            mix=aug,
        )
        labelled = fs.count("train")
        if passes is None:
            passes = passes_for(len(train), cfg.batch_size, cfg.epochs, cfg.min_steps)
        clips = budget(labelled, len(train) - labelled, cfg.epochs, cfg.batch_size, passes)

        settings = settings_from(
            runtime,
            device,
            d,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            grad_clip=cfg.grad_clip,
            ema_decay=cfg.ema_decay,
            desc=stage,
            passes=passes,
        )
        params = {
            "data": section_to_dict(data),
            "student": section_to_dict(student),
            "distill": section_to_dict(cfg),
            "runtime": section_to_dict(runtime),
            "augment": section_to_dict(augment),
        }
        ckpt = open_checkpoint(
            stage,
            {**params, "tracking": section_to_dict(tracking), "tracking_uri": tracking_uri()},
            [features_dir, teacher_dir],
            owner=d.main,
        )
        if not d.main:  # the other ranks train their shards and write nothing
            fit(model, plan.objective, train, val, fs.task, settings, None, plan.extra_modules, aug, ckpt)
            return {}
        many = teacher_meta.get("run_ids") or []  # several teachers: fold runs, or members (each maybe folds)
        run_ids = [r for v in (many.values() if isinstance(many, dict) else many) for r in _as_list(v)]
        tags = {
            **({"teacher_run_id": str(teacher_meta["run_id"])} if teacher_meta.get("run_id") else {}),
            **({"teacher_run_ids": ",".join(map(str, run_ids))} if run_ids else {}),
            "kd.terms": ",".join(plan.terms),
            "kd.teacher": (
                "none"
                if teacher_dir is None
                else "live"
                if plan.live_teacher
                else "stored views"
                if stored
                else "cached"
            ),
        }
        log.info("%s: student %s %.2fM parameters", stage, student.arch, n_params / 1e6)
        if teacher_meta.get("params"):  # unknown for outputs brought from a file
            log.info(
                "teacher %.2fM parameters, %.1fx larger",
                teacher_meta["params"] / 1e6,
                teacher_meta["params"] / n_params,
            )
        name = run_name(cfg, fs.task) if stage == "distill" else f"{stage} no-KD a=1 b=0 g=0"
        log.info(
            "%s: %d labelled + %d unlabelled clips, %d epochs of %d pass(es), %d steps",
            stage,
            clips["labelled_clips"],
            clips["unlabeled_clips"],
            clips["epochs"],
            clips["passes"],
            clips["steps"],
        )
        with stage_run(stage, tracking.experiment, name, params, tags, run_id=ckpt.run_id) as run:
            ckpt.run_id = run.info.run_id
            log_run_inputs(params_file, n_params, resumed=ckpt.state is not None)
            mlflow.log_params({f"budget.{k}": v for k, v in clips.items()})
            result = fit(
                model,
                plan.objective,
                train,
                val,
                fs.task,
                settings,
                MetricBuffer(),
                plan.extra_modules,
                checkpoint=ckpt,
                augment=aug,
            )
            primary = fs.task.primary
            with deferred():
                mlflow.log_metrics(
                    {f"best/val_{primary}": result.best_score, "best/epoch": result.best_epoch}
                )
            model.cpu().eval()
            model_uri = log_torch_model(LogitsOnly(model).eval(), "student", val.x[:1].numpy())
            meta = {
                "run_id": run.info.run_id,
                "tracking_uri": tracking_uri(),
                "experiment": tracking.experiment,
                "model_uri": model_uri,
                "teacher_run_id": teacher_meta.get("run_id"),
                "best_epoch": result.best_epoch,
                "task": fs.task.kind,
                f"val_{primary}": result.best_score,
                "params": n_params,
                "input_shape": list(fs.input_shape),
                "targets": fs.targets,
                "budget": clips,
            }
            with atomic_dir(out_dir) as tmp:
                model.save_pretrained(tmp)
                save_labels(tmp, fs.task)
                meta["weights_sha256"] = file_sha256(tmp / "model.safetensors")
                # the student for deployment: ONNX (fp32 checked against PyTorch, int8 calibrated on train),
                # TorchScript (audiokd.export)
                meta.update(export_student(LogitsOnly(model).eval(), val.x[:4], train.x, fs.frames, tmp))
                pd.DataFrame(result.history).to_csv(tmp / "history.csv", index=False)
                write_json(tmp / "meta.json", meta)
            mlflow.log_artifact(str(Path(out_dir) / ONNX_FILE), artifact_path="onnx")
            mlflow.log_artifact(str(Path(out_dir) / INT8_FILE), artifact_path="onnx")
        ckpt.discard()
        log.info("%s: best epoch %d, val %s %.4f", stage, result.best_epoch, primary, result.best_score)
        return meta
