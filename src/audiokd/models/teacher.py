"""The teacher: a Hugging Face ViT over log-mel spectrograms, one input channel, regression head."""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import ViTConfig, ViTForImageClassification

from audiokd.config import ConfigError, TeacherConfig
from audiokd.models import head_kwargs, load_pretrained
from audiokd.tasks import Task

log = logging.getLogger(__name__)


def build_teacher(
    cfg: TeacherConfig, input_shape: tuple[int, int, int], task: Task
) -> ViTForImageClassification:
    """A ViT built from ``cfg`` for (channels, n_mels, frames) inputs, or loaded from ``cfg.init_checkpoint``.

    The checkpoint is a local folder written by ``save_pretrained``, read through :func:`load_pretrained`
    (safetensors only, checked first); its head is replaced when the number of outputs differs. Attention
    runs in the ``eager`` implementation so attention maps are available.
    """
    channels, height, width = input_shape
    if cfg.init_checkpoint:
        folder = Path(cfg.init_checkpoint)
        if not (folder / "config.json").is_file():
            raise ConfigError(
                f"teacher.init_checkpoint: {folder} is not a folder with a config.json "
                "(save_pretrained output)"
            )
        model = load_pretrained(
            ViTForImageClassification,
            folder,
            ignore_mismatched_sizes=True,
            **head_kwargs(task),
            attn_implementation="eager",
            image_size=(height, width),
            num_channels=channels,
        )
        log.info("teacher initialised from %s", folder)
        return model
    if height < cfg.patch_size or width < cfg.patch_size:
        raise ConfigError(
            f"teacher.patch_size = {cfg.patch_size} is larger than the input ({height} mels x {width} frames)"
        )
    config = ViTConfig(
        image_size=(height, width),
        patch_size=cfg.patch_size,
        num_channels=channels,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.dropout,
        attn_implementation="eager",
        **head_kwargs(task),
    )
    return ViTForImageClassification(config)


def load_teacher(folder: str | Path) -> ViTForImageClassification:
    """Load a trained teacher (safetensors only, checked by :func:`load_pretrained`), in eval mode."""
    return load_pretrained(ViTForImageClassification, folder, attn_implementation="eager").eval()
