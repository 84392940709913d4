"""Teacher and student models, and helpers common to both, including the one safe way to load weights."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError, safe_open

from audiokd.io import file_sha256, write_json
from audiokd.tasks import Task

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
M = TypeVar("M")
N = TypeVar("N", bound=torch.nn.Module)


class WeightsError(RuntimeError):
    """A weights folder cannot be trusted: missing, truncated, tampered with or not safetensors (one line)."""


def recorded_sha256(folder: Path) -> str | None:
    """The ``weights_sha256`` that the stage which wrote ``folder`` recorded in its ``meta.json``, if any."""
    meta = folder / "meta.json"
    if not meta.is_file():
        return None
    try:
        return json.loads(meta.read_text()).get("weights_sha256")
    except (json.JSONDecodeError, AttributeError, UnicodeDecodeError) as e:
        raise WeightsError(f"{meta}: not valid JSON ({e})") from None


def unit_batchnorm_scales(model: N) -> N:
    """Every batch-norm scale set to 1 and shift to 0, as PyTorch and MobileViT's reference code (Apple's
    ml-cvnets) initialise them; returns ``model``.

    transformers 5.x draws the MobileViT and MobileViTV2 scales from N(0, 0.02) instead: with ~30 such layers
    in series the signal and its gradient nearly vanish, and the eval-mode running variances (initialised
    to 1) sit orders of magnitude above the real ones. Measured on 112 train clips, 30 epochs (no KD, batch
    norm recomputed before validation): val CCC 0.34 at transformers' initialisation, 0.96 with unit scales.
    """
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            torch.nn.init.ones_(m.weight)
            torch.nn.init.zeros_(m.bias)
    return model


def load_pretrained(cls: type[M], folder: str | Path, **kwargs: Any) -> M:
    """``cls.from_pretrained(folder, use_safetensors=True, **kwargs)``, after checking the weights file.

    Only ``model.safetensors`` is read (never a pickled ``pytorch_model.bin``). Its header must parse and
    cover the file (a truncated file fails here), and when the folder's ``meta.json`` records a
    ``weights_sha256`` the content must match it (a changed byte fails here). Every failure is a
    :class:`WeightsError` whose message names the file.
    """
    folder = Path(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        pickled = sorted(p.name for p in folder.glob("*.bin"))
        hint = (
            f"; {', '.join(pickled)} is pickle-based and is never loaded: re-save with save_pretrained"
            if pickled
            else ""
        )
        raise WeightsError(f"{weights}: no such file{hint}")
    try:
        with safe_open(str(weights), framework="pt") as f:
            f.keys()
    except (SafetensorError, OSError) as e:
        raise WeightsError(
            f"{weights}: not a valid safetensors file, truncated or tampered with ({e})"
        ) from None
    expected = recorded_sha256(folder)
    if expected and file_sha256(weights) != expected:
        raise WeightsError(
            f"{weights}: content differs from the sha256 that {folder / 'meta.json'} recorded when it was "
            "written; the file was changed or damaged: rerun the stage that wrote it (dvc repro)"
        )
    try:
        return cls.from_pretrained(folder, use_safetensors=True, **kwargs)  # type: ignore[attr-defined]
    except (SafetensorError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"{folder}: cannot load the model ({first})") from None


class LogitsOnly(torch.nn.Module):
    """Wrap a Hugging Face model so ``forward(x)`` returns its output tensor (for export and serving)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Model outputs, (B, num_outputs)."""
        return self.model(pixel_values=pixel_values).logits


def head_kwargs(task: Task) -> dict[str, Any]:
    """Hugging Face config arguments for the output head: width, problem type, class names."""
    kwargs: dict[str, Any] = {"num_labels": task.num_outputs, "problem_type": task.problem_type}
    if task.kind == "classification":
        kwargs["id2label"] = dict(enumerate(task.names))
        kwargs["label2id"] = {n: i for i, n in enumerate(task.names)}
    return kwargs


def save_labels(folder: Path, task: Task) -> None:
    """Classification: the label -> index mapping beside a saved model (``labels.json``)."""
    if task.kind == "classification":
        write_json(folder / "labels.json", {"labels": list(task.names)})


def count_params(model: torch.nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())


def weights_size_mb(folder: str | Path) -> float:
    """Size on disk of a saved model's weight files, in MiB."""
    files = list(Path(folder).glob("*.safetensors"))
    return sum(f.stat().st_size for f in files) / 2**20


@torch.no_grad()
def predict(
    model: torch.nn.Module, x: torch.Tensor, batch_size: int = 128, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Outputs of ``model`` (eval mode) on ``x`` in batches, on the CPU."""
    model.eval()
    outs = [
        model(pixel_values=x[i : i + batch_size].to(device)).logits.float().cpu()
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(outs)
