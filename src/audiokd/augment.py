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
- Stored views (``augment.teacher_view: stored``, :class:`ViewBank`): instead of fresh masks every batch,
  each training clip has ``augment.views`` fixed SpecAugment views, drawn once from the seed; the teacher
  scores every view before training, and each batch shows the student one of its clips' views with the
  teacher's output on exactly that view as the soft target (consistent teaching at one student forward a
  step: CED, Dinkel et al. 2023, arXiv:2308.11957, stores its ensemble's outputs on augmented views the same
  way).
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


class ViewBank:
    """``views`` fixed SpecAugment views of each of ``rows`` training clips (``(n_mels, frames)`` inputs).

    The masks are drawn once, as torchaudio's iid masks draw them (``num_masks`` of each kind; a width
    ``floor(u * mask)``, a start ``floor(u' * (size - width))``, value 0), and kept as (start, end) bounds, so
    view ``k`` of row ``i`` is the same input whenever :meth:`apply` makes it: for the teacher before
    training and for the student at any step.
    """

    def __init__(
        self, cfg: AugmentConfig, rows: int, views: int, n_mels: int, frames: int, seed: int
    ) -> None:
        gen = torch.Generator().manual_seed(seed + 7919)
        self.views = views

        def draw(mask: int, size: int) -> torch.Tensor | None:
            if not mask or cfg.num_masks == 0:
                return None
            width = (torch.rand(rows, views, cfg.num_masks, generator=gen) * mask).long()
            start = (torch.rand(rows, views, cfg.num_masks, generator=gen) * (size - width)).long()
            return torch.stack([start, start + width], -1)  # (rows, views, masks, 2)

        self.freq = draw(cfg.freq_mask, n_mels)
        self.time = draw(cfg.time_mask, frames)

    @staticmethod
    def _masked(bounds: torch.Tensor, size: int) -> torch.Tensor:
        """(B, masks, 2) bounds -> (B, size) True where any mask covers the position."""
        pos = torch.arange(size)
        return ((pos >= bounds[..., :1]) & (pos < bounds[..., 1:])).any(1)

    def apply(self, x: torch.Tensor, rows: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """View ``k[b]`` of training row ``rows[b]`` for ``x[b]`` in a (B, C, n_mels, frames) batch."""
        rows, k = rows.cpu().long(), k.cpu().long()
        keep = torch.ones(x.shape[0], x.shape[-2], x.shape[-1], dtype=torch.bool)
        if self.freq is not None:
            keep &= ~self._masked(self.freq[rows, k], x.shape[-2])[:, :, None]
        if self.time is not None:
            keep &= ~self._masked(self.time[rows, k], x.shape[-1])[:, None, :]
        return x * keep[:, None].to(device=x.device, dtype=x.dtype)


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
        self.bank: ViewBank | None = None  # augment.teacher_view stored: masks from here, not drawn fresh
        self.last_views: torch.Tensor | None = None  # with a bank: the view of each row of the last batch
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
        if self.bank is not None:
            if idx is None:
                raise ValueError("BatchAugment: stored views need the batch's row indices")
            self.last_views = torch.randint(0, self.bank.views, (x.shape[0],), generator=self.gen)
            x = self.bank.apply(x, idx, self.last_views)
        elif self.cfg.num_masks > 0 and (self.freq is not None or self.time is not None):
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
