"""What the training loop does around each validation pass, so that eval-mode outputs are trustworthy.

- Batch-norm statistics are recomputed on train clips before validating ("precise BN", Wu & Johnson 2021,
  "Rethinking 'Batch' in BatchNorm", arXiv:2105.07576, section 3). The running averages that training keeps
  (momentum 0.1) lag behind fast-changing weights: measured here on 112 train clips (4 steps an epoch) the
  HF MobileViT's eval-mode outputs stayed constant for 25 of 30 epochs while the same weights with
  statistics recomputed on the train set scored val CCC 0.34, and on the embedded set the lag made the
  validation loss jump to 60 while the train loss was 0.2. Recomputing costs one forward pass over at most
  :data:`MAX_CLIPS` train clips per epoch and changes nothing in training (train-mode batch norm never reads
  the running statistics, and no random numbers are drawn), so resumed runs still repeat exactly.
- A validation pass whose predictions do not vary (zero variance) is reported in one line naming the model
  and the epoch, and in MLflow (metric ``val/constant_outputs``, tag ``val.constant_predictions``), instead
  of a silent CCC of 0.
"""

from __future__ import annotations

import logging

import mlflow
import numpy as np
import torch

from audiokd.interrupts import deferred
from audiokd.tasks import Task
from audiokd.tracking import MetricBuffer

log = logging.getLogger(__name__)

# clips that recompute the statistics. On the embedded set's KD student (850 train clips), statistics from 512
# of them scored as those from all 850 (val CCC 0.9535 / 0.9528, test 0.9549 / 0.9547) and 256 lost 0.002;
# a pass over 512 instead of 850 clips each epoch saved distill 15-20 s of its 166-171 s
MAX_CLIPS = 512
BATCH = 64
# a prediction column whose spread is below this (in standardised-target units) carries no information
CONSTANT_STD = 1e-6


def batchnorm_layers(model: torch.nn.Module) -> list[torch.nn.modules.batchnorm._BatchNorm]:
    """The batch-norm layers of ``model`` that keep running statistics (none in a ViT)."""
    return [
        m
        for m in model.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


@torch.no_grad()
def recalibrate_batchnorm(model: torch.nn.Module, x: torch.Tensor, device: torch.device, frames: int) -> int:
    """Recompute every batch-norm layer's running mean and variance from the inputs ``x`` (N, C, H, W')
    with the current weights; returns the number of clips used (0 when the model has no batch norm).

    At most :data:`MAX_CLIPS` clips, evenly spaced over ``x``, centre-cropped to ``frames`` columns (the
    inputs the model sees at validation). Each batch of :data:`BATCH` clips counts equally (cumulative
    average, ``momentum=None``). Dropout stays off; the model is left in eval mode.
    """
    layers = batchnorm_layers(model)
    if not layers or len(x) == 0:
        return 0
    n = min(len(x), MAX_CLIPS)
    idx = torch.linspace(0, len(x) - 1, n).round().long()
    start = (x.shape[-1] - frames) // 2
    momenta = [m.momentum for m in layers]
    model.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
        m.train()  # batch statistics, accumulated into the running ones
    try:
        for i in range(0, n, BATCH):
            chunk = x[idx[i : i + BATCH]][..., start : start + frames]
            if len(chunk) > 1:  # a single clip has no variance to measure
                model(pixel_values=chunk.to(device))
    finally:
        for m, momentum in zip(layers, momenta, strict=True):
            m.momentum = momentum
            m.eval()
    return n


def constant_outputs(task: Task, pred: np.ndarray) -> list[str]:
    """Names of the output columns whose predictions do not vary over the clips (regression: targets;
    classification: ``["every class"]`` when all logits are constant, i.e. one class for every clip)."""
    if len(pred) < 2:
        return []
    flat = np.asarray(pred, dtype=np.float64).std(axis=0) < CONSTANT_STD * (1 + np.abs(pred).mean(axis=0))
    if task.kind == "classification":
        return ["every class"] if bool(flat.all()) else []
    return [name for name, c in zip(task.names, flat, strict=True) if c]


def constant_message(desc: str, epoch: int, task: Task, names: list[str]) -> str:
    """The one line that says which validation predictions were constant, for which model and epoch."""
    if task.kind == "classification":
        return (
            f"{desc}: epoch {epoch} validation outputs are constant (zero variance): every clip gets the "
            "same class"
        )
    what = f"target {names[0]}" if len(names) == 1 else f"targets {', '.join(names)}"
    return (
        f"{desc}: epoch {epoch} validation predictions are constant (zero variance) for {what}; "
        "CCC is 0 by definition"
    )


def note_constant(
    desc: str, epoch: int, task: Task, names: list[str], metrics: MetricBuffer | None, main: bool
) -> None:
    """Record the epoch's count of constant outputs; when there are any, log the line and tag the run."""
    if metrics is not None:
        metrics.add({"val/constant_outputs": float(len(names))}, epoch)
    if not names or not main:
        return
    message = constant_message(desc, epoch, task, names)
    log.warning(message)
    if metrics is not None and mlflow.active_run() is not None:
        with deferred():
            mlflow.set_tag("val.constant_predictions", message)
