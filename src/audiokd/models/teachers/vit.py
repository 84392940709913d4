"""``teacher.arch: vit``: a Hugging Face ViT over the log-mel spectrogram (one input channel), non-overlapping
square patches; hidden states are tokens (B, 1 + N, D) with the CLS token first."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn.functional import interpolate
from transformers import PretrainedConfig, ViTConfig, ViTForImageClassification

from audiokd.config import ConfigError, TeacherConfig
from audiokd.models import head_kwargs
from audiokd.models.features import tokens_to_map, vit_grid
from audiokd.models.teachers.registry import Family, Shape, register
from audiokd.tasks import Task


def check_fits(cfg: TeacherConfig, shape: Shape) -> None:
    """Refuse a patch larger than the input (the patch grid would be empty)."""
    _, height, width = shape
    if height < cfg.patch_size or width < cfg.patch_size:
        raise ConfigError(
            f"teacher.patch_size = {cfg.patch_size} is larger than the input ({height} mels x {width} frames)"
        )


def build(cfg: TeacherConfig, shape: Shape, task: Task) -> ViTForImageClassification:
    """A ViT built from ``cfg``; attention runs in the ``eager`` implementation so attention maps exist."""
    check_fits(cfg, shape)
    channels, height, width = shape
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


def set_head(config: PretrainedConfig, task: Task) -> None:
    """Point a checkpoint's config at our outputs (width, problem type, class names)."""
    for key, value in head_kwargs(task).items():
        setattr(config, key, value)


def adapt_config(config: PretrainedConfig, cfg: TeacherConfig, shape: Shape, task: Task) -> None:
    """A ViT checkpoint's config for our (channels, n_mels, frames) input, head and dropout."""
    channels, height, width = shape
    config.image_size = (height, width)
    config.num_channels = channels
    config.hidden_dropout_prob = cfg.dropout
    config.attention_probs_dropout_prob = cfg.dropout
    set_head(config, task)


def _grid(config: PretrainedConfig) -> tuple[int, int]:
    size = config.image_size if isinstance(config.image_size, Sequence) else (config.image_size,) * 2
    patch = config.patch_size if isinstance(config.patch_size, Sequence) else (config.patch_size,) * 2
    return size[0] // patch[0], size[1] // patch[1]


def resize_grid(pos: torch.Tensor, special: int, old: tuple[int, int], new: tuple[int, int]) -> torch.Tensor:
    """Position embeddings (1, special + gh*gw, D) bilinearly resampled from grid ``old`` to ``new``.

    The special tokens' embeddings are kept; this is how DeiT and timm (``resample_abs_pos_embed``) carry a
    ViT's learned positions to another input size.
    """
    head, grid = pos[:, :special], pos[:, special:]
    dim = grid.shape[-1]
    grid = grid.reshape(1, *old, dim).permute(0, 3, 1, 2)
    grid = interpolate(grid.float(), size=new, mode="bilinear", align_corners=False).to(pos.dtype)
    return torch.cat([head, grid.permute(0, 2, 3, 1).reshape(1, new[0] * new[1], dim)], dim=1)


def resize(
    key: str, tensor: torch.Tensor, source: PretrainedConfig, target: PretrainedConfig
) -> torch.Tensor | None:
    """The position embeddings of a checkpoint trained on another image size, resampled to ours."""
    if not key.endswith("embeddings.position_embeddings"):
        return None
    return resize_grid(tensor, 1, _grid(source), _grid(target))


def feature_maps(model: torch.nn.Module, hidden_states: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Encoder layers 1..L, tokens laid out on the patch grid (CLS dropped)."""
    grid = vit_grid(model)
    return [tokens_to_map(h, grid) for h in hidden_states[1:]]


def attentions(model: torch.nn.Module, attn: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Already in the canonical layout (CLS first, then the patches row by row)."""
    return list(attn)


FAMILY = register(
    Family(
        arch="vit",
        model_type="vit",
        model_class=ViTForImageClassification,
        build=build,
        adapt_config=adapt_config,
        feature_maps=feature_maps,
        num_layers=lambda config: int(config.num_hidden_layers),
        head="classifier.",
        has_attentions=True,
        attentions=attentions,
        resize=resize,
        load_kwargs={"attn_implementation": "eager"},
    )
)
