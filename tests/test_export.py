"""ONNX export of the student: dynamic batch, ONNX Runtime matches PyTorch within 1e-4."""

import numpy as np
import onnxruntime as ort
import pytest
import torch

from audiokd.config import StudentConfig
from audiokd.export import ExportError, check_onnx, export_onnx
from audiokd.models import LogitsOnly
from audiokd.models.student import build_student
from audiokd.tasks import Task


@pytest.mark.parametrize("arch", ["mobilevit", "mobilenet_v2"])
def test_onnx_matches_pytorch_at_several_batch_sizes(tmp_path, arch):
    torch.manual_seed(0)
    cfg = StudentConfig(
        arch=arch, hidden_sizes=(16, 16, 16), neck_hidden_sizes=(8, 8, 8, 8, 8, 8, 16), num_heads=2
    )
    model = LogitsOnly(build_student(cfg, (1, 32, 64), Task("regression", ("a", "b")))).eval()
    with torch.no_grad():  # non-trivial head: the default init of a fresh head is near zero
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    path = export_onnx(model, torch.randn(1, 1, 32, 64), tmp_path / "model.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3, 8):
        x = torch.randn(batch, 1, 32, 64)
        got = sess.run(None, {"pixel_values": x.numpy()})[0]
        with torch.no_grad():
            expected = model(x).numpy()
        assert got.shape == (batch, 2)
        assert np.abs(got - expected).max() <= 1e-4
        assert np.abs(expected).max() > 1e-3  # the comparison is not between two zero tensors
    assert check_onnx(model, path, torch.randn(4, 1, 32, 64)) <= 1e-4


def test_a_model_that_differs_is_refused(tmp_path):
    cfg = StudentConfig(hidden_sizes=(16, 16, 16), neck_hidden_sizes=(8, 8, 8, 8, 8, 8, 16), num_heads=2)
    model = LogitsOnly(build_student(cfg, (1, 32, 64), Task("regression", ("a", "b")))).eval()
    path = export_onnx(model, torch.randn(1, 1, 32, 64), tmp_path / "model.onnx")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    with pytest.raises(ExportError, match="model.onnx: ONNX Runtime differs from PyTorch"):
        check_onnx(model, path, torch.randn(2, 1, 32, 64))
