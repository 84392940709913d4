"""Predict with the trained student on audio files: the pipeline's own decoding, log-mels and normalisation.

The features folder (``data/features``) carries everything the student was trained with: the audio settings
(``meta.json``), the per-mel-bin normalisation and the target statistics (``stats.json``, train split).
A file is decoded with :class:`audiokd.data.audio.AudioReader` (any rate, mono or stereo), centre-cropped or
padded like the test split, turned into log-mels by :class:`audiokd.data.frontend.LogMelFrontend`,
normalised, run through the student and de-standardised back to target units. A long recording can be cut
into windows (``window``/``hop`` seconds), each treated as one clip.

Start-up matters for a command-line tool: this module imports NumPy, soundfile and SciPy's FFT only. The
ONNX path adds onnxruntime and never imports torch; the PyTorch path imports torch and runs the student's
TorchScript trace (``model.ts``, written by distill) or, without one, its ``transformers`` weights; the
MLflow path imports mlflow.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audiokd.config import AudioConfig
from audiokd.data.audio import AudioError, AudioReader, fix_length
from audiokd.data.frontend import frontend
from audiokd.export import INT8_FILE, ONNX_FILE, TORCHSCRIPT_FILE, load_torchscript
from audiokd.io import file_sha256, read_json

log = logging.getLogger(__name__)

Model = Callable[[np.ndarray], np.ndarray]  # normalised log-mels (B, 1, n_mels, frames) -> raw outputs (B, k)
BATCH = 32  # windows per model call: bounded memory for recordings of any length


class PredictError(ValueError):
    """A file, folder or model that cannot be used; the message is one line naming it."""


@dataclass
class Window:
    """One window of a file, in seconds, and the model's raw outputs for it."""

    start_s: float
    end_s: float
    outputs: np.ndarray


