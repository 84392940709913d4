"""Which student file ships: the int8 ONNX model scored on the test split and gated against the fp32 student.

Evaluate scores ``model.int8.onnx`` like the other models (``metrics.json``: ``student_int8``, with its file
size and its ONNX Runtime latency next to the fp32 ONNX file's, same threads) and checks the quality gate
``export.int8_max_drop``: the int8 model may lose at most that much CCC mean (accuracy for classification)
against the fp32 student. The registered student version is tagged with the file to deploy: the int8 file
when it passes, the fp32 ONNX file when it does not.
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from audiokd.config import EvaluateConfig, ExportConfig
from audiokd.export import INT8_FILE, ONNX_FILE, session_options
from audiokd.tasks import Task

log = logging.getLogger(__name__)

BATCH = 64


def _session(path: Path, threads: int = 0) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])


def onnx_latency_ms(path: Path, example: np.ndarray, cfg: EvaluateConfig) -> float:
    """Median wall time of one ONNX Runtime call on ``example`` with ``latency_threads`` threads, in ms."""
    sess = _session(path, cfg.latency_threads)
    feed = {sess.get_inputs()[0].name: example}
    for _ in range(cfg.latency_warmup):
        sess.run(None, feed)
    times = []
    for _ in range(cfg.latency_repeats):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t0) * 1000)
    return float(statistics.median(times))


def onnx_predict(path: Path, x: np.ndarray) -> np.ndarray:
    """Raw outputs of the ONNX model at ``path`` on ``x``, in batches."""
    sess = _session(path)
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i : i + BATCH]})[0] for i in range(0, len(x), BATCH)])


def score_int8(
    folder: Path,
    x: np.ndarray,
    y_true: np.ndarray,
    task: Task,
    denormalise: Any,
    params: int,
    cfg: EvaluateConfig,
) -> tuple[dict[str, Any], np.ndarray] | None:
    """``student_int8`` metrics and predictions for the int8 file in ``folder``, or None without one."""
    path = folder / INT8_FILE
    if not path.is_file():
        return None
    pred = denormalise(onnx_predict(path, x))
    report = {
        **task.quality(pred, y_true),
        "params": params,
        "size_mb": round(path.stat().st_size / 1e6, 4),
        "latency_ms": round(onnx_latency_ms(path, x[:1], cfg), 4),
        "fp32_onnx_size_mb": round((folder / ONNX_FILE).stat().st_size / 1e6, 4),
        "fp32_onnx_latency_ms": round(onnx_latency_ms(folder / ONNX_FILE, x[:1], cfg), 4),
    }
    return report, pred


def gate(metrics: dict[str, Any], key: str, cfg: ExportConfig) -> dict[str, Any]:
    """The quality gate: ``drop`` = fp32 student minus int8 quality; deployable when ``drop <= max_drop``.

    Adds ``drop``, ``max_drop`` and ``deployable`` to ``metrics["student_int8"]`` and returns it. A failed
    gate is logged as one warning line naming the drop and the params key.
    """
    int8 = metrics["student_int8"]
    drop = float(metrics["student"][key] - int8[key])
    int8.update(drop=drop, max_drop=cfg.int8_max_drop, deployable=bool(drop <= cfg.int8_max_drop))
    if not int8["deployable"]:
        log.warning(
            "int8 student not deployable: %s %.4f vs fp32 %.4f, a drop of %.4f > export.int8_max_drop = %g; "
            "the fp32 ONNX file stays the deployable artifact",
            key,
            int8[key],
            metrics["student"][key],
            drop,
            cfg.int8_max_drop,
        )
    return int8


def deploy_tags(run_id: str, int8: dict[str, Any] | None) -> dict[str, str]:
    """Registry version tags naming the file to deploy (an artifact URI of the distill run) and the gate."""
    if int8 is None:
        return {"deploy.file": f"runs:/{run_id}/onnx/{ONNX_FILE}", "deploy.int8": "none"}
    verdict = "passed" if int8["deployable"] else "failed"
    return {
        "deploy.file": f"runs:/{run_id}/onnx/{INT8_FILE if int8['deployable'] else ONNX_FILE}",
        "deploy.int8": f"{verdict}: drop {int8['drop']:.4f}, max {int8['max_drop']:g}",
    }
