"""Quality metrics: the concordance correlation coefficient (CCC) and its per-target mean, and a paired
bootstrap interval for the difference in quality between two models on the same test clips."""

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


def ccc_loss(pred: torch.Tensor, true: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Differentiable 1 - CCC, averaged over the columns of (N, K) tensors.

    ``weight`` (N,): frequency weights of the rows (the moments become weighted means); all-zero weights
    give 0 (with a zero gradient): nothing to agree on.
    """
    if weight is None:
        mx, my = pred.mean(0), true.mean(0)
        vx, vy = pred.var(0, unbiased=False), true.var(0, unbiased=False)
        cov = ((pred - mx) * (true - my)).mean(0)
        return (1 - 2 * cov / (vx + vy + (mx - my) ** 2 + 1e-8)).mean()
    if float(weight.sum()) == 0.0:
        return (pred * 0.0).sum()
    p = (weight / weight.sum())[:, None]
    mx, my = (p * pred).sum(0), (p * true).sum(0)
    vx, vy = (p * (pred - mx) ** 2).sum(0), (p * (true - my) ** 2).sum(0)
    cov = (p * (pred - mx) * (true - my)).sum(0)
    return (1 - 2 * cov / (vx + vy + (mx - my) ** 2 + 1e-8)).mean()


def ccc_mean_rows(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """The mean over targets of :func:`ccc`, for each of R resamples at once: (R, N, K) arrays -> (R,)."""
    mx, my = pred.mean(1, keepdims=True), true.mean(1, keepdims=True)
    vx, vy = pred.var(1), true.var(1)
    cov = ((pred - mx) * (true - my)).mean(1)
    denom = vx + vy + (mx[:, 0] - my[:, 0]) ** 2
    ccc_k = np.divide(2 * cov, denom, out=np.zeros_like(cov), where=denom != 0)  # 0/0 -> 0, as ccc() does
    return ccc_k.mean(1)


def accuracy_rows(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Accuracy of class scores (R, N, C) against class indices (R, N), for each of R resamples -> (R,)."""
    return (pred.argmax(-1) == true).mean(1)


def paired_bootstrap_ci(
    a: np.ndarray,
    b: np.ndarray,
    true: np.ndarray,
    kind: str,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """A ``level`` percentile bootstrap interval for quality(a) - quality(b) on the same clips.

    Paired: each resample draws N clips with replacement and scores both models' predictions of those same
    clips, so what the clips have in common (easy or hard ones) cancels out of the difference (Efron &
    Tibshirani 1993, "An Introduction to the Bootstrap", ch. 13, percentile interval). Quality is the mean
    CCC over targets, recomputed per resample (``kind`` regression: (N, K) predictions and targets), or
    accuracy (classification: (N, C) class scores, (N,) class indices). Deterministic in ``seed``.
    """
    a, b, true = np.asarray(a, np.float64), np.asarray(b, np.float64), np.asarray(true)
    if not (len(a) == len(b) == len(true)) or len(true) < 2:
        raise ValueError(
            f"paired_bootstrap_ci: need >= 2 clips scored by both, got {len(a)}, {len(b)}, {len(true)}"
        )
    score = ccc_mean_rows if kind == "regression" else accuracy_rows
    rng = np.random.default_rng(seed)
    n, diffs = len(true), []
    for start in range(0, resamples, 256):  # in blocks: (256, N, K) arrays stay small for any test set
        idx = rng.integers(0, n, size=(min(256, resamples - start), n))
        diffs.append(score(a[idx], true[idx]) - score(b[idx], true[idx]))
    lo, hi = np.quantile(np.concatenate(diffs), [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def gain_verdict(ci: tuple[float, float] | list[float]) -> str:
    """What an interval for the KD gain says: ``KD helps`` (all above 0), ``KD hurts`` (all below 0), or
    ``cannot tell on this test set`` (it holds 0)."""
    lo, hi = ci
    if lo > 0:
        return "KD helps"
    if hi < 0:
        return "KD hurts"
    return "cannot tell on this test set"
