"""An exponential moving average of a model's weights, the model that is validated and kept.

Polyak & Juditsky 1992 ("Acceleration of stochastic approximation by averaging") showed that averaging the
iterates of SGD reaches the optimum's rate where the last iterate does not; the exponential form
``w_ema <- d * w_ema + (1 - d) * w`` after every optimizer step is the one used by Tan & Le 2019
(EfficientNet, decay 0.9999) and Tarvainen & Valpola 2017 (Mean Teacher). The effective decay warms up as in
TensorFlow's ``ExponentialMovingAverage(num_updates=t)``: ``d_t = min(d, (1 + t) / (10 + t))``, so a short
run (a small set's 100 steps) averages over its recent steps instead of its random initialisation.

Only parameters are averaged. Batch-norm statistics belong to the weights they were measured with, so the
training loop recomputes them for the averaged weights before each validation (:mod:`audiokd.validation`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch


class WeightAverage:
    """EMA of ``model``'s floating-point parameters, updated by :meth:`update` after each optimizer step."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.params = [p for p in model.parameters() if p.is_floating_point()]
        self.shadow = [p.detach().clone() for p in self.params]
        self.updates = 0

    def current_decay(self) -> float:
        """The decay of the next update: ``min(decay, (1 + t) / (10 + t))`` after ``t`` updates."""
        t = self.updates + 1
        return min(self.decay, (1 + t) / (10 + t))

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the current weights."""
        w = 1.0 - self.current_decay()
        self.updates += 1
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], w)

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Inside the block the model holds the averaged weights; its own come back afterwards."""
        live = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            torch._foreach_copy_(self.params, self.shadow)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.params, live)

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors and an int, for a ``weights_only`` checkpoint."""
        return {"shadow": [s.detach().cpu() for s in self.shadow], "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`state_dict` returned (for the same model)."""
        shadow = state["shadow"]
        if len(shadow) != len(self.shadow):
            raise ValueError(f"EMA state has {len(shadow)} tensors, the model {len(self.shadow)}")
        with torch.no_grad():
            for s, v in zip(self.shadow, shadow, strict=True):
                s.copy_(v)
        self.updates = int(state["updates"])
