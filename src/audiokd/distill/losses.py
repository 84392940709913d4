"""Knowledge-distillation loss terms, chosen by name from one registry and combined as a weighted sum.

    total = alpha * hard + (1 - alpha) * soft + beta * feature + gamma * attention

- ``hard``: MSE between student outputs and the (standardised) labels; for classification, cross-entropy.
- ``soft`` (response-based KD, Hinton et al. 2015, "Distilling the Knowledge in a Neural Network",
  arXiv:1503.02531), by ``distill.soft_loss``, student outputs ``s``, teacher outputs ``t``:
    - ``mse``: mean (s - t)^2.
    - ``kl``: KL between Gaussians of equal variance T^2 centred on the outputs,
      KL(N(t, T^2) || N(s, T^2)) = (s - t)^2 / (2 T^2), averaged over outputs. A higher temperature widens
      both and pulls the student more softly toward the teacher. This is ``mse / (2 T^2)``: T rescales
      the soft term and nothing else, so a sweep over T is a sweep over the soft weight (Hinton's T^2
      factor for softened softmaxes would cancel it entirely).
    - ``ccc``: 1 - CCC(s, t) per output column, averaged (CCC as in Lin 1989). Across DDP processes it is
      computed on each rank's part of the batch (means and variances per shard) and the ranks' losses are
      averaged, not on the global batch: with few rows per rank, use a larger ``batch_size``.
    - ``softmax_kl``: the notebook's form, T^2 * KL(softmax(t / T) || softmax(s / T)) across the output
      vector, ``batchmean``. A softmax ignores a shift shared by all outputs, so for regression this only
      constrains the differences between outputs (and nothing with one output); it is kept so the
      notebook's results can be reproduced. For classification logits it is Hinton's loss, and
      ``kl`` means it too; ``mse`` matches logits (Ba & Caruana 2014); ``ccc`` is refused.
    - ``auto``: ``ccc`` for regression, ``mse`` for classification (:func:`resolve_soft_loss`). With the
      three-member teacher on the embedded set's three seeds ``ccc`` gave the student +0.003 CCC over
      ``mse``, while the same CCC loss on the labels alone (the no-KD student) lost 0.005: it transfers the
      teacher better there, it does not merely optimise the metric. Not the default: not measured on other
      sets with the default single teacher.
- ``feature`` and ``attention``: see :mod:`audiokd.distill.feature_losses`.

The registry itself is :mod:`audiokd.distill.registry`.

Each term is returned under its own name so each can be logged (``train/hard_loss``, ...). A term whose weight
is 0 is not computed at all.

Unlabelled clips (``data.unlabeled_manifest``) share the batches with labelled ones. A ``labelled`` row mask
then restricts ``hard`` to the labelled rows (their mean; the unlabelled rows' placeholder targets are never
read), and ``soft`` becomes the weighted mean sum_i w_i l_i / sum_i w_i of the per-clip soft losses l_i, with
w_i = 1 for a labelled clip and ``distill.unlabeled_weight`` for an unlabelled one (for ``ccc``: the CCC
with the w_i as frequency weights). Feature and attention terms cover every row, unweighted.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch.nn.functional import cross_entropy, kl_div, log_softmax, mse_loss, softmax

from audiokd.config import ConfigError
from audiokd.distill.registry import REGISTRY, lookup, register
from audiokd.distributed import global_sum
from audiokd.metrics import ccc_loss
from audiokd.tasks import Task


def hard_mse(student: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Hard (label) loss for regression: mean squared error, mean over batch and targets."""
    return mse_loss(student, labels)


