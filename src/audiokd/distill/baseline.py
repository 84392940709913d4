"""The baseline stage: the same student, trained with the same budget and no teacher (is KD worth it?).

It reuses :func:`audiokd.distill.run.distill` with ``alpha = 1``, ``beta = gamma = 0`` and no teacher, so the
only difference from the distilled student is the teacher's signal. Unlabelled clips are of no use without a
teacher; when the features have them, each of the baseline's epochs makes several passes over the labelled
clips instead, so that it takes at least as many optimizer steps as the distilled student over both, in as
many epochs (:func:`audiokd.distill.unlabeled.baseline_passes`): the KD gain is not a longer training.
``baseline.enabled: false`` writes a marker folder instead (DVC needs the stage's output to exist):
``meta.json`` with ``"enabled": false``, which the evaluate stage reads as "no baseline" and then leaves
``student_no_kd`` and ``kd_gain`` out.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from audiokd.config import (
    AugmentConfig,
    BaselineConfig,
    DataConfig,
    DistillConfig,
    RuntimeConfig,
    StudentConfig,
    TrackingConfig,
)
from audiokd.data.features import FeatureSet
from audiokd.data.unlabeled import UNLABELED
from audiokd.distill.run import distill
from audiokd.distill.unlabeled import baseline_passes
from audiokd.io import write_marker

log = logging.getLogger(__name__)


def no_kd(cfg: DistillConfig) -> DistillConfig:
    """``cfg`` with the teacher switched off: labels only, same epochs, batch size and learning rate."""
    return dataclasses.replace(cfg, alpha=1.0, beta=0.0, gamma=0.0)


def train_baseline(
    data: DataConfig,
    student: StudentConfig,
    cfg: DistillConfig,
    baseline: BaselineConfig,
    tracking: TrackingConfig,
    runtime: RuntimeConfig,
    augment: AugmentConfig,
    features_dir: str | Path,
    out_dir: str | Path,
    params_file: str | Path | None = None,
) -> dict[str, Any]:
    """Train the no-KD student into ``out_dir`` (layout as the distilled student's), or write the marker."""
    if not baseline.enabled:
        log.info("baseline.enabled is false: writing the marker %s/meta.json only", out_dir)
        return write_marker(out_dir, "baseline.enabled")
    fs = FeatureSet.load(features_dir)
    labelled, pool = fs.count("train"), fs.count(UNLABELED)
    passes = baseline_passes(labelled, pool, cfg.epochs, cfg.batch_size, cfg.min_steps)
    if passes > 1:
        log.info(
            "baseline: %d epochs of %d passes over the %d labelled clips, at least the steps of distill's "
            "epochs over the labelled and %d unlabelled clips%s",
            cfg.epochs,
            passes,
            labelled,
            pool,
            f" and distill.min_steps = {cfg.min_steps}" if cfg.min_steps else "",
        )
    return distill(
        data,
        student,
        no_kd(cfg),
        tracking,
        runtime,
        augment,
        features_dir,
        None,
        out_dir,
        params_file,
        "baseline",
        passes,
    )