@dataclass
class Preprocessor:
    """Audio file -> normalised log-mels (N, 1, n_mels, frames), and model outputs -> target units."""

    audio: AudioConfig
    targets: list[str]  # regression targets, or class names for classification
    shape: list[int]
    mel_mean: np.ndarray
    mel_std: np.ndarray
    target_mean: np.ndarray
    target_std: np.ndarray
    classification: bool = False

    @classmethod
    def load(cls, features_dir: str | Path) -> Preprocessor:
        """Read ``meta.json`` and ``stats.json`` of a features folder written by the preprocess stage."""
        root = Path(features_dir)
        for name in ("meta.json", "stats.json"):
            if not (root / name).is_file():
                raise PredictError(f"{root / name}: not found; run `dvc repro` first or pass --features")
        meta, stats = read_json(root / "meta.json"), read_json(root / "stats.json")
        classification = meta.get("task") == "classification"
        names = list(meta.get("classes") or []) if classification else list(meta["targets"])
        return cls(
            audio=AudioConfig(**meta["audio"]),
            targets=names,
            shape=list(meta["shape"]),
            mel_mean=np.asarray(stats["mel_mean"], np.float32),
            mel_std=np.asarray(stats["mel_std"], np.float32),
            target_mean=np.asarray(stats.get("target_mean", [0.0] * len(names)), np.float32),
            target_std=np.asarray(stats.get("target_std", [1.0] * len(names)), np.float32),
            classification=classification,
        )

    @property
    def clip_samples(self) -> int:
        """Samples of one model input (``audio.duration_s`` at ``audio.sample_rate``)."""
        return int(round(self.audio.duration_s * self.audio.sample_rate))

    def normalise(self, waves: np.ndarray) -> np.ndarray:
        """Waveforms (N, clip_samples) -> normalised log-mels (N, 1, n_mels, frames), as the splits were."""
        mel = frontend(self.audio)(waves)
        return ((mel - self.mel_mean[None, None, :, None]) / self.mel_std[None, None, :, None]).astype(
            np.float32
        )

    def clip(self, path: str | Path) -> tuple[float, float, np.ndarray]:
        """The centre clip of one file as the test split was computed: ``(start s, end s, normalised
        log-mels (1, 1, n_mels, frames))``."""
        rate, n = self.audio.sample_rate, self.clip_samples
        with AudioReader(path, rate) as audio:
            start = max(0, (audio.length - n) // 2)
            wave = fix_length(audio.read(start, n), n, "center")
            return start / rate, min(start + n, audio.length) / rate, self.normalise(wave[None])

    def features(self, path: str | Path) -> np.ndarray:
        """Normalised log-mels of one file, (1, 1, n_mels, frames), as the test split was computed."""
        return self.clip(path)[2]

    def windows(
        self, path: str | Path, window_s: float, hop_s: float
    ) -> Iterator[tuple[list[tuple[float, float]], np.ndarray]]:
        """Windows of ``window_s`` s every ``hop_s`` s, in batches: ``(spans in seconds, inputs)``.

        Windows start at 0, hop, 2 hop, ... while they fit in the file (a tail shorter than a hop is not
        covered); a file shorter than one window gives one window, the whole file. Each window is one clip:
        centre-cropped or padded to ``audio.duration_s`` when the window is longer or shorter.
        """
        rate = self.audio.sample_rate
        win, hop = max(1, round(window_s * rate)), max(1, round(hop_s * rate))
        with AudioReader(path, rate) as audio:
            count = 1 if audio.length <= win else 1 + (audio.length - win) // hop
            for first in range(0, count, BATCH):
                starts = [i * hop for i in range(first, min(count, first + BATCH))]
                waves = [fix_length(audio.read(s, win), self.clip_samples, "center") for s in starts]
                spans = [(s / rate, min(s + win, audio.length) / rate) for s in starts]
                yield spans, self.normalise(np.stack(waves))

    def probabilities(self, outputs: np.ndarray) -> np.ndarray:
        """Softmax of classification outputs, row-wise."""
        z = np.asarray(outputs, np.float64)
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    def values(self, outputs: np.ndarray) -> np.ndarray:
        """Regression outputs in target units (de-standardised), or class probabilities."""
        if self.classification:
            return self.probabilities(outputs)
        return np.asarray(outputs, np.float64) * self.target_std + self.target_mean

    def targets_of(self, outputs: np.ndarray) -> dict[str, float]:
        """De-standardise one row of model outputs into ``{target: value}``; for classification the most
        probable class and its probability, ``{"<label>": probability}``."""
        v = self.values(np.asarray(outputs).reshape(1, -1))[0]
        if self.classification:
            return {self.targets[int(v.argmax())]: float(v.max())}
        return {t: float(x) for t, x in zip(self.targets, v, strict=True)}


def is_mlflow_uri(source: str) -> bool:
    """Whether ``source`` is an MLflow model URI (``models:/name@alias``, ``runs:/...``), not a folder."""
    return source.startswith(("models:/", "runs:/")) or "://" in source


def _local_model(folder: Path, prep: Preprocessor) -> Model:
    if not (folder / "config.json").is_file():
        raise PredictError(f"{folder}: no trained student here (config.json missing); run `dvc repro` first")
    meta_path = folder / "meta.json"
    meta = read_json(meta_path) if meta_path.is_file() else {}
    if meta:
        shape = meta.get("input_shape")
        if shape and list(shape) != prep.shape:
            raise PredictError(
                f"{folder}: the student takes inputs {shape} but the features give {prep.shape}; "
                "rerun `dvc repro` so both come from the same params"
            )
    import torch

    torch.set_flush_denormal(True)  # denormals cost ~100x on some CPUs (README: student latency)
    trace = folder / TORCHSCRIPT_FILE
    if trace.is_file() and meta.get("torchscript_sha256"):  # distill's trace: no transformers import
        if file_sha256(trace) != meta["torchscript_sha256"]:
            raise PredictError(f"{trace}: content differs from the sha256 recorded in {meta_path}")
        traced = load_torchscript(trace)

        def run_traced(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return traced(torch.from_numpy(x)).numpy()

        return run_traced
    from transformers.utils import logging as hf_logging

    from audiokd.models.student import load_student

    hf_logging.disable_progress_bar()  # a "Loading weights" bar per call would clutter the CLI's output
    model = load_student(folder)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(pixel_values=torch.from_numpy(x)).logits.numpy()

    return run


def _mlflow_model(uri: str) -> Model:
    import mlflow
    import mlflow.pytorch
    import torch
    from mlflow.exceptions import MlflowException

    from audiokd.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_registry_uri(tracking_uri())
    try:
        model = mlflow.pytorch.load_model(uri)
    except (MlflowException, OSError) as e:
        raise PredictError(f"{uri}: cannot load the model ({str(e).splitlines()[0]})") from None

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).detach().numpy()

    return run


def _onnx_model(folder: Path, file: str) -> Model:
    path = folder / file
    if not path.is_file():
        raise PredictError(
            f"{path}: no ONNX model; export it first, or drop --onnx/--int8 to use the PyTorch student"
        )
    try:
        import onnxruntime  # optional: only --onnx needs it
    except ImportError:
        raise PredictError(f"{path}: --onnx needs onnxruntime (pip install onnxruntime)") from None
    from audiokd.export import session_options

    session = onnxruntime.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: np.asarray(session.run(None, {name: x})[0])


def load_model(source: str, prep: Preprocessor, onnx: bool = False, int8: bool = False) -> Model:
    """A callable from normalised log-mels to raw model outputs.

    ``source``: a student folder written by the distill stage (default ``models/student``), or an MLflow
    model URI such as ``models:/audiokd-student@champion`` (store: ``MLFLOW_TRACKING_URI`` or ``mlruns/``).
    ``onnx``: use ``<folder>/model.onnx`` with onnxruntime instead of the PyTorch weights; ``int8``: its
    quantized version ``<folder>/model.int8.onnx``.
    """
    if is_mlflow_uri(source):
        if onnx or int8:
            flag, file = ("--int8", INT8_FILE) if int8 else ("--onnx", ONNX_FILE)
            raise PredictError(f"{source}: {flag} reads {file} from a student folder, not an MLflow URI")
        return _mlflow_model(source)
    folder = Path(source)
    if not folder.is_dir():
        raise PredictError(f"{folder}: no such folder; run `dvc repro` first or pass --model")
    if onnx or int8:
        return _onnx_model(folder, INT8_FILE if int8 else ONNX_FILE)
    return _local_model(folder, prep)


def predict_file(
    path: str, model: Model, prep: Preprocessor, window_s: float | None = None, hop_s: float | None = None
) -> list[Window]:
    """The model's outputs for one file: the centre clip, or every window when ``window_s`` is given
    (``hop_s`` defaults to ``window_s``). Raises :class:`AudioError` naming an unreadable file."""
    if not Path(path).is_file():
        raise AudioError(f"{path}: no such file")
    if window_s is None:
        start, end, x = prep.clip(path)
        return [Window(start, end, model(x)[0])]
    out = []
    for spans, x in prep.windows(path, window_s, hop_s or window_s):
        out += [Window(s, e, y) for (s, e), y in zip(spans, model(x), strict=True)]
    return out


def predict_files(
    paths: list[str], model: Model, prep: Preprocessor
) -> Iterator[tuple[str, dict[str, float] | None, str | None]]:
    """``(path, {target: value}, None)`` per readable file, ``(path, None, error line)`` per bad one."""
    for path in paths:
        try:
            (window,) = predict_file(path, model, prep)
        except AudioError as e:
            yield path, None, str(e)
            continue
        yield path, prep.targets_of(window.outputs), None


def format_line(path: str, values: dict[str, float]) -> str:
    """``path  arousal=0.123  valence=-0.456``."""
    return "  ".join([path, *(f"{k}={v:.3f}" for k, v in values.items())])
