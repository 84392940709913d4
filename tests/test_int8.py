"""The int8 student: quantized from the ONNX export, scored like fp32, and gated before it may ship."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from audiokd.config import EvaluateConfig, ExportConfig, StudentConfig
from audiokd.deployable import deploy_tags, gate, score_int8
from audiokd.export import INT8_FILE, ONNX_FILE, export_onnx, quantize_int8
from audiokd.metrics import ccc
from audiokd.models import LogitsOnly
from audiokd.models.student import build_student
from audiokd.tasks import Task

SHAPE = (1, 32, 64)
TASK = Task("regression", ("a", "b"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny MobileViT with non-trivial weights, its fp32 ONNX file and its int8 version."""
    folder = tmp_path_factory.mktemp("int8")
    torch.manual_seed(0)
    cfg = StudentConfig(hidden_sizes=(16, 16, 16), neck_hidden_sizes=(8, 8, 8, 8, 8, 8, 16), num_heads=2)
    model = LogitsOnly(build_student(cfg, SHAPE, TASK)).eval()
    with torch.no_grad():  # an untrained MobileViT's outputs are nearly constant: give it a real signal
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    export_onnx(model, torch.randn(1, *SHAPE), folder / ONNX_FILE)
    train = torch.randn(96, 1, SHAPE[1], SHAPE[2] + 16)  # wider, as with random_crop: centre-cropped
    meta = quantize_int8(folder / ONNX_FILE, folder / INT8_FILE, train, SHAPE[2])
    return folder, model, meta


def test_quantized_model_loads_and_scores_within_the_gate(exported):
    folder, model, meta = exported
    assert meta["method"].startswith("static") and meta["calibration_clips"] == 96
    assert not (folder / f"{ONNX_FILE}.data").exists()  # one self-contained file
    # smaller, though a tiny model is mostly graph; the 1M-parameter student's int8 file is ~0.3 of fp32
    assert (folder / INT8_FILE).stat().st_size < (folder / ONNX_FILE).stat().st_size
    graph = onnx.load(str(folder / INT8_FILE)).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert any(t.data_type == onnx.TensorProto.INT8 for t in graph.initializer)
    x = torch.randn(128, *SHAPE)
    with torch.no_grad():
        fp32 = model(x).numpy()
    sess = ort.InferenceSession(str(folder / INT8_FILE), providers=["CPUExecutionProvider"])
    int8 = sess.run(None, {"pixel_values": x.numpy()})[0]
    assert int8.shape == (128, 2)
    # targets the fp32 model predicts well: the int8 model must keep the CCC within the default gate
    y = fp32 + 0.3 * fp32.std(0) * np.random.default_rng(0).standard_normal(fp32.shape)
    drop = np.mean([ccc(fp32[:, k], y[:, k]) - ccc(int8[:, k], y[:, k]) for k in range(2)])
    assert abs(drop) <= ExportConfig().int8_max_drop
    assert 0 < np.abs(int8 - fp32).max() < 0.1 * np.abs(fp32).max()  # quantized, yet close


def test_evaluate_scores_int8_and_the_gate_decides_what_ships(exported, caplog):
    folder, model, _ = exported
    x = torch.randn(64, *SHAPE)
    with torch.no_grad():
        y = model(x).numpy()  # labels the fp32 student gets exactly
    cfg = EvaluateConfig(latency_repeats=3, latency_warmup=1)
    report, pred = score_int8(folder, x.numpy(), y, TASK, lambda v: v, 1234, cfg)
    assert pred.shape == (64, 2)
    assert set(report) >= {"ccc_mean", "ccc", "params", "size_mb", "latency_ms", "fp32_onnx_latency_ms"}
    assert report["params"] == 1234 and report["size_mb"] < report["fp32_onnx_size_mb"]
    metrics = {"student": {"ccc_mean": 1.0}, "student_int8": report}
    assert report["ccc_mean"] < 1.0  # quantization loses something against the perfect fp32 student

    passed = gate(metrics, "ccc_mean", ExportConfig(int8_max_drop=1.0))
    assert passed["deployable"] and passed["drop"] == pytest.approx(1.0 - report["ccc_mean"])
    assert deploy_tags("r1", passed)["deploy.file"] == f"runs:/r1/onnx/{INT8_FILE}"

    with caplog.at_level(logging.WARNING, logger="audiokd.deployable"):
        refused = gate(metrics, "ccc_mean", ExportConfig(int8_max_drop=0.0))
    assert not refused["deployable"]
    [line] = [r.getMessage() for r in caplog.records]
    assert "int8 student not deployable" in line and "export.int8_max_drop = 0" in line
    tags = deploy_tags("r1", refused)
    assert tags["deploy.file"] == f"runs:/r1/onnx/{ONNX_FILE}"
    assert tags["deploy.int8"].startswith("failed: drop ")
    assert deploy_tags("r1", None) == {"deploy.file": f"runs:/r1/onnx/{ONNX_FILE}", "deploy.int8": "none"}


def test_no_int8_file_means_no_int8_metrics(tmp_path):
    assert score_int8(tmp_path, np.zeros((2, *SHAPE), "f4"), np.zeros((2, 2)), TASK, None, 1, None) is None


def test_mobilevitv2_quantizes_where_symbolic_shape_inference_gives_up(tmp_path, caplog, monkeypatch):
    # onnxruntime's symbolic shape inference raises "Incomplete symbolic shape inference" on MobileViTV2's
    # graph; pre-processing falls back to ONNX shape inference and the student still gets its int8 file
    shape = (1, 64, 128)  # MobileViTV2 needs at least 64 x 64
    torch.manual_seed(0)
    cfg = StudentConfig(arch="mobilevitv2", width_multiplier=0.25)
    model = LogitsOnly(build_student(cfg, shape, TASK)).eval()
    export_onnx(model, torch.randn(1, *shape), tmp_path / ONNX_FILE)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    with caplog.at_level(logging.INFO, logger="audiokd.export"):
        meta = quantize_int8(tmp_path / ONNX_FILE, tmp_path / INT8_FILE, torch.randn(32, *shape), shape[2])
    assert "pre-processing with symbolic shape inference failed" in caplog.text
    assert list(work.iterdir()) == []  # onnxruntime's temp files of the failed pass stay out of the cwd
    assert meta["method"].startswith("static")
    x = torch.randn(4, *shape)
    sess = ort.InferenceSession(str(tmp_path / INT8_FILE), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"pixel_values": x.numpy()})[0]
    assert out.shape == (4, 2) and np.isfinite(out).all()
    graph = onnx.load(str(tmp_path / INT8_FILE)).graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in graph.node}
