"""Convolutional teachers from transformers' image models, one input channel: ``resnet`` and ``convnext``.

Both take ``teacher.cnn_depths`` (blocks per stage) and ``teacher.cnn_hidden_sizes`` (channels per stage); the
defaults, [2, 2, 2, 2] and [64, 128, 256, 512], give a ResNet-18 (basic blocks, 11.2M parameters) and a small
ConvNeXt (6.4M). Their hidden states are already maps (B, C, H, W): the stem's, then one per stage, so
``distill.teacher_layers`` counts stages. They have no attention probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import (
    ConvNextConfig,
    ConvNextForImageClassification,
    PretrainedConfig,
    ResNetConfig,
    ResNetForImageClassification,
)

from audiokd.config import TeacherConfig
from audiokd.models import head_kwargs
from audiokd.models.teachers.registry import Family, Shape, register
from audiokd.models.teachers.vit import set_head
from audiokd.tasks import Task


def build_resnet(cfg: TeacherConfig, shape: Shape, task: Task) -> ResNetForImageClassification:
    """A ResNet with basic blocks; the stem is as wide as the first stage (as in ResNet-18/34).

    ``teacher.dropout`` has no counterpart in transformers' ResNet and is not used.
    """
    config = ResNetConfig(
        num_channels=shape[0],
        embedding_size=cfg.cnn_hidden_sizes[0],
        hidden_sizes=list(cfg.cnn_hidden_sizes),
        depths=list(cfg.cnn_depths),
        layer_type="basic",
        hidden_act="relu",
        **head_kwargs(task),
    )
    return ResNetForImageClassification(config)


def build_convnext(cfg: TeacherConfig, shape: Shape, task: Task) -> ConvNextForImageClassification:
    """A ConvNeXt; ``teacher.dropout`` is its stochastic-depth rate (``drop_path_rate``)."""
    config = ConvNextConfig(
        num_channels=shape[0],
        num_stages=len(cfg.cnn_depths),
        hidden_sizes=list(cfg.cnn_hidden_sizes),
        depths=list(cfg.cnn_depths),
        drop_path_rate=cfg.dropout,
        **head_kwargs(task),
    )
    return ConvNextForImageClassification(config)


def adapt_resnet(config: PretrainedConfig, cfg: TeacherConfig, shape: Shape, task: Task) -> None:
    """A ResNet checkpoint's config for one input channel and our head (any input size works)."""
    config.num_channels = shape[0]
    set_head(config, task)


def adapt_convnext(config: PretrainedConfig, cfg: TeacherConfig, shape: Shape, task: Task) -> None:
    """A ConvNeXt checkpoint's config for one input channel, our head and stochastic depth."""
    config.num_channels = shape[0]
    config.drop_path_rate = cfg.dropout
    set_head(config, task)


def feature_maps(model: torch.nn.Module, hidden_states: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Stage outputs 1..L, already (B, C, H, W); the stem's output (``hidden_states[0]``) left out."""
    return list(hidden_states[1:])


def _stages(config: PretrainedConfig) -> int:
    return len(config.depths)


RESNET = register(
    Family(
        arch="resnet",
        model_type="resnet",
        model_class=ResNetForImageClassification,
        build=build_resnet,
        adapt_config=adapt_resnet,
        feature_maps=feature_maps,
        num_layers=_stages,
        head="classifier.",
    )
)
CONVNEXT = register(
    Family(
        arch="convnext",
        model_type="convnext",
        model_class=ConvNextForImageClassification,
        build=build_convnext,
        adapt_config=adapt_convnext,
        feature_maps=feature_maps,
        num_layers=_stages,
        head="classifier.",
    )
)
