"""Combining the outputs of several teachers (ensemble members, fold teachers) into one teacher's outputs.

- Regression: the mean of the members' outputs, in the standardised target space every teacher predicts in.
- Classification: the mean of the members' class probabilities (softmax of their logits), stored as its log,
  so that the cache still holds logits: ``softmax(log p) = p`` gives the soft losses (Hinton's softmax KL at
  T = 1, or at T > 1 the tempered ``p^(1/T)`` renormalised) exactly the ensemble's distribution. This is how
  ensembles of classifiers are averaged for distillation (Hinton et al. 2015, arXiv:1503.02531, section 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from audiokd.tasks import Task


def mean_outputs(outputs: Sequence[torch.Tensor], task: Task) -> torch.Tensor:
    """The members' mean output (regression) or the log of their mean probabilities (classification)."""
    stack = torch.stack([o.float() for o in outputs])
    if task.kind == "classification":
        # clamped so that a probability that underflows to 0 gives a large negative logit, never -inf
        return torch.softmax(stack, dim=-1).mean(0).clamp_min(torch.finfo(torch.float32).tiny).log()
    return stack.mean(0)


def combine_splits(members: Sequence[dict[str, torch.Tensor]], task: Task) -> dict[str, torch.Tensor]:
    """:func:`mean_outputs` per split, for the splits every member has (in the first member's order)."""
    common = [s for s in members[0] if all(s in m for m in members)]
    return {s: mean_outputs([m[s] for m in members], task) for s in common}
