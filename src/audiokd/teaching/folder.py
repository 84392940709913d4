"""Reading a teacher folder of any kind: what it is, its named parts, the models in it.

Layouts (``meta.json`` ``kind``):

- ``single``: one model (``model.safetensors``, ``config.json``) and its outputs cache.
- ``folds``: ``folds/<i>/`` (each a ``single`` folder) and ``folds.json``; the cache holds out-of-fold train
  outputs and the fold teachers' mean elsewhere.
- ``ensemble``: ``members/<name>/`` (each a ``single`` or ``folds`` folder); the cache holds their mean.
- ``outputs``: ``outputs.csv`` (a copy of ``teacher.outputs``) and the cache made from it; no model.
"""

from __future__ import annotations

from pathlib import Path

from audiokd.distill.teacher_cache import WEIGHTS
from audiokd.io import read_json


def kind(teacher_dir: str | Path) -> str:
    """``single``, ``folds``, ``ensemble`` or ``outputs`` (a folder from before kinds existed: ``single``)."""
    meta = Path(teacher_dir) / "meta.json"
    return str(read_json(meta).get("kind", "single")) if meta.is_file() else "single"


def parts(teacher_dir: str | Path) -> dict[str, Path]:
    """The named teachers inside: ensemble members by name, fold teachers as ``fold<i>``; else none."""
    root = Path(teacher_dir)
    if kind(root) == "ensemble":
        return {name: root / "members" / name for name in read_json(root / "meta.json")["members"]}
    if kind(root) == "folds":
        k = int(read_json(root / "meta.json")["folds"])
        return {f"fold{i}": root / "folds" / str(i) for i in range(k)}
    return {}


def models(teacher_dir: str | Path) -> list[Path]:
    """Every single-model folder the teacher's outputs come from (none for a file of outputs)."""
    root = Path(teacher_dir)
    if (root / WEIGHTS).is_file():
        return [root]
    return [m for part in parts(root).values() for m in models(part)]


def runs_live(teacher_dir: str | Path) -> bool:
    """Whether the folder holds one model that distill can run beside the student."""
    return (Path(teacher_dir) / WEIGHTS).is_file()


def describe(teacher_dir: str | Path) -> str:
    """One sentence on what the teacher is, for logs and the report."""
    root = Path(teacher_dir)
    k = kind(root)
    if k == "ensemble":
        names = list(parts(root))
        return f"an ensemble of {len(names)} teachers ({', '.join(names)}), their mean output"
    if k == "folds":
        n = len(parts(root))
        return f"{n} fold teachers: out-of-fold outputs on the train split, their mean elsewhere"
    if k == "outputs":
        return f"outputs read from a file ({read_json(root / 'meta.json').get('source', '?')}), no model"
    return "one trained teacher"
