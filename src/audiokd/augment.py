"""Train-time augmentation of spectrogram batches: random crop, SpecAugment and mixup.

- Random crop (``audio.random_crop``): train clips are stored wider than the model input; each sample gets a
  random window of ``frames`` columns.
- SpecAugment (Park et al. 2019, arXiv:1904.08779): ``num_masks`` frequency masks of width up to
  ``freq_mask`` bins and time masks of up to ``time_mask`` frames (torchaudio ``FrequencyMasking`` /
  ``TimeMasking``, a mask per example).
- mixup (Zhang et al. 2018, arXiv:1710.09412): ``x = lam * x_i + (1 - lam) * x_j`` with
  ``lam ~ Beta(alpha, alpha)``; targets are mixed the same way (class labels as one-hot rows). A live teacher
  sees the same mixed input, so its outputs are those of the mixed clip. With unlabelled clips in the
  batch (``labelled_rows``), a clip is mixed only with a clip of its own kind: a mixed labelled clip keeps a
  valid mixed label, a mixed unlabelled clip stays unlabelled, and the teacher labels both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torchaudio

from audiokd.config import AugmentConfig
from audiokd.tasks import Task

if TYPE_CHECKING:  # typing only: the features module does not need importing to augment a batch
    from audiokd.data.features import FeatureSet


def center_frames(x: torch.Tensor, frames: int) -> torch.Tensor:
    """The centre ``frames`` columns of (B, C, H, W) spectrograms."""
    start = (x.shape[-1] - frames) // 2
    return x[..., start : start + frames]


class BatchAugment:
    """Callable ``(x, y[, idx]) -> (x, y)`` applied to each training batch; deterministic given its seed.

    ``labelled_rows``: training rows from this index on are unlabelled (None: all are labelled); mixup then
    pairs rows within each kind, which needs the batch's row indices ``idx``.
    """

    def __init__(
        self, cfg: AugmentConfig, task: Task, frames: int, seed: int, labelled_rows: int | None = None
    ) -> None:
        self.cfg, self.task, self.frames = cfg, task, frames
        self.labelled_rows = labelled_rows
        self.gen = torch.Generator().manual_seed(seed + 1)
        self.last_mix: tuple[float, torch.Tensor] | None = None  # the last batch's mixup (lam, partners)
        self.freq = (
            torchaudio.transforms.FrequencyMasking(cfg.freq_mask, iid_masks=True) if cfg.freq_mask else None
        )
        self.time = (
            torchaudio.transforms.TimeMasking(cfg.time_mask, iid_masks=True) if cfg.time_mask else None
        )

    def needed(self, width: int) -> bool:
        """Whether batches of ``width`` frames need any change."""
        return self.cfg.active or width > self.frames

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment one batch (``idx``: its rows' indices in the training set)."""
        self.last_mix = None
        if x.shape[-1] > self.frames:
            offsets = torch.randint(0, x.shape[-1] - self.frames + 1, (x.shape[0],), generator=self.gen)
            x = torch.stack([xi[..., o : o + self.frames] for xi, o in zip(x, offsets.tolist(), strict=True)])
        if self.cfg.num_masks > 0 and (self.freq is not None or self.time is not None):
            # torchaudio draws masks from the global RNG: fork it so the run stays reproducible
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=self.gen)))
                for _ in range(self.cfg.num_masks):
                    if self.freq is not None:
                        x = self.freq(x)
                    if self.time is not None:
                        x = self.time(x)
        if self.cfg.mixup_alpha > 0:
            beta = torch.distributions.Beta(self.cfg.mixup_alpha, self.cfg.mixup_alpha)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=self.gen)))
                lam = float(beta.sample())
            perm = self._partners(x.shape[0], idx).to(x.device)
            x = lam * x + (1 - lam) * x[perm]
            y = self.task.as_mixable(y)
            y = lam * y + (1 - lam) * y[perm]
            self.last_mix = (lam, perm)
        return x, y

    def mix_like(self, t: torch.Tensor) -> torch.Tensor:
        """Per-row values ``t`` of the last batch (e.g. cached teacher outputs) mixed as its clips were."""
        if self.last_mix is None:
            return t
        lam, perm = self.last_mix
        return lam * t + (1 - lam) * t[perm.to(t.device)]

    def _partners(self, n: int, idx: torch.Tensor | None) -> torch.Tensor:
        """A random mixup partner for each of ``n`` rows, of the same kind (labelled or not) as the row."""
        if self.labelled_rows is None:
            return torch.randperm(n, generator=self.gen)
        if idx is None:
            raise ValueError("BatchAugment: mixup with unlabelled rows needs the batch's row indices")
        perm = torch.arange(n)
        for kind in (idx < self.labelled_rows, idx >= self.labelled_rows):
            rows = torch.nonzero(kind).flatten()
            perm[rows] = rows[torch.randperm(len(rows), generator=self.gen)]
        return perm


def make_augment(
    augment: AugmentConfig, fs: FeatureSet, width: int, seed: int, labelled_rows: int | None = None
) -> BatchAugment | None:
    """The batch augmentation for training, or None when batches pass through unchanged.

    ``labelled_rows``: training rows from this index on are unlabelled clips (mixup partners stay of a kind).
    """
    aug = BatchAugment(augment, fs.task, fs.frames, seed, labelled_rows)
    return aug if aug.needed(width) else None
