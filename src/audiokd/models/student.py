"""The student: a Hugging Face MobileViT (about 1M parameters) with a regression head."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import MobileViTConfig, MobileViTForImageClassification

from audiokd.config import StudentConfig


def build_student(cfg: StudentConfig, input_shape: tuple[int, int, int], num_outputs: int) -> torch.nn.Module:
    """A MobileViT built from ``cfg`` for (channels, n_mels, frames) inputs."""
    channels, height, width = input_shape
    config = MobileViTConfig(
        num_channels=channels,
        image_size=max(height, width),
        hidden_sizes=list(cfg.hidden_sizes),
        neck_hidden_sizes=list(cfg.neck_hidden_sizes),
        expand_ratio=cfg.expand_ratio,
        num_attention_heads=cfg.num_heads,
        classifier_dropout_prob=cfg.dropout,
        num_labels=num_outputs,
        problem_type="regression",
    )
    return MobileViTForImageClassification(config)


def load_student(folder: str | Path) -> torch.nn.Module:
    """Load a trained student (safetensors only), in eval mode."""
    return MobileViTForImageClassification.from_pretrained(Path(folder), use_safetensors=True).eval()
