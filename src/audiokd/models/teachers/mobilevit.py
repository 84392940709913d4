"""MobileViT teachers: the student's own family, scaled up (``teacher.arch: mobilevit``).

A convolution + transformer hybrid (Mehta & Rastegari 2022, "MobileViT: Light-weight, General-purpose, and
Mobile-friendly Vision Transformer", arXiv:2110.02178) from transformers, one input channel.
``teacher.mobilevit_hidden_sizes`` (the three transformer widths) and ``teacher.mobilevit_neck_hidden_sizes``
(the seven convolution widths) give its size; the defaults are MobileViT-XS (1.9M parameters with one
input channel, the paper's middle size; MobileViT-S is ``[144, 192, 240]`` and
``[16, 32, 64, 96, 128, 160, 640]``, 4.9M), and
``teacher.num_heads`` must divide each transformer width. ``teacher.dropout`` is the classifier's dropout.

Why this family: on a few hundred labelled clips the 1M MobileViT student trained alone beat every
from-scratch ViT and ResNet-18 teacher we measured (README, "Teachers"), so a teacher of the same
inductive bias with more width is the one that stays ahead of it. Its hidden states are maps (B, C, H, W),
one per stage, so feature and activation-attention terms pair it with any student, like the CNNs.
``apple/mobilevit-small`` and ``apple/mobilevit-x-small`` (ImageNet) load with ``teacher.pretrained``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import MobileViTConfig, MobileViTForImageClassification, PretrainedConfig

from audiokd.config import TeacherConfig
from audiokd.models import head_kwargs, unit_batchnorm_scales
from audiokd.models.teachers.registry import Family, Shape, register
from audiokd.models.teachers.vit import set_head
from audiokd.tasks import Task


def build_mobilevit(cfg: TeacherConfig, shape: Shape, task: Task) -> MobileViTForImageClassification:
    """A MobileViT with the ``mobilevit_*`` widths; batch-norm scales start at 1 (see
    :func:`audiokd.models.unit_batchnorm_scales`: transformers draws them from N(0, 0.02))."""
    channels, height, width = shape
    config = MobileViTConfig(
        num_channels=channels,
        image_size=max(height, width),
        hidden_sizes=list(cfg.mobilevit_hidden_sizes),
        neck_hidden_sizes=list(cfg.mobilevit_neck_hidden_sizes),
        num_attention_heads=cfg.num_heads,
        classifier_dropout_prob=cfg.dropout,
        **head_kwargs(task),
    )
    return unit_batchnorm_scales(MobileViTForImageClassification(config))


def adapt_mobilevit(config: PretrainedConfig, cfg: TeacherConfig, shape: Shape, task: Task) -> None:
    """A MobileViT checkpoint's config for one input channel, our head and classifier dropout."""
    config.num_channels = shape[0]
    config.classifier_dropout_prob = cfg.dropout
    set_head(config, task)


def feature_maps(model: torch.nn.Module, hidden_states: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The five stages' outputs, already (B, C, H, W): transformers' MobileViT returns no stem map."""
    return list(hidden_states)


def _stages(config: PretrainedConfig) -> int:
    return len(config.neck_hidden_sizes) - 2  # five stages; the last two widths are stem and expansion


MOBILEVIT = register(
    Family(
        arch="mobilevit",
        model_type="mobilevit",
        model_class=MobileViTForImageClassification,
        build=build_mobilevit,
        adapt_config=adapt_mobilevit,
        feature_maps=feature_maps,
        num_layers=_stages,
        head="classifier.",
    )
)
