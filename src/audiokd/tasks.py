"""What differs between regression and classification: targets, the hard loss, the quality metrics.

- ``regression``: targets are float columns, standardised with train statistics; hard loss MSE; quality is
  CCC per target and its mean (``ccc_mean``), which also picks the best epoch.
- ``classification``: one label column of strings mapped to class indices (sorted label names, or
  ``data.labels`` when given); hard loss cross-entropy (soft/mixed targets accepted as probabilities);
  quality is ``accuracy`` (picks the best epoch) and ``macro_f1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn.functional import cross_entropy, mse_loss

from audiokd.metrics import ccc_per_target


def accuracy(pred_class: np.ndarray, true_class: np.ndarray) -> float:
    """Fraction of exact matches."""
    return float(np.mean(np.asarray(pred_class) == np.asarray(true_class)))


def macro_f1(pred_class: np.ndarray, true_class: np.ndarray, num_classes: int) -> float:
    """Unweighted mean over classes of F1 = 2 TP / (2 TP + FP + FN); a class absent from both counts as 1."""
    scores = []
    for c in range(num_classes):
        tp = int(np.sum((pred_class == c) & (true_class == c)))
        fp = int(np.sum((pred_class == c) & (true_class != c)))
        fn = int(np.sum((pred_class != c) & (true_class == c)))
        scores.append(1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


@dataclass(frozen=True)
class Task:
    """The task of a run: ``kind`` (regression | classification), output names and class names."""

    kind: str
    names: tuple[str, ...]  # regression: target names; classification: class names, index order

    @property
    def num_outputs(self) -> int:
        """Width of the model head."""
        return len(self.names)

    @property
    def primary(self) -> str:
        """The validation metric that picks the best epoch and defines retention."""
        return "ccc_mean" if self.kind == "regression" else "accuracy"

    @property
    def problem_type(self) -> str:
        """The Hugging Face ``problem_type`` for the head."""
        return "regression" if self.kind == "regression" else "single_label_classification"

    def hard_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """MSE (regression) or cross-entropy (classification; class indices or probability rows)."""
        if self.kind == "regression":
            return mse_loss(outputs, targets)
        return cross_entropy(outputs, targets)

    def as_mixable(self, targets: torch.Tensor) -> torch.Tensor:
        """Targets in a form mixup can blend: one-hot rows for classification."""
        if self.kind == "classification" and targets.dim() == 1:
            return torch.nn.functional.one_hot(targets, self.num_outputs).float()
        return targets

    def quality(self, outputs: np.ndarray, targets: np.ndarray) -> dict[str, float | dict[str, float]]:
        """Quality of ``outputs`` vs ``targets``: ``ccc_mean``, ``ccc`` or ``accuracy``, ``macro_f1``."""
        if self.kind == "regression":
            per = ccc_per_target(outputs, targets, list(self.names))
            return {"ccc_mean": float(np.mean(list(per.values()))), "ccc": per}
        pred = outputs.argmax(axis=1)
        true = targets.astype(np.int64)
        return {"accuracy": accuracy(pred, true), "macro_f1": macro_f1(pred, true, self.num_outputs)}

    def flat_quality(self, outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        """:meth:`quality` flattened for logging (``ccc_arousal``, ...)."""
        q = self.quality(outputs, targets)
        flat: dict[str, float] = {}
        for k, v in q.items():
            if isinstance(v, dict):
                flat.update({f"{k}_{name}": float(x) for name, x in v.items()})
            else:
                flat[k] = float(v)
        return flat
