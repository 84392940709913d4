"""The training loop's per-step loss terms: reduced across processes and kept on the training device.

Two costs the loop avoids here:

- NCCL (the backend on GPUs) reduces CUDA tensors only, so the terms are all-reduced where they were
  computed, never after a copy to the CPU; gloo (CPU runs and the tests) takes the same code path.
- ``float(tensor)`` on a GPU waits for every queued kernel: done at every step, it stalls the step
  pipeline. The terms of each step stay on the device and are copied to the host together once every
  :data:`SYNC_EVERY` steps and at the end of each epoch (one ``tolist``), where they are checked, summed,
  logged per step and shown on the progress bar.
"""

from __future__ import annotations

import logging

import torch

from audiokd.distributed import Dist

log = logging.getLogger(__name__)

SYNC_EVERY = 20  # steps between host copies of the loss terms (and progress-bar refreshes)


def global_means(terms: dict[str, torch.Tensor], local: int, global_size: int, d: Dist) -> torch.Tensor:
    """Each term's mean over the global batch (sorted by name), as one float32 tensor on the terms' device.

    ``local`` rows of this rank in a global batch of ``global_size``: across processes each rank's mean
    is weighted by its rows and the weighted sum is all-reduced on the device (gloo or NCCL alike).
    """
    v = torch.stack([terms[k].detach().float() for k in sorted(terms)])
    if d.on:
        v = d.sum(v * local) / global_size
    return v


class StepLosses:
    """Per-step loss vectors, kept on the device until :meth:`drain` copies them to the host at once."""

    def __init__(self, every: int | None = None) -> None:
        self.every = every or SYNC_EVERY
        self.names: list[str] = []
        self._steps: list[int] = []
        self._values: list[torch.Tensor] = []

    def add(self, step: int, terms: dict[str, torch.Tensor], values: torch.Tensor) -> None:
        """Keep step ``step``'s ``values`` (from :func:`global_means` over ``terms``); no host copy."""
        self.names = sorted(terms)
        self._steps.append(step)
        self._values.append(values)

    @property
    def due(self) -> bool:
        """Whether :data:`every` steps are waiting for a host copy."""
        return len(self._steps) >= self.every

    def drain(self) -> list[tuple[int, dict[str, float]]]:
        """``(step, {term: value})`` for every waiting step, in order (one device-to-host copy)."""
        if not self._steps:
            return []
        rows = torch.stack(self._values).cpu().tolist()
        out = [(s, dict(zip(self.names, r, strict=True))) for s, r in zip(self._steps, rows, strict=True)]
        self._steps, self._values = [], []
        return out
