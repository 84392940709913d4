"""Distilling over unlabelled clips too: one training set of labelled and unlabelled rows, and a fair budget.

- Training set: the train split's rows first, then the ``unlabeled`` split's, seen as one array without
  copying (:class:`ConcatRows`, both parts stay memory-mapped), with placeholder targets for the unlabelled
  rows. A batch carries its row indices, so the objective knows a row is labelled when its index is below
  the train split's size (:func:`audiokd.distill.objective.build_objective`), and the cached teacher
  outputs of both splits, concatenated in the same order, are indexed like the rows.
- Budget: the no-KD baseline cannot learn from unlabelled clips, but it trains for at least as many
  optimizer steps as the distilled student, in as many epochs of several passes over the labelled clips
  (:func:`matched_passes`, :func:`baseline_passes`), so that ``kd_gain`` is not a difference in training
  length. ``distill.min_steps`` gives both at least that many steps on a small set. Both record their
  :func:`budget`.
"""

from __future__ import annotations

import logging
import math

import torch

from audiokd.data.features import FeatureSet, SplitData
from audiokd.data.unlabeled import UNLABELED
from audiokd.training import epoch_steps, passes_for

log = logging.getLogger(__name__)


class ConcatRows:
    """Rows of two arrays with the same trailing shape, seen as one ``(len(a) + len(b), ...)`` array.

    Indexing (an index tensor, a slice or an int) gathers the rows from whichever part holds them, so a batch
    reads only its own rows of the memory-mapped files; nothing is copied up front.
    """

    def __init__(self, a: torch.Tensor, b: torch.Tensor) -> None:
        if a.shape[1:] != b.shape[1:] or a.dtype != b.dtype:
            raise ValueError(
                f"ConcatRows: parts differ ({tuple(a.shape)} {a.dtype}, {tuple(b.shape)} {b.dtype})"
            )
        self.a, self.b = a, b

    def __len__(self) -> int:
        return len(self.a) + len(self.b)

    @property
    def shape(self) -> torch.Size:
        """The shape of the concatenation."""
        return torch.Size([len(self), *self.a.shape[1:]])

    @property
    def dtype(self) -> torch.dtype:
        """The element type of both parts."""
        return self.a.dtype

    def __getitem__(self, index: torch.Tensor | slice | int) -> torch.Tensor:
        if isinstance(index, int):
            return self[torch.tensor([index])][0]
        rows = torch.arange(len(self))[index] if isinstance(index, slice) else torch.as_tensor(index)
        in_a = rows < len(self.a)
        out = torch.empty((len(rows), *self.a.shape[1:]), dtype=self.a.dtype)
        out[in_a] = self.a[rows[in_a]]
        out[~in_a] = self.b[rows[~in_a] - len(self.a)]
        return out


def training_set(fs: FeatureSet, with_unlabeled: bool) -> tuple[SplitData, int | None]:
    """The rows to train on: the train split, followed by the unlabelled split when ``with_unlabeled`` and the
    features have one. Returns them and the number of labelled rows (None when every row is labelled)."""
    train = fs.split("train")
    if not with_unlabeled or not fs.count(UNLABELED):
        return train, None
    pool = fs.split(UNLABELED)
    x = ConcatRows(train.x, pool.x)
    rows = SplitData(x, torch.cat([train.y, pool.y]))  # type: ignore[arg-type]  # ConcatRows indexes like x
    return rows, len(train)


def matched_passes(labelled: int, unlabeled: int) -> int:
    """Passes over ``labelled`` clips per epoch that make an epoch at least as long as one over
    ``labelled + unlabeled`` clips (so at least as many optimizer steps in as many epochs; 1 without a pool).

    The no-KD baseline keeps distill's epochs (and so its validations, checkpoints and schedule shape) and
    makes each epoch this many shuffled passes, rather than training many more, shorter epochs: with 150
    labelled and 700 unlabelled clips that is 30 epochs of 6 passes, not 162 epochs, each validated."""
    return math.ceil((labelled + unlabeled) / labelled) if unlabeled and labelled else 1


def baseline_passes(labelled: int, unlabeled: int, epochs: int, batch_size: int, min_steps: int) -> int:
    """Passes over the ``labelled`` clips per epoch for the no-KD baseline: at least the optimizer steps of
    distill's epochs over ``labelled + unlabeled`` clips, each of them ``passes_for(..., min_steps)`` passes
    (``distill.min_steps``), and at least ``min_steps`` itself."""
    distill_passes = passes_for(labelled + unlabeled, batch_size, epochs, min_steps)
    return max(
        matched_passes(labelled, unlabeled) * distill_passes,
        passes_for(labelled, batch_size, epochs, min_steps),
    )


def budget(labelled: int, unlabeled: int, epochs: int, batch_size: int, passes: int = 1) -> dict[str, int]:
    """What a model trained on: clips with and without labels, epochs, passes over them per epoch,
    optimizer steps (for meta.json)."""
    return {
        "labelled_clips": labelled,
        "unlabeled_clips": unlabeled,
        "epochs": epochs,
        "passes": passes,
        "steps": epoch_steps((labelled + unlabeled) * passes, batch_size) * epochs,
    }
