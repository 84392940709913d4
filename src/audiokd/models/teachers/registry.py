"""The teacher families behind ``teacher.arch``: what each one must provide, and the registry that holds them.

Every family's model is called the same way: ``model(pixel_values=x)`` with x (B, 1, n_mels, frames) returns
``.logits`` (and ``.hidden_states`` with ``output_hidden_states=True``). What differs between families lives
here, behind one :class:`Family` record each: how to build the model from the ``teacher`` section, how to turn
its hidden states into canonical maps (B, C, H, W) for the feature and attention terms, and how to adapt a
pretrained checkpoint to our input (shape, channels, head).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PretrainedConfig, PreTrainedModel

from audiokd.config import TeacherConfig
from audiokd.tasks import Task

log = logging.getLogger(__name__)

Shape = tuple[int, int, int]


def _no_attentions(model: torch.nn.Module, attentions: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    raise ValueError(f"{type(model).__name__} has no attention probabilities")


def _no_resize(key: str, tensor: torch.Tensor, source: PretrainedConfig, target: PretrainedConfig) -> None:
    return None


def _no_check(config: PretrainedConfig, folder: Path, shape: Shape, audio: Mapping[str, Any] | None) -> None:
    return None


@dataclass(frozen=True)
class Family:
    """One teacher family: its ``teacher.arch`` name, its transformers class and the hooks that differ.

    - ``build(cfg, shape, task)``: a freshly initialised model for (channels, n_mels, frames) inputs.
    - ``adapt_config(config, cfg, shape, task)``: edit a checkpoint's config in place for our input shape,
      head (:func:`audiokd.models.head_kwargs`) and ``teacher.dropout``; its architecture stays.
    - ``feature_maps(model, hidden_states)``: layers 1..L as canonical maps (B, C, H, W), ``hidden_states[0]``
      (the embeddings or stem) left out, so layer ``i`` of ``distill.teacher_layers`` is element ``i - 1``.
    - ``num_layers(config)``: L, the number of layers ``feature_maps`` returns.
    - ``attentions(model, attentions)``: per layer (B, heads, 1 + N, 1 + N), ViT's layout (one special token
      first, then the patches row by row); only where ``has_attentions``.
    - ``resize(key, tensor, source, target)``: a checkpoint tensor whose shape depends on the input shape
      (position embeddings) brought to ``target``'s, or None when the family has no such tensor at ``key``.
    - ``check_source(config, folder, shape, audio)``: refuse a checkpoint that cannot serve these features
      (:class:`audiokd.config.ConfigError`, one line naming the ``audio.*`` keys).
    - ``head``: state-dict prefix of the output layer, always new for a pretrained checkpoint.
    - ``load_kwargs``: extra ``from_pretrained`` arguments (eager attention, so attention maps exist).
    """

    arch: str
    model_type: str
    model_class: type[PreTrainedModel]
    build: Callable[[TeacherConfig, Shape, Task], PreTrainedModel]
    adapt_config: Callable[[PretrainedConfig, TeacherConfig, Shape, Task], None]
    feature_maps: Callable[[torch.nn.Module, Sequence[torch.Tensor]], list[torch.Tensor]]
    num_layers: Callable[[PretrainedConfig], int]
    head: str
    has_attentions: bool = False
    attentions: Callable[[torch.nn.Module, Sequence[torch.Tensor]], list[torch.Tensor]] = _no_attentions
    resize: Callable[[str, torch.Tensor, PretrainedConfig, PretrainedConfig], torch.Tensor | None] = (
        _no_resize
    )
    check_source: Callable[[PretrainedConfig, Path, Shape, Mapping[str, Any] | None], None] = _no_check
    load_kwargs: Mapping[str, Any] = field(default_factory=dict)


FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add ``family`` to the registry under its ``arch`` (each arch once)."""
    if family.arch in FAMILIES:
        raise ValueError(f"teacher family {family.arch!r} registered twice")
    FAMILIES[family.arch] = family
    return family


def family(arch: str) -> Family:
    """The family registered as ``arch`` (``teacher.arch``)."""
    try:
        return FAMILIES[arch]
    except KeyError:
        raise ValueError(f"teacher.arch = {arch!r}: no such teacher family ({', '.join(FAMILIES)})") from None


def family_of_type(model_type: str) -> Family:
    """The family whose transformers ``model_type`` this is (as a saved ``config.json`` names it)."""
    for fam in FAMILIES.values():
        if fam.model_type == model_type:
            return fam
    known = ", ".join(f"{f.model_type} ({f.arch})" for f in FAMILIES.values())
    raise ValueError(f"model_type {model_type!r} is not a teacher family; known: {known}")


def family_of_config(config: PretrainedConfig) -> Family:
    """The family of a model config."""
    return family_of_type(getattr(config, "model_type", ""))


def family_of(model: torch.nn.Module) -> Family:
    """The family of a built or loaded teacher."""
    return family_of_config(model.config)  # type: ignore[arg-type]
