"""Quality metrics: the concordance correlation coefficient (CCC) and its per-target mean."""

from __future__ import annotations

import numpy as np
import torch


def ccc(pred: np.ndarray | torch.Tensor, true: np.ndarray | torch.Tensor) -> float:
    """Lin's concordance correlation coefficient between two 1-D series.

    CCC = 2 cov(x, y) / (var(x) + var(y) + (mean(x) - mean(y))^2)   (Lin, Biometrics 1989),
    with population (biased) moments. 1 is perfect agreement, -1 perfect negation, 0 none; a constant
    prediction gives 0. When both series are the same constant CCC is undefined (0/0): returns 0.0.
    """
    x = np.asarray(pred, dtype=np.float64).ravel()
    y = np.asarray(true, dtype=np.float64).ravel()
    if x.shape != y.shape or x.size == 0:
        raise ValueError(f"ccc: need two non-empty series of one length, got {x.shape} and {y.shape}")
    mx, my = x.mean(), y.mean()
    vx, vy = x.var(), y.var()
    cov = ((x - mx) * (y - my)).mean()
    denom = vx + vy + (mx - my) ** 2
    if denom == 0.0:
        return 0.0
    return float(2 * cov / denom)


def ccc_per_target(pred: np.ndarray, true: np.ndarray, names: list[str]) -> dict[str, float]:
    """CCC for each column of (N, K) arrays, keyed by target name."""
    return {n: ccc(pred[:, i], true[:, i]) for i, n in enumerate(names)}


def ccc_loss(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Differentiable 1 - CCC, averaged over the columns of (N, K) tensors."""
    mx, my = pred.mean(0), true.mean(0)
    vx, vy = pred.var(0, unbiased=False), true.var(0, unbiased=False)
    cov = ((pred - mx) * (true - my)).mean(0)
    return (1 - 2 * cov / (vx + vy + (mx - my) ** 2 + 1e-8)).mean()