def batch_mean(total: torch.Tensor, weight_sum: torch.Tensor, rows: int) -> torch.Tensor:
    """``total / weight_sum`` for a weighted mean over the batch of ``rows`` rows (0 when every weight is 0).

    Across processes it is the *global* batch's weighted mean: the weight sum is all-reduced, and the rank's
    share is scaled by global / local rows, which the training loop's scaling by local / global rows
    (:func:`audiokd.training.fit`) undoes, so the averaged gradient is that of the global weighted mean.
    """
    counts = torch.stack([weight_sum.detach().float(), torch.tensor(float(rows), device=weight_sum.device)])
    sums = global_sum(counts.to(total.device))
    return total * (sums[1] / rows) / sums[0].clamp_min(1e-12)


def _row_mean(per_row: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return batch_mean((per_row * weight).sum(), weight.sum(), len(weight))


@register("soft", "mse")
def soft_mse(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Soft loss ``mse``: mean (s - t)^2; the temperature does not enter. ``weight``: per-row weights."""
    del temperature
    if weight is None:
        return mse_loss(student, teacher)
    return _row_mean(((student - teacher) ** 2).mean(1), weight)


@register("soft", "kl")
def soft_gaussian_kl(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Soft loss ``kl``: KL(N(t, T^2) || N(s, T^2)) = (s - t)^2 / (2 T^2), mean over batch and outputs."""
    if weight is None:
        return ((student - teacher) ** 2).mean() / (2.0 * temperature**2)
    return _row_mean(((student - teacher) ** 2).mean(1), weight) / (2.0 * temperature**2)


@register("soft", "ccc")
def soft_ccc(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Soft loss ``ccc``: 1 - CCC(s, t) per output column over the batch (rows weighted by ``weight``),
    averaged over columns. Under DDP the batch is this rank's shard (the moments are per shard)."""
    del temperature
    return ccc_loss(student, teacher, weight)


@register("soft", "softmax_kl")
def soft_softmax_kl(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Soft loss ``softmax_kl`` (Hinton 2015): T^2 * KL(softmax(t/T) || softmax(s/T)), batchmean."""
    t = temperature
    if weight is None:
        return (
            kl_div(log_softmax(student / t, dim=1), softmax(teacher / t, dim=1), reduction="batchmean")
            * t
            * t
        )
    per_row = kl_div(log_softmax(student / t, dim=1), softmax(teacher / t, dim=1), reduction="none").sum(1)
    return _row_mean(per_row, weight) * t * t


SOFT_LOSSES = REGISTRY["soft"]


def _float_inner(inner: Any) -> Any:
    """Intermediate outputs (:class:`audiokd.models.features.Inner`) with float32 maps and attentions."""
    if inner is None:
        return None
    attentions = [a.float() for a in inner.attentions] if inner.attentions is not None else None
    return dataclasses.replace(inner, maps=[m.float() for m in inner.maps], attentions=attentions)


def resolve_soft_loss(soft_loss: str, task: Task | None) -> str:
    """``distill.soft_loss`` with ``auto`` made concrete: ``ccc`` for regression, ``mse`` for classification
    (any other name unchanged)."""
    if soft_loss != "auto":
        return soft_loss
    return "mse" if task is not None and task.kind == "classification" else "ccc"


class KDLoss(torch.nn.Module):
    """``total = alpha * hard + (1 - alpha) * soft + beta * feature + gamma * attention``, each term by name.

    ``feature`` and ``attention`` are callables taking the student's and teacher's intermediate outputs
    (see :mod:`audiokd.distill.feature_losses`); they are only called when their weight is above zero.
    With ``alpha == 1`` the soft term is not computed (no teacher outputs needed) and reported as 0.
    ``unlabeled_weight`` weighs an unlabelled row's soft loss when :meth:`forward` gets a ``labelled`` mask.
    """

    def __init__(
        self,
        alpha: float,
        temperature: float,
        soft_loss: str = "mse",
        beta: float = 0.0,
        gamma: float = 0.0,
        feature: torch.nn.Module | None = None,
        attention: torch.nn.Module | None = None,
        task: Task | None = None,
        unlabeled_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.alpha, self.temperature, self.beta, self.gamma = alpha, temperature, beta, gamma
        self.unlabeled_weight = unlabeled_weight
        self.hard_fn = task.hard_loss if task is not None else hard_mse
        self.classification = task is not None and task.kind == "classification"
        soft_loss = resolve_soft_loss(soft_loss, task)
        if task is not None and task.kind == "classification":
            if soft_loss == "ccc":
                raise ConfigError("distill.soft_loss = ccc fits regression only; use kl or mse instead")
            if soft_loss == "kl":
                soft_loss = "softmax_kl"  # Hinton's KL of softened class distributions, times T^2
        self.soft_fn = lookup("soft", soft_loss)
        if beta > 0 and feature is None:
            raise ValueError("KDLoss: beta > 0 needs a feature term")
        if gamma > 0 and attention is None:
            raise ValueError("KDLoss: gamma > 0 needs an attention term")
        self.feature = feature if beta > 0 else None
        self.attention = attention if gamma > 0 else None

    @property
    def active_terms(self) -> list[str]:
        """Names of the terms this loss computes."""
        names = ["hard", "soft"]
        names += ["feature"] if self.feature is not None else []
        names += ["attention"] if self.attention is not None else []
        return names

    def forward(
        self,
        student: torch.Tensor,
        labels: torch.Tensor,
        teacher: torch.Tensor | None = None,
        student_inner: Any = None,
        teacher_inner: Any = None,
        labelled: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Compute ``{"hard", "soft", ["feature"], ["attention"], "total"}`` for one batch.

        ``labelled``: a boolean mask of the rows that have labels (None: all of them). The other rows'
        ``labels`` are placeholders: they are selected away before the hard loss is computed, so they reach
        neither its value nor its gradient, whatever they hold.

        Every term is computed in float32, also under bf16/fp16 autocast (``runtime.precision``): the
        outputs and intermediate maps are cast up first. Means, variances and covariances of bf16 values
        (8-bit mantissa) lose the small differences that ``ccc`` and the MSE terms measure late in training.
        """
        with torch.autocast(student.device.type, enabled=False):
            return self._terms(
                student.float(),
                labels.float() if labels.is_floating_point() else labels,
                teacher.float() if teacher is not None else None,
                _float_inner(student_inner),
                _float_inner(teacher_inner),
                labelled,
            )

    def _terms(
        self,
        student: torch.Tensor,
        labels: torch.Tensor,
        teacher: torch.Tensor | None,
        student_inner: Any,
        teacher_inner: Any,
        labelled: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        hard = (
            self.hard_fn(student, labels)
            if labelled is None
            else self._masked_hard(student, labels, labelled)
        )
        if self.alpha < 1.0:
            if teacher is None:
                raise ValueError("KDLoss: alpha < 1 needs teacher outputs")
            if labelled is None:
                soft = self.soft_fn(student, teacher, self.temperature)
            else:
                weight = torch.where(labelled, 1.0, self.unlabeled_weight).to(student.dtype)
                soft = self.soft_fn(student, teacher, self.temperature, weight=weight)
        else:
            soft = torch.zeros((), device=student.device)
        terms = {"hard": hard, "soft": soft}
        total = self.alpha * hard + (1.0 - self.alpha) * soft
        if self.feature is not None:
            terms["feature"] = self.feature(student_inner, teacher_inner)
            total = total + self.beta * terms["feature"]
        if self.attention is not None:
            terms["attention"] = self.attention(student_inner, teacher_inner)
            total = total + self.gamma * terms["attention"]
        terms["total"] = total
        return terms

    def _masked_hard(
        self, student: torch.Tensor, labels: torch.Tensor, labelled: torch.Tensor
    ) -> torch.Tensor:
        """The hard loss's mean over the labelled rows (per row: MSE over targets, or cross-entropy)."""
        s, y = student[labelled], labels[labelled]
        per_row = cross_entropy(s, y, reduction="none") if self.classification else ((s - y) ** 2).mean(1)
        return batch_mean(per_row.sum(), labelled.sum(), len(labelled))
