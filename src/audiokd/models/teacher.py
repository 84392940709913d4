"""The teacher: a Hugging Face model over log-mel spectrograms (one input channel) chosen by ``teacher.arch``.

Families (:mod:`audiokd.models.teachers`): ``vit`` (the notebook's), ``ast`` (Audio Spectrogram Transformer),
``resnet`` and ``convnext`` (transformers' image models with one input channel). Every teacher is called as
``model(pixel_values=x)`` with x (B, 1, n_mels, frames) and returns ``.logits`` (``.hidden_states`` with
``output_hidden_states=True``); distill, evaluate and the cache never need to know which family it is.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel

from audiokd.config import TeacherConfig
from audiokd.models import WeightsError, load_pretrained
from audiokd.models.teachers import family
from audiokd.models.teachers.pretrained import (
    load_pretrained_teacher,
    resolve_pretrained,
    warn_if_untracked,
)
from audiokd.models.teachers.registry import family_of_type
from audiokd.tasks import Task

log = logging.getLogger(__name__)


def build_teacher(
    cfg: TeacherConfig,
    input_shape: tuple[int, int, int],
    task: Task,
    audio: Mapping[str, Any] | None = None,
) -> PreTrainedModel:
    """A ``cfg.arch`` teacher for (channels, n_mels, frames) inputs, built from ``cfg`` or ``cfg.pretrained``.

    ``cfg.pretrained`` (a local folder or a hub id, :func:`resolve_pretrained`) gives the architecture and
    weights; the head is new and the input adapted (:mod:`audiokd.models.teachers.pretrained`). ``audio``,
    the features' audio settings (``meta.json``), lets a family refuse features its checkpoint was not
    trained on (AST: 16 kHz, 128 mel bins, 10 ms hop). ViT and AST attention runs in the ``eager``
    implementation so attention maps are available.
    """
    folder = resolve_pretrained(cfg.pretrained)
    if folder is not None:
        warn_if_untracked(cfg.pretrained, folder)
        return load_pretrained_teacher(cfg, folder, input_shape, task, audio)
    return family(cfg.arch).build(cfg, input_shape, task)


def teacher_arch(folder: str | Path) -> str:
    """The ``teacher.arch`` of a saved teacher, from the ``model_type`` in its config.json."""
    config = Path(folder) / "config.json"
    try:
        model_type = json.loads(config.read_text()).get("model_type", "")
    except (OSError, ValueError, AttributeError) as e:
        raise WeightsError(f"{config}: not a readable model config ({e})") from None
    try:
        return family_of_type(str(model_type)).arch
    except ValueError as e:
        raise WeightsError(f"{config}: {e}") from None


def load_teacher(folder: str | Path) -> PreTrainedModel:
    """Load a trained teacher of any family (read from its config.json), safetensors only, in eval mode."""
    fam = family(teacher_arch(folder))
    return load_pretrained(fam.model_class, folder, **fam.load_kwargs).eval()


__all__ = ["build_teacher", "load_teacher", "resolve_pretrained", "teacher_arch"]
