"""The student: a Hugging Face MobileViT (about 1M parameters) or a small ViT, with a regression head."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoModelForImageClassification,
    MobileNetV2Config,
    MobileNetV2ForImageClassification,
    MobileViTConfig,
    MobileViTForImageClassification,
    MobileViTV2Config,
    MobileViTV2ForImageClassification,
    ViTConfig,
    ViTForImageClassification,
)

from audiokd.config import StudentConfig
from audiokd.models import head_kwargs, load_pretrained, unit_batchnorm_scales
from audiokd.tasks import Task


def build_student(cfg: StudentConfig, input_shape: tuple[int, int, int], task: Task) -> torch.nn.Module:
    """A student built from ``cfg`` for (channels, n_mels, frames) inputs.

    ``mobilevit`` (default): MobileViT with ``hidden_sizes``/``neck_hidden_sizes``; ``mobilevitv2``
    (``width_multiplier``); ``mobilenet_v2`` (``depth_multiplier``). ``vit``: a small ViT
    (``vit_*`` keys) whose attention probabilities allow attention-map transfer from the teacher.
    """
    channels, height, width = input_shape
    # what the convolutional families share
    conv = {
        "num_channels": channels,
        "image_size": max(height, width),
        "classifier_dropout_prob": cfg.dropout,
        **head_kwargs(task),
    }
    if cfg.arch == "mobilevitv2":
        config = MobileViTV2Config(width_multiplier=cfg.width_multiplier, **conv)
        return unit_batchnorm_scales(MobileViTV2ForImageClassification(config))
    if cfg.arch == "mobilenet_v2":
        config = MobileNetV2Config(depth_multiplier=cfg.depth_multiplier, **conv)
        return unit_batchnorm_scales(MobileNetV2ForImageClassification(config))
    if cfg.arch == "vit":
        config = ViTConfig(
            image_size=(height, width),
            patch_size=cfg.vit_patch_size,
            num_channels=channels,
            hidden_size=cfg.vit_hidden_size,
            num_hidden_layers=cfg.vit_layers,
            num_attention_heads=cfg.num_heads,
            intermediate_size=cfg.vit_intermediate_size,
            **head_kwargs(task),
            attn_implementation="eager",
        )
        return ViTForImageClassification(config)
    config = MobileViTConfig(
        hidden_sizes=list(cfg.hidden_sizes),
        neck_hidden_sizes=list(cfg.neck_hidden_sizes),
        expand_ratio=cfg.expand_ratio,
        num_attention_heads=cfg.num_heads,
        **conv,
    )
    return unit_batchnorm_scales(MobileViTForImageClassification(config))


def load_student(folder: str | Path) -> torch.nn.Module:
    """Load a trained student of any supported family (safetensors only, checked), in eval mode."""
    return load_pretrained(AutoModelForImageClassification, folder).eval()
