"""Train-time augmentation of spectrogram batches: random crop, SpecAugment and mixup.

- Random crop (``audio.random_crop``): train clips are stored wider than the model input; each sample gets a
  random window of ``frames`` columns.
- SpecAugment (Park et al. 2019, arXiv:1904.08779): ``num_masks`` frequency masks of width up to
  ``freq_mask`` bins and time masks of up to ``time_mask`` frames (torchaudio ``FrequencyMasking`` /
  ``TimeMasking``, a mask per example).
- mixup (Zhang et al. 2018, arXiv:1710.09412): ``x = lam * x_i + (1 - lam) * x_j`` with
  ``lam ~ Beta(alpha, alpha)``; targets are mixed the same way (class labels as one-hot rows). A live teacher
  sees the same mixed input, so its outputs are those of the mixed clip.
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
    """Callable ``(x, y) -> (x, y)`` applied to each training batch; deterministic given its seed."""

    def __init__(self, cfg: AugmentConfig, task: Task, frames: int, seed: int) -> None:
        self.cfg, self.task, self.frames = cfg, task, frames
        self.gen = torch.Generator().manual_seed(seed + 1)
        self.freq = (
            torchaudio.transforms.FrequencyMasking(cfg.freq_mask, iid_masks=True) if cfg.freq_mask else None
        )
        self.time = (
            torchaudio.transforms.TimeMasking(cfg.time_mask, iid_masks=True) if cfg.time_mask else None
        )

    def needed(self, width: int) -> bool:
        """Whether batches of ``width`` frames need any change."""
        return self.cfg.active or width > self.frames

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment one batch."""
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
            perm = torch.randperm(x.shape[0], generator=self.gen).to(x.device)
            x = lam * x + (1 - lam) * x[perm]
            y = self.task.as_mixable(y)
            y = lam * y + (1 - lam) * y[perm]
        return x, y


def make_augment(augment: AugmentConfig, fs: FeatureSet, width: int, seed: int) -> BatchAugment | None:
    """The batch augmentation for training, or None when batches pass through unchanged."""
    aug = BatchAugment(augment, fs.task, fs.frames, seed)
    return aug if aug.needed(width) else None
