"""ONNX export of the student (dynamic batch axis), checked against PyTorch with ONNX Runtime."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

MAX_ABS_DIFF = 1e-4
ONNX_FILE = "model.onnx"


class ExportError(RuntimeError):
    """The exported model does not reproduce the PyTorch outputs."""


def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    """Export ``model`` (taking one tensor) to ONNX at ``path`` with a dynamic batch axis."""
    path = Path(path)
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(
        model.eval(),
        (example,),
        str(path),
        input_names=["pixel_values"],
        output_names=["outputs"],
        dynamic_shapes=({0: batch},),
        dynamo=True,
        verbose=False,
    )
    return path


def check_onnx(model: torch.nn.Module, path: str | Path, x: torch.Tensor) -> float:
    """Max abs difference between ONNX Runtime and PyTorch on ``x``; raises :class:`ExportError` past 1e-4."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    diff = float(np.abs(got - expected).max())
    if not diff <= MAX_ABS_DIFF:
        raise ExportError(f"{path}: ONNX Runtime differs from PyTorch by {diff:.2e} (> {MAX_ABS_DIFF})")
    return diff
