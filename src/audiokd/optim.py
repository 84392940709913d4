"""The optimizer of the training loop: AdamW with weight decay on weight matrices and kernels only.

Decoupled weight decay (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization",
arXiv:1711.05101) shrinks weights toward 0. That is a prior for weight matrices and convolution kernels; for
biases, normalisation scales and shifts (LayerNorm, BatchNorm) it pulls the scales toward 0 and shifts the
outputs, and for position embeddings and the CLS token it erases what the model learned about positions.
The usual practice (BERT, timm, the HF Trainer) exempts them: every parameter with at most one dimension,
and the embeddings named in :data:`NO_DECAY_NAMES`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

log = logging.getLogger(__name__)

# ViT/AST embeddings: (1, tokens, hidden) tensors that are not weight matrices
NO_DECAY_NAMES = ("position_embeddings", "cls_token", "distillation_token", "mask_token")


def decays(name: str, p: torch.nn.Parameter) -> bool:
    """Whether the parameter ``name`` gets weight decay: weight matrices and kernels, not the rest."""
    return p.ndim > 1 and not any(k in name.split(".")[-1] for k in NO_DECAY_NAMES)


def param_groups(modules: Sequence[torch.nn.Module], weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups of ``modules``: ``weight_decay`` for :func:`decays`, 0 for the others."""
    decay: list[torch.nn.Parameter] = []
    other: list[torch.nn.Parameter] = []
    for module in modules:
        for name, p in module.named_parameters():
            (decay if decays(name, p) else other).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def adamw(modules: Sequence[torch.nn.Module], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over ``modules`` with :func:`param_groups`."""
    return torch.optim.AdamW(param_groups(modules, weight_decay), lr=lr)
