"""Teacher and student models, and helpers common to both."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from audiokd.tasks import Task


class LogitsOnly(torch.nn.Module):
    """Wrap a Hugging Face model so ``forward(x)`` returns its output tensor (for export and serving)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Model outputs, (B, num_outputs)."""
        return self.model(pixel_values=pixel_values).logits


def head_kwargs(task: Task) -> dict[str, Any]:
    """Hugging Face config arguments for the output head: width, problem type, class names."""
    kwargs: dict[str, Any] = {"num_labels": task.num_outputs, "problem_type": task.problem_type}
    if task.kind == "classification":
        kwargs["id2label"] = dict(enumerate(task.names))
        kwargs["label2id"] = {n: i for i, n in enumerate(task.names)}
    return kwargs


def count_params(model: torch.nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())


def weights_size_mb(folder: str | Path) -> float:
    """Size on disk of a saved model's weight files, in MiB."""
    files = list(Path(folder).glob("*.safetensors"))
    return sum(f.stat().st_size for f in files) / 2**20


@torch.no_grad()
def predict(
    model: torch.nn.Module, x: torch.Tensor, batch_size: int = 128, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Outputs of ``model`` (eval mode) on ``x`` in batches, on the CPU."""
    model.eval()
    outs = [
        model(pixel_values=x[i : i + batch_size].to(device)).logits.float().cpu()
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(outs)
