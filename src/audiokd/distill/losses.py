"""Knowledge-distillation loss terms, chosen by name and combined as a weighted sum.

The student objective (response-based KD, Hinton et al. 2015, "Distilling the Knowledge in a Neural
Network", arXiv:1503.02531, adapted to regression):

    total = alpha * hard + (1 - alpha) * soft

- ``hard``: MSE between student outputs and the (standardised) labels.
- ``soft``: a distance between student outputs ``s`` and teacher outputs ``t``, by ``distill.soft_loss``:
    - ``mse``: mean (s - t)^2.
    - ``kl``: the KL divergence between Gaussians of equal variance T^2 centred on the outputs,
      KL(N(t, T^2) || N(s, T^2)) = (s - t)^2 / (2 T^2), averaged over outputs. A higher temperature T
      widens both distributions and pulls the student more softly toward the teacher.
Every term is returned under its own name so each can be logged (``train/hard_loss``, ...).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn.functional import mse_loss


def hard_mse(student: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Hard (label) loss for regression: mean squared error, mean over batch and targets."""
    return mse_loss(student, labels)


def soft_mse(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Soft loss ``mse``: mean (s - t)^2; the temperature does not enter."""
    del temperature
    return mse_loss(student, teacher)


def soft_gaussian_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Soft loss ``kl``: KL(N(t, T^2) || N(s, T^2)) = (s - t)^2 / (2 T^2), mean over batch and outputs."""
    return ((student - teacher) ** 2).mean() / (2.0 * temperature**2)


SoftLoss = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
SOFT_LOSSES: dict[str, SoftLoss] = {"mse": soft_mse, "kl": soft_gaussian_kl}


class KDLoss(torch.nn.Module):
    """``total = alpha * hard + (1 - alpha) * soft``; returns each term by name.

    With ``alpha == 1`` the soft term is not computed (no teacher needed) and reported as 0.
    """

    def __init__(self, alpha: float, temperature: float, soft_loss: str = "mse") -> None:
        super().__init__()
        if soft_loss not in SOFT_LOSSES:
            raise ValueError(
                f"distill.soft_loss: unknown {soft_loss!r}; choose from {', '.join(SOFT_LOSSES)}"
            )
        self.alpha = alpha
        self.temperature = temperature
        self.soft_fn = SOFT_LOSSES[soft_loss]

    def forward(
        self, student: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Compute ``{"hard", "soft", "total"}`` for one batch."""
        hard = hard_mse(student, labels)
        if self.alpha < 1.0:
            if teacher is None:
                raise ValueError("KDLoss: alpha < 1 needs teacher outputs")
            soft = self.soft_fn(student, teacher, self.temperature)
        else:
            soft = torch.zeros((), device=student.device)
        total = self.alpha * hard + (1.0 - self.alpha) * soft
        return {"hard": hard, "soft": soft, "total": total}
