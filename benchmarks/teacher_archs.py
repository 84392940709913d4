"""Test quality and time of one teacher recipe, trained by the train_teacher stage function.

    python benchmarks/teacher_archs.py --features data/features --out /tmp/teacher-resnet \\
        --set arch=resnet --set lr=0.001 --set epochs=15

Every section but ``teacher`` comes from params.yaml; ``--set key=value`` overrides keys of the teacher
section (values are YAML: ``--set cnn_depths=[2,2,2,2]``). The MLflow store and the resume checkpoints go
under ``--out``, so a run touches nothing of the pipeline's. Prints one JSON line: the recipe, the
teacher's test quality (CCC per target and mean, or accuracy), its parameter count, best epoch, and the
wall and CPU time of the stage function.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import yaml

from audiokd.cli import setup_logging
from audiokd.config import TeacherConfig, build_section, load_section, read_params
from audiokd.data.features import FeatureSet
from audiokd.models import predict
from audiokd.models.teacher import load_teacher

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    """Train one teacher recipe and print its test quality and wall time."""
    raw_help = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw_help)
    parser.add_argument("--features", default=str(ROOT / "data" / "features"))
    parser.add_argument("--out", required=True, help="folder for the teacher, its MLflow store, checkpoints")
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="teacher.KEY")
    args = parser.parse_args()
    setup_logging()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{out / 'mlflow.db'}")
    os.environ.setdefault("AUDIOKD_CHECKPOINT_DIR", str(out / "checkpoints"))
    from audiokd.teacher_training import train_teacher  # after the store is chosen

    raw = read_params(args.params)
    overrides = dict(s.split("=", 1) for s in args.set)
    teacher_raw = {**(raw.get("teacher") or {}), **{k: yaml.safe_load(v) for k, v in overrides.items()}}
    teacher = build_section(TeacherConfig, teacher_raw, "teacher")
    sections = [load_section(raw, s) for s in ("data", "tracking", "runtime", "augment")]
    data, tracking, runtime, augment = sections
    start, cpu = time.perf_counter(), time.process_time()
    meta = train_teacher(data, teacher, tracking, runtime, augment, args.features, out / "teacher")
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    fs = FeatureSet.load(args.features)
    model = load_teacher(out / "teacher")
    pred = fs.denormalise_targets(predict(model, fs.split("test").x).numpy())
    quality = fs.task.quality(pred, fs.raw_targets("test"))
    print(
        json.dumps(
            {
                "recipe": {k: teacher_raw[k] for k in overrides},
                "test": quality,
                "params": meta["params"],
                "best_epoch": meta["best_epoch"],
                "wall_s": round(wall, 1),
                "cpu_s": round(cpu, 1),  # all threads; less sensitive than wall time to a busy machine
            }
        )
    )


if __name__ == "__main__":
    main()
