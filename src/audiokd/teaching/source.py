"""The train_teacher stage: where the teacher outputs come from, chosen by params.

- ``teacher.outputs`` set: read them from that CSV (:mod:`audiokd.teaching.outputs`); nothing trains.
- ``ensemble.members`` set (and ``ensemble.enabled``): combine the members, each trained by its own stage
  (:mod:`audiokd.teaching.ensemble`).
- neither: train one teacher, or ``teacher.folds`` fold teachers (:mod:`audiokd.teacher_training`).

Whichever it is, the stage writes the same kind of teacher folder with its outputs cache.
"""

from __future__ import annotations

from pathlib import Path

from audiokd.config import (
    AugmentConfig,
    DataConfig,
    EnsembleConfig,
    RuntimeConfig,
    TeacherConfig,
    TrackingConfig,
    check_teacher_source,
)
from audiokd.teacher_training import train_teacher
from audiokd.teaching.ensemble import combine_members
from audiokd.teaching.outputs import import_outputs


def trains_here(teacher: TeacherConfig, ensemble: EnsembleConfig) -> bool:
    """Whether the train_teacher stage trains a teacher itself (then it may run under torchrun)."""
    return not teacher.outputs and not ensemble.active_members


def make_teacher(
    data: DataConfig,
    teacher: TeacherConfig,
    ensemble: EnsembleConfig,
    tracking: TrackingConfig,
    runtime: RuntimeConfig,
    augment: AugmentConfig,
    features_dir: str | Path,
    members_dir: str | Path,
    out_dir: str | Path,
    params_file: str | Path | None = None,
) -> dict:
    """Write the teacher folder ``out_dir`` from a CSV of outputs, the ensemble's members, or by training."""
    check_teacher_source(teacher, ensemble)
    if teacher.outputs:
        return import_outputs(data, teacher, features_dir, out_dir)
    if ensemble.active_members:
        return combine_members(data, ensemble, features_dir, members_dir, out_dir)
    return train_teacher(data, teacher, tracking, runtime, augment, features_dir, out_dir, params_file)
