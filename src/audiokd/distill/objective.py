"""The per-step distillation objective: which teacher signal, which intermediate outputs, which terms.

- Response-only KD (``beta == gamma == 0``): the teacher's outputs come from its cache; each step runs one
  forward pass, the student's, and no hidden states are requested from anyone. Augmented student batches
  keep the cache with ``augment.teacher_view`` clean (mixed as mixup mixed the clips), or take the teacher's
  outputs on the very views shown with ``stored`` (scored once before training); with ``augmented``
  the teacher runs live on the augmented batch instead.
- Feature or attention terms on: the teacher runs live, frozen in eval mode under ``no_grad``, once per step,
  with ``output_hidden_states`` (and ``output_attentions`` for ``attention_map``); its outputs for the soft
  loss come from that same pass, never a second one.
- With unlabelled clips the training set is the train split followed by the unlabelled split
  (:mod:`audiokd.distill.unlabeled`): a batch row is labelled when its index is below ``labelled_rows``, and
  that mask goes to the loss (hard loss on labelled rows only; cached teacher outputs cover both parts).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from audiokd.config import ConfigError, DistillConfig
from audiokd.distill.feature_losses import build_term
from audiokd.distill.losses import KDLoss
from audiokd.distributed import unwrap
from audiokd.models.features import (
    Inner,
    pair_layers,
    select_layers,
    student_inner,
    teacher_inner,
    teacher_layer_count,
)
from audiokd.models.teacher import load_teacher
from audiokd.models.teachers import family_of
from audiokd.tasks import Task
from audiokd.teaching.live import load_live
from audiokd.training import Objective

if TYPE_CHECKING:
    from audiokd.augment import BatchAugment

log = logging.getLogger(__name__)


@dataclass
class DistillObjective:
    """What :func:`audiokd.training.fit` needs: the objective and the modules that train beside the model."""

    objective: Objective
    extra_modules: tuple[torch.nn.Module, ...]
    live_teacher: bool
    terms: list[str]
    pairs: list[tuple[int, int]] = field(default_factory=list)
    teacher: torch.nn.Module | None = None  # the live teacher (frozen, eval mode); None with the cache


def _student_pass(
    net: torch.nn.Module, x: torch.Tensor, hidden: bool, attn: bool
) -> tuple[torch.Tensor, Inner | None]:
    kwargs: dict[str, bool] = {}
    if hidden:
        kwargs["output_hidden_states"] = True
    if attn:
        kwargs["output_attentions"] = True
    out = net(pixel_values=x, **kwargs)
    return out.logits, (student_inner(unwrap(net), out, attn) if hidden else None)


def _check_attention_sizes(teacher: Inner, student: Inner, pairs: list[tuple[int, int]]) -> None:
    """attention_map compares (1 + N) x (1 + N) maps token by token: both models need the same patch grid."""
    assert teacher.attentions is not None and student.attentions is not None
    for t, s in pairs:
        t_n, s_n = teacher.attentions[t].shape[-1], student.attentions[s].shape[-1]
        if t_n != s_n:
            raise ConfigError(
                f"distill.attention_loss = attention_map: the teacher attends over {t_n} tokens, the "
                f"student over {s_n}; give both the same patch grid (student.vit_patch_size = "
                "teacher.patch_size, and for an AST teacher teacher.ast_stride = teacher.patch_size) or use "
                "attention_loss: activation"
            )


def build_objective(
    cfg: DistillConfig,
    student: torch.nn.Module,
    teacher_dir: Path | None,
    cached_train: torch.Tensor | None,
    sample_x: torch.Tensor,
    device: torch.device,
    task: Task | None = None,
    force_live: bool = False,
    labelled_rows: int | None = None,
    mix: BatchAugment | None = None,
) -> DistillObjective:
    """Assemble the KD objective for ``cfg``; ``sample_x`` (a couple of clips) sizes the projections.

    ``force_live``: augmentation changes the input, so the cache does not apply; the teacher runs live on
    the augmented batch (without hidden states unless beta or gamma asks for them).
    ``labelled_rows``: training rows from this index on are unlabelled clips (None: every row is labelled).
    ``mix``: the batches' augmentation; cached teacher outputs are mixed as its mixup mixed the clips
    (``augment.teacher_view`` clean: the clean clip's outputs stand for its masked or cropped views).
    ``cached_train`` of shape (rows, views, outputs) holds the teacher's outputs on the stored views
    (``teacher_view`` stored): each row's target is its output on the view ``mix`` showed the student.
    """
    inner_on = cfg.beta > 0 or cfg.gamma > 0

    def labelled(idx: torch.Tensor) -> torch.Tensor | None:
        return None if labelled_rows is None else (idx < labelled_rows).to(device)

    attn_maps = cfg.gamma > 0 and cfg.attention_loss == "attention_map"
    needs_teacher = cfg.alpha < 1 or inner_on
    if force_live and needs_teacher and not inner_on:
        kd = KDLoss(
            cfg.alpha, cfg.temperature, cfg.soft_loss, task=task, unlabeled_weight=cfg.unlabeled_weight
        )
        # one teacher, or an ensemble's members run together (audiokd.teaching.live.check_live allowed it)
        live = load_live(teacher_dir, task or Task("regression", ())).to(device)
        live.requires_grad_(False)

        def augmented_objective(
            net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor
        ) -> dict[str, torch.Tensor]:
            with torch.no_grad():
                teacher_logits = live(pixel_values=x).logits
            logits, _ = _student_pass(net, x, False, False)
            return kd(logits, y, teacher_logits, labelled=labelled(idx))

        return DistillObjective(
            augmented_objective, (), live_teacher=True, terms=kd.active_terms, teacher=live
        )
    if not inner_on:
        kd = KDLoss(
            cfg.alpha, cfg.temperature, cfg.soft_loss, task=task, unlabeled_weight=cfg.unlabeled_weight
        )
        teacher_out = cached_train.to(device) if cached_train is not None else None

        def cached_objective(
            net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor
        ) -> dict[str, torch.Tensor]:
            logits, _ = _student_pass(net, x, False, False)
            teacher_logits = None if teacher_out is None else teacher_out[idx.to(device)]
            if teacher_logits is not None and teacher_logits.dim() == 3:  # stored views: (rows, views, out)
                assert mix is not None and mix.last_views is not None, "stored views need the batch's views"
                rows = torch.arange(len(teacher_logits), device=device)
                teacher_logits = teacher_logits[rows, mix.last_views.to(device)]
            if teacher_logits is not None and mix is not None:
                teacher_logits = mix.mix_like(teacher_logits)
            return kd(logits, y, teacher_logits, labelled=labelled(idx))

        return DistillObjective(cached_objective, (), live_teacher=False, terms=kd.active_terms)

    if teacher_dir is None:
        raise ValueError("distill: feature and attention terms need a teacher")
    teacher = load_teacher(teacher_dir).to(device)
    teacher.requires_grad_(False)
    if attn_maps and not family_of(teacher).has_attentions:
        raise ConfigError(
            "distill.attention_loss = attention_map needs a teacher with attention probabilities "
            f"(teacher.arch vit or ast); this teacher is {family_of(teacher).arch}: use "
            "distill.attention_loss: activation"
        )
    layers = select_layers(cfg.teacher_layers, teacher_layer_count(teacher))
    with torch.no_grad():
        t_out = teacher(pixel_values=sample_x, output_hidden_states=True, output_attentions=attn_maps)
        t_inner = teacher_inner(teacher, t_out, layers, attn_maps)
        was_training = student.training
        student.eval()
        _, s_inner = _student_pass(student, sample_x, True, attn_maps)
        student.train(was_training)
    assert s_inner is not None
    n_student = len(s_inner.attentions) if attn_maps and s_inner.attentions else len(s_inner.maps)
    pairs = pair_layers(len(layers), n_student)
    if attn_maps:
        _check_attention_sizes(t_inner, s_inner, pairs)
    feature = build_term(
        "feature", cfg.feature_loss, s_inner.channels, t_inner.channels, pairs, cfg.attention_p
    )
    attention = build_term(
        "attention", cfg.attention_loss, s_inner.channels, t_inner.channels, pairs, cfg.attention_p
    )
    feature.to(device)
    kd = KDLoss(
        cfg.alpha,
        cfg.temperature,
        cfg.soft_loss,
        cfg.beta,
        cfg.gamma,
        feature,
        attention,
        task,
        unlabeled_weight=cfg.unlabeled_weight,
    )
    log.info(
        "distill: live teacher, layers %s paired with student features %s",
        layers,
        [(layers[t], s) for t, s in pairs],
    )

    def live_objective(
        net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            out = teacher(pixel_values=x, output_hidden_states=True, output_attentions=attn_maps)
            t_in = teacher_inner(teacher, out, layers, attn_maps)
        logits, s_in = _student_pass(net, x, True, attn_maps)
        return kd(logits, y, out.logits, s_in, t_in, labelled=labelled(idx))

    extra = (feature,) if cfg.beta > 0 and any(True for _ in feature.parameters()) else ()
    return DistillObjective(
        live_objective, extra, live_teacher=True, terms=kd.active_terms, pairs=pairs, teacher=teacher
    )
