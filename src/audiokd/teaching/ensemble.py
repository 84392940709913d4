"""Teacher ensembles (``ensemble.members``): each member trains in its own DVC stage, the mean is the teacher.

A member is a name and overrides of the ``teacher`` section (any of its keys but ``outputs``) plus an
optional ``seed`` (absolute) or ``seed_offset`` (added to ``runtime.seed``, so a ``runtime.seed`` sweep
trains new members for every seed); with neither it trains with ``runtime.seed``.
``teacher_member@<name>`` trains it into ``models/teacher_members/<name>`` (a ``single`` or ``folds``
teacher folder); the train_teacher stage then combines the members' cached outputs
(:mod:`audiokd.teaching.combine`) into ``models/teacher``, copying the members in as ``members/<name>/`` so
the teacher folder is complete on its own (evaluate scores each member from there).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

from audiokd.config import (
    ConfigError,
    DataConfig,
    EnsembleConfig,
    RuntimeConfig,
    TeacherConfig,
    build_section,
    section_to_dict,
)
from audiokd.data.features import FeatureSet, check_targets
from audiokd.distill import teacher_cache
from audiokd.io import atomic_dir, read_json, write_json, write_marker
from audiokd.teaching.combine import combine_splits

log = logging.getLogger(__name__)


def member_settings(
    teacher: TeacherConfig, ensemble: EnsembleConfig, runtime: RuntimeConfig, name: str
) -> tuple[TeacherConfig, RuntimeConfig]:
    """The teacher section and runtime (its seed) of member ``name``: the base with the member's overrides."""
    if name not in ensemble.members:
        known = ", ".join(ensemble.members) or "none"
        raise ConfigError(f"ensemble.members.{name}: no such member (members: {known})")
    over = dict(ensemble.members[name])
    seed = over.pop("seed", runtime.seed + over.pop("seed_offset", 0))
    merged = build_section(TeacherConfig, {**section_to_dict(teacher), **over}, f"ensemble.members.{name}")
    return merged, dataclasses.replace(runtime, seed=seed)


def skip_member(name: str, out_dir: str | Path) -> None:
    """``ensemble.enabled: false``: write member ``name``'s marker folder (DVC needs the stage's output)."""
    log.info("ensemble.enabled is false: member %s writes the marker %s/meta.json only", name, out_dir)
    write_marker(out_dir, "ensemble.enabled")


def combine_members(
    data: DataConfig,
    ensemble: EnsembleConfig,
    features_dir: str | Path,
    members_dir: str | Path,
    out_dir: str | Path,
) -> dict:
    """Write ``out_dir``: the members' mean outputs as the teacher cache, the members under ``members/``."""
    features_dir, members_dir = Path(features_dir), Path(members_dir)
    fs = FeatureSet.load(features_dir)
    check_targets(data, fs)
    task = fs.task
    folders = {name: members_dir / name for name in ensemble.members}
    missing = [name for name, f in folders.items() if not (f / "meta.json").is_file()]
    if missing:
        raise ConfigError(
            f"ensemble.members: no trained member in {members_dir} for {', '.join(missing)}; "
            "`dvc repro` trains each (stage teacher_member@<name>) first"
        )
    outputs = {
        name: teacher_cache.load(f, features_dir, fs.meta, tuple(teacher_cache.splits(f)))
        for name, f in folders.items()
    }
    combined = combine_splits(list(outputs.values()), task)
    metas = {name: read_json(f / "meta.json") for name, f in folders.items()}
    val_y = fs.split("val").y.numpy()
    quality = task.flat_quality(combined["val"].numpy(), val_y)[task.primary]
    with atomic_dir(out_dir) as tmp:
        for name, f in folders.items():
            shutil.copytree(f, tmp / "members" / name)
        key = teacher_cache.cache_key(tmp, features_dir)
        teacher_cache.save(tmp / teacher_cache.FOLDER, combined, fs.meta, key)
        meta = {
            "kind": "ensemble",
            "members": list(folders),
            "run_ids": {name: m.get("run_id") or m.get("run_ids") for name, m in metas.items()},
            "task": task.kind,
            f"val_{task.primary}": quality,
            "params": sum(int(m["params"]) for m in metas.values()),
            "input_shape": list(fs.input_shape),
            "targets": fs.targets,
        }
        write_json(tmp / "meta.json", meta)
    each = ", ".join(f"{name} {m[f'val_{task.primary}']:.4f}" for name, m in metas.items())
    log.info("ensemble of %d teachers: val %s %.4f (members: %s)", len(folders), task.primary, quality, each)
    return meta
