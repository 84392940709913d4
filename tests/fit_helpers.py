"""Small shared pieces for training-loop tests: a tiny MobileViT student and random spectrogram-like data."""

from __future__ import annotations

import torch

from audiokd.config import StudentConfig
from audiokd.data.features import SplitData
from audiokd.tasks import Task
from audiokd.training import FitSettings

TASK = Task("regression", ("a", "b"))

SHAPE = (1, 32, 64)
# dropout on, so the resumed run must also get the global torch RNG right
TINY = StudentConfig(
    hidden_sizes=(16, 16, 16), neck_hidden_sizes=(8, 8, 8, 8, 8, 8, 16), num_heads=2, dropout=0.3
)
SETTINGS = FitSettings(epochs=4, batch_size=8, lr=0.01, weight_decay=0.01, seed=0, device=torch.device("cpu"))


def tiny_data() -> tuple[SplitData, SplitData]:
    g = torch.Generator().manual_seed(11)
    x = torch.randn(32, *SHAPE, generator=g)
    y = torch.stack([x.mean(dim=(1, 2, 3)), x[:, :, :16].std(dim=(1, 2, 3))], dim=1)
    return SplitData(x[:24], y[:24]), SplitData(x[24:], y[24:])
