"""The deployable student: ONNX export (dynamic batch axis), checked against PyTorch, its int8 version, and
a TorchScript trace.

``model.onnx`` is one self-contained file (no external weights file, no exporter debug metadata).
``model.int8.onnx`` is its post-training quantization with ONNX Runtime: static, QDQ format, int8 weights
per output channel and uint8 activations whose ranges are calibrated on train-split inputs (99.999th
percentile) for every convolution and weighted matrix product;
dynamic quantization (int8 weights, activation ranges computed per call) is the fallback when static
quantization fails on the graph. Whether the int8 file is good enough to ship is decided by evaluate
against ``export.int8_max_drop``.

``model.ts`` is the student traced with ``torch.jit.trace``: the same operations and outputs as the
Hugging Face model, loadable with torch alone, so ``audiokd predict`` without ``--onnx`` starts without
importing ``transformers`` (about 3 s of CPU time on the 2-core machine). torch 2.14 marks ``torch.jit``
deprecated; ``torch.export``'s archive would replace it but takes as long to load as ``transformers`` to
import, and predict falls back to the weights wherever a trace is missing.

torch is imported inside the export functions only: the predict path imports this module for the file
names and :func:`session_options` without paying for torch.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from audiokd.io import file_sha256

if TYPE_CHECKING:
    import onnxruntime
    import torch

log = logging.getLogger(__name__)

MAX_ABS_DIFF = 1e-4
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
TORCHSCRIPT_FILE = "model.ts"
CALIBRATION_CLIPS = 256  # train clips whose activation ranges calibrate the int8 model
CALIBRATION_BATCH = 32


class ExportError(RuntimeError):
    """The exported model does not reproduce the PyTorch outputs."""


def session_options(threads: int = 0) -> onnxruntime.SessionOptions:
    """ONNX Runtime options for the student: ``threads`` intra-op threads (0: ONNX Runtime's default), and
    denormal floats flushed to zero (on CPUs that trap them, a denormal costs ~100x a normal operation)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.set_denormal_as_zero", "1")
    opts.log_severity_level = 3  # errors only: the quantized graph's informational notes are noise here
    return opts


def _strip(path: Path) -> None:
    """Rewrite ``path`` as one file without what inference does not read: the exporter's per-node metadata
    (stack traces, ~1.4 MB for the student) and long node and tensor names (PyTorch module paths, repeated
    in every quantize/dequantize node: ~0.1 MB of the int8 file), replaced by short ids."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    keep = {v.name for v in [*graph.input, *graph.output]}  # the interface keeps its names
    short: dict[str, str] = {}

    def rename(name: str) -> str:
        if not name or name in keep:
            return name
        return short.setdefault(name, f"t{len(short)}")

    for i, node in enumerate(graph.node):
        del node.metadata_props[:]
        node.name = f"n{i}"
        node.input[:] = [rename(x) for x in node.input]
        node.output[:] = [rename(x) for x in node.output]
    for tensor in graph.initializer:
        tensor.name = rename(tensor.name)
    for info in graph.value_info:
        info.name = rename(info.name)
    data = path.with_name(path.name + ".data")
    onnx.save(model, str(path))
    data.unlink(missing_ok=True)


def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    """Export ``model`` (taking one tensor) to ONNX at ``path`` with a dynamic batch axis, as one file."""
    import torch

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
    _strip(path)
    return path


def check_onnx(model: torch.nn.Module, path: str | Path, x: torch.Tensor) -> float:
    """Max abs difference between ONNX Runtime and PyTorch on ``x``; raises :class:`ExportError` past 1e-4."""
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    diff = float(np.abs(got - expected).max())
    if not diff <= MAX_ABS_DIFF:
        raise ExportError(f"{path}: ONNX Runtime differs from PyTorch by {diff:.2e} (> {MAX_ABS_DIFF})")
    return diff


def export_torchscript(model: torch.nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    """Trace ``model`` (taking one tensor) with ``example`` and save it to ``path``; any batch size runs."""
    import warnings

    import torch

    with torch.no_grad(), warnings.catch_warnings():
        # shape checks become constants of the trace: right for the student's fixed input size
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # torch 2.14 marks torch.jit deprecated; predict falls back to the weights when a trace is missing
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(model.eval(), example)
        torch.jit.save(traced, str(path))
    return Path(path)


def load_torchscript(path: str | Path) -> torch.jit.ScriptModule:
    """Load a trace written by :func:`export_torchscript` (without torch's deprecation notice)."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path))


def export_student(
    model: torch.nn.Module, x: torch.Tensor, train_x: Any, frames: int, folder: str | Path
) -> dict[str, Any]:
    """Write the deployable files of ``model`` (outputs only) into ``folder``: ``model.onnx`` checked
    against PyTorch on ``x`` (a few inputs), ``model.int8.onnx`` calibrated on ``train_x``, ``model.ts``
    checked like the ONNX file. Returns the figures to record in ``meta.json``."""
    import torch

    folder = Path(folder)
    onnx_path = export_onnx(model, x[:1], folder / ONNX_FILE)
    meta: dict[str, Any] = {"onnx_max_abs_diff": check_onnx(model, onnx_path, x)}
    meta["int8"] = quantize_int8(onnx_path, folder / INT8_FILE, train_x, frames)
    traced = load_torchscript(export_torchscript(model, x[:2], folder / TORCHSCRIPT_FILE))
    with torch.no_grad():
        diff = float((traced(x) - model(x)).abs().max())
    if not diff <= MAX_ABS_DIFF:
        raise ExportError(f"{folder / TORCHSCRIPT_FILE}: the trace differs from PyTorch by {diff:.2e}")
    meta["torchscript_sha256"] = file_sha256(folder / TORCHSCRIPT_FILE)  # predict loads only this file
    return meta


def calibration_inputs(x: Any, frames: int, clips: int = CALIBRATION_CLIPS) -> np.ndarray:
    """Up to ``clips`` inputs spread evenly over ``x`` (N, 1, n_mels, >= frames), centre-cropped to
    ``frames`` (train clips are wider with ``audio.random_crop``), as float32 NumPy."""
    rows = np.unique(np.linspace(0, len(x) - 1, min(clips, len(x))).round().astype(int))
    start = (x.shape[-1] - frames) // 2
    out = np.stack([np.asarray(x[int(i)])[..., start : start + frames] for i in rows])
    return out.astype(np.float32)


def _activation_matmuls(path: Path) -> list[str]:
    """MatMul nodes without a weight (attention's query x key and probabilities x value): int8 saves no
    bytes there and costs a quantize/dequantize pair each."""
    import onnx

    graph = onnx.load(str(path)).graph
    weights = {t.name for t in graph.initializer}
    return [n.name for n in graph.node if n.op_type == "MatMul" and not weights.intersection(n.input)]


def _prepare(pre_process: Any, source: Path, prepared: Path) -> None:
    """ONNX Runtime's pre-processing (shape inference and graph fusions the quantizer needs) of ``source``.

    Its symbolic shape inference gives up on some graphs (MobileViTV2's: "Incomplete symbolic shape
    inference"); ONNX's own shape inference still works there, so that is tried next, and the graph as
    exported last: the quantizer then has fewer shapes to go by, never a failed stage. It runs inside
    ``prepared``'s (temporary) folder: on failure the symbolic pass saves ``sym_shape_infer_temp.onnx`` and
    its weights to the working directory, which would otherwise be the user's repository.
    """
    source = source.resolve()
    with contextlib.chdir(prepared.parent):
        for skip_symbolic in (False, True):
            try:
                pre_process(str(source), str(prepared.resolve()), skip_symbolic_shape=skip_symbolic)
                return
            except Exception as e:  # onnxruntime raises a bare Exception here
                what = "symbolic shape inference" if not skip_symbolic else "ONNX shape inference"
                log.info("int8: pre-processing with %s failed (%s); trying without it", what, e)
    shutil.copyfile(source, prepared)


def quantize_int8(onnx_path: str | Path, out_path: str | Path, x: Any, frames: int) -> dict[str, Any]:
    """Write the int8 version of ``onnx_path`` to ``out_path``, calibrated on ``x`` (train inputs).

    Returns what to record in the student's ``meta.json``: the method (``static percentile``, ``static
    minmax`` or ``dynamic``), the
    calibration clips, and the max abs difference to the fp32 model on them (a sanity figure; the
    quality that decides shipping is measured on the test split by evaluate).
    """
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    calib = calibration_inputs(x, frames)

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(
                [calib[i : i + CALIBRATION_BATCH] for i in range(0, len(calib), CALIBRATION_BATCH)]
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {"pixel_values": batch}

    out_path = Path(out_path)
    quant_log = logging.getLogger()  # onnxruntime.quantization warns on the root logger, per tensor
    level = quant_log.level
    quant_log.setLevel(logging.ERROR)
    try:
        # the percentile calibrator prints its progress to stdout: keep it out of the stage's output
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
            prepared = Path(tmp) / "prepared.onnx"
            _prepare(quant_pre_process, Path(onnx_path), prepared)
            method = None
            # ranges from the 99.999th percentile first: on the embedded data min/max lost 0.038 CCC, the
            # percentile 0.006 (README: int8); min/max where the percentile's histogram fails (a tensor
            # that is constant over the calibration set)
            for calibration in (CalibrationMethod.Percentile, CalibrationMethod.MinMax):
                try:
                    quantize_static(
                        str(prepared),
                        str(out_path),
                        Batches(),
                        quant_format=QuantFormat.QDQ,
                        per_channel=True,
                        activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8,
                        op_types_to_quantize=["Conv", "MatMul", "Gemm"],
                        nodes_to_exclude=_activation_matmuls(prepared),
                        calibrate_method=calibration,
                    )
                    method = f"static {calibration.name.lower()}"
                    break
                except Exception as e:  # any quantizer failure: the next method, saying why
                    log.warning("int8: static quantization (%s) failed: %s", calibration.name, e)
            if method is None:
                quantize_dynamic(str(prepared), str(out_path), weight_type=QuantType.QInt8)
                method = "dynamic"
    finally:
        quant_log.setLevel(level)
    _strip(out_path)
    fp32 = ort.InferenceSession(str(onnx_path), session_options(), providers=["CPUExecutionProvider"])
    int8 = ort.InferenceSession(str(out_path), session_options(), providers=["CPUExecutionProvider"])
    feed = {"pixel_values": calib[:CALIBRATION_BATCH]}
    diff = float(np.abs(fp32.run(None, feed)[0] - int8.run(None, feed)[0]).max())
    ratio = out_path.stat().st_size / Path(onnx_path).stat().st_size
    log.info("int8: %s quantization, %.2fx the fp32 file, max abs diff %.3g", method, ratio, diff)
    return {"method": method, "calibration_clips": len(calib), "max_abs_diff_vs_fp32": diff}
