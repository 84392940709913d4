"""Predict with the trained student on audio files: the pipeline's own decoding, log-mels and normalisation.

The features folder (``data/features``) carries everything the student was trained with: the audio settings
(``meta.json``), the per-mel-bin normalisation and the target statistics (``stats.json``, train split).
A file is decoded with :func:`audiokd.data.audio.load_audio` (any rate, mono or stereo), centre-cropped or
padded like the test split, turned into log-mels by :class:`audiokd.data.features.LogMelFrontend`,
normalised, run through the student at batch 1 and de-standardised back to target units.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from audiokd.config import AudioConfig
from audiokd.data.audio import AudioError, fix_length, load_audio
from audiokd.data.features import LogMelFrontend, num_samples
from audiokd.export import ONNX_FILE
from audiokd.io import read_json

log = logging.getLogger(__name__)

Model = Callable[[torch.Tensor], np.ndarray]


class PredictError(ValueError):
    """A file, folder or model that cannot be used; the message is one line naming it."""


@dataclass
class Preprocessor:
    """Audio file -> normalised log-mels (1, 1, n_mels, frames), and model outputs -> target units."""

    audio: AudioConfig
    targets: list[str]  # regression targets, or class names for classification
    shape: list[int]
    mel_mean: np.ndarray
    mel_std: np.ndarray
    target_mean: np.ndarray
    target_std: np.ndarray
    classification: bool = False

    def __post_init__(self) -> None:
        self.frontend = LogMelFrontend(self.audio)

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

    @torch.no_grad()
    def features(self, path: str | Path) -> torch.Tensor:
        """Normalised log-mels of one file, (1, 1, n_mels, frames), as the test split was computed."""
        wave = fix_length(load_audio(path, self.audio.sample_rate), num_samples(self.audio), "center")
        mel = self.frontend(wave.unsqueeze(0)).numpy()
        x = (mel - self.mel_mean[None, None, :, None]) / self.mel_std[None, None, :, None]
        return torch.from_numpy(x.astype(np.float32))

    def targets_of(self, outputs: np.ndarray) -> dict[str, float]:
        """De-standardise one row of model outputs into ``{target: value}``; for classification the most
        probable class and its probability, ``{"<label>": probability}``."""
        if self.classification:
            prob = torch.softmax(torch.as_tensor(np.asarray(outputs, np.float32)).reshape(-1), dim=0).numpy()
            return {self.targets[int(prob.argmax())]: float(prob.max())}
        values = np.asarray(outputs).reshape(-1) * self.target_std + self.target_mean
        return {t: float(v) for t, v in zip(self.targets, values, strict=True)}


def is_mlflow_uri(source: str) -> bool:
    """Whether ``source`` is an MLflow model URI (``models:/name@alias``, ``runs:/...``), not a folder."""
    return source.startswith(("models:/", "runs:/")) or "://" in source


def _local_model(folder: Path, prep: Preprocessor) -> Model:
    from audiokd.models.student import load_student

    if not (folder / "config.json").is_file():
        raise PredictError(f"{folder}: no trained student here (config.json missing); run `dvc repro` first")
    meta_path = folder / "meta.json"
    if meta_path.is_file():
        shape = read_json(meta_path).get("input_shape")
        if shape and list(shape) != prep.shape:
            raise PredictError(
                f"{folder}: the student takes inputs {shape} but the features give {prep.shape}; "
                "rerun `dvc repro` so both come from the same params"
            )
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a "Loading weights" bar per call would clutter the CLI's output
    model = load_student(folder)
    return lambda x: model(pixel_values=x).logits.numpy()


def _mlflow_model(uri: str) -> Model:
    import mlflow
    import mlflow.pytorch
    from mlflow.exceptions import MlflowException

    from audiokd.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_registry_uri(tracking_uri())
    try:
        model = mlflow.pytorch.load_model(uri)
    except (MlflowException, OSError) as e:
        raise PredictError(f"{uri}: cannot load the model ({str(e).splitlines()[0]})") from None
    return lambda x: model(x).detach().numpy()


def _onnx_model(folder: Path) -> Model:
    path = folder / ONNX_FILE
    if not path.is_file():
        raise PredictError(
            f"{path}: no ONNX model; export it first, or drop --onnx to use the PyTorch student"
        )
    try:
        import onnxruntime  # optional: only --onnx needs it
    except ImportError:
        raise PredictError(f"{path}: --onnx needs onnxruntime (pip install onnxruntime)") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: np.asarray(session.run(None, {name: x.numpy()})[0])


def load_model(source: str, prep: Preprocessor, onnx: bool = False) -> Model:
    """A callable from normalised log-mels to raw model outputs.

    ``source``: a student folder written by the distill stage (default ``models/student``), or an MLflow
    model URI such as ``models:/audiokd-student@champion`` (store: ``MLFLOW_TRACKING_URI`` or ``mlruns/``).
    ``onnx``: use ``<folder>/model.onnx`` with onnxruntime instead of the PyTorch weights.
    """
    if is_mlflow_uri(source):
        if onnx:
            raise PredictError(f"{source}: --onnx reads {ONNX_FILE} from a student folder, not an MLflow URI")
        return _mlflow_model(source)
    folder = Path(source)
    if not folder.is_dir():
        raise PredictError(f"{folder}: no such folder; run `dvc repro` first or pass --model")
    return _onnx_model(folder) if onnx else _local_model(folder, prep)


def predict_files(
    paths: list[str], model: Model, prep: Preprocessor
) -> Iterator[tuple[str, dict[str, float] | None, str | None]]:
    """``(path, {target: value}, None)`` per readable file, ``(path, None, error line)`` per bad one."""
    for path in paths:
        if not Path(path).is_file():
            yield path, None, f"{path}: no such file"
            continue
        try:
            x = prep.features(path)
        except AudioError as e:
            yield path, None, str(e)
            continue
        with torch.no_grad():
            yield path, prep.targets_of(model(x)), None


def format_line(path: str, values: dict[str, float]) -> str:
    """``path  arousal=0.123  valence=-0.456``."""
    return "  ".join([path, *(f"{k}={v:.3f}" for k, v in values.items())])
