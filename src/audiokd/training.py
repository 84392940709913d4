"""One training loop for teacher and student: progress bars, per-step metrics, best-epoch selection, resume.

Determinism: with the same params and seed, CPU runs repeat bit for bit, and a run resumed from a checkpoint
(:mod:`audiokd.checkpoint`) repeats the uninterrupted one, because the model, optimizer, scheduler, every RNG
and the batch-order generator are restored. On CUDA, cuDNN and cuBLAS pick algorithms (and use atomics)
that differ in the last bits from run to run; see the README, "When things go wrong".
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import math
import random
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from audiokd.averaging import WeightAverage
from audiokd.checkpoint import Checkpointer, LoopState, TrainingParts
from audiokd.config import ConfigError, RuntimeConfig
from audiokd.data.features import SplitData
from audiokd.distributed import Dist, plain_batchnorm, sync_batchnorm, wrap
from audiokd.interrupts import deferred
from audiokd.models import predict
from audiokd.optim import adamw
from audiokd.step_losses import StepLosses, global_means
from audiokd.tasks import Task
from audiokd.tracking import MetricBuffer
from audiokd.validation import constant_outputs, note_constant, recalibrate_batchnorm

log = logging.getLogger(__name__)

# (inputs, targets, batch indices into the train split) of a training batch -> augmented (inputs, targets)
Augment = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
# (model, inputs, labels, batch indices into the train split) -> named loss terms, "total" included.
# The objective runs the model itself, so it can ask for hidden states or run a teacher beside it.
Objective = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the message says where and why."""


@dataclass(frozen=True)
class FitSettings:
    """What the loop needs from a training section of params.yaml."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    seed: int
    device: torch.device
    desc: str = "train"
    grad_clip: float = 1.0  # max global gradient norm (teacher.grad_clip, distill.grad_clip); 0: off
    passes: int = 1  # shuffled passes over the train rows per epoch (the no-KD baseline's matched budget)
    dist: Dist = field(default_factory=Dist)
    precision: str = "32"  # 32 | bf16 | 16: autocast dtype of forward and loss (see runtime.precision)
    num_workers: int = 0  # DataLoader worker processes that slice batches (0: the training process does)
    compile: bool = False  # torch.compile the training forward
    ema_decay: float = 0.0  # > 0: validate and keep an exponential moving average of the weights (averaging)


_DTYPES = {"bf16": torch.bfloat16, "16": torch.float16}


def settings_from(
    runtime: RuntimeConfig,
    device: torch.device,
    d: Dist,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    desc: str,
    grad_clip: float = 1.0,
    passes: int = 1,
    ema_decay: float = 0.0,
) -> FitSettings:
    """FitSettings from a training section's values and the ``runtime`` section."""
    if str(runtime.precision) == "16" and device.type != "cuda":
        raise ConfigError("runtime.precision = 16 needs a CUDA device; on the CPU use bf16 or 32")
    return FitSettings(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        seed=runtime.seed,
        device=device,
        desc=desc,
        grad_clip=grad_clip,
        passes=passes,
        dist=d,
        precision=str(runtime.precision),
        num_workers=runtime.num_workers,
        compile=runtime.compile,
        ema_decay=ema_decay,
    )


@dataclass
class FitResult:
    """Outcome of :func:`fit`: the model holds the best epoch's weights when it returns."""

    best_epoch: int
    best_score: float
    history: list[dict[str, float]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so that CPU runs repeat exactly."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = False  # the autotuner may pick a different kernel each run


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("runtime.device = 'cuda' but no CUDA device is available; use auto or cpu")
    return torch.device(name)


def epoch_steps(n: int, batch_size: int) -> int:
    """Optimizer steps in one epoch over ``n`` rows: a final batch of one row is folded into the one before
    (one sample breaks batch norm in training mode)."""
    return max(1, n // batch_size if n % batch_size < 2 else math.ceil(n / batch_size))


def _lr_lambda(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to 1% of the peak rate."""

    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


# Adam's step is erratic while its second-moment estimate averages few squared gradients (Liu et al. 2020,
# "On the Variance of the Adaptive Learning Rate and Beyond", arXiv:1908.03265): warm up for at least this
# many steps. Measured on 112 train clips (4 steps an epoch, 12 epochs): the ViT teacher warmed up for 4 steps
# reached val CCC 0.27, for 9 steps 0.72, for 14 steps 0.80.
MIN_WARMUP_STEPS = 25
MAX_WARMUP_FRACTION = 0.3  # of all steps, so that short runs keep most of theirs for the cosine


def passes_for(n: int, batch_size: int, epochs: int, min_steps: int) -> int:
    """Shuffled passes over ``n`` rows per epoch so that ``epochs`` epochs take at least ``min_steps``
    optimizer steps (1 when one pass per epoch already does): a few hundred clips give a handful of steps an
    epoch, too few for a network to fit, while on a large set the same epochs are long enough already."""
    passes = 1
    while epoch_steps(n * passes, batch_size) * epochs < min_steps:
        passes += 1
    return passes


def warmup_steps(steps_per_epoch: int, total_steps: int) -> int:
    """Linear warm-up length: one epoch (at most 10% of all steps), but at least :data:`MIN_WARMUP_STEPS`
    where the run is long enough (at most :data:`MAX_WARMUP_FRACTION` of it)."""
    per_epoch = min(steps_per_epoch, total_steps // 10)
    return max(1, per_epoch, min(MIN_WARMUP_STEPS, int(MAX_WARMUP_FRACTION * total_steps)))


def evaluate_split(
    model: torch.nn.Module,
    data: SplitData,
    task: Task,
    device: torch.device,
    d: Dist | None = None,
    constant: list[str] | None = None,
) -> dict[str, float]:
    """``loss`` (the hard loss) and the task's quality metrics (``ccc_mean``, ``ccc_<target>`` or
    ``accuracy``, ``macro_f1``) on ``data``. Across processes each rank predicts its shard and the
    predictions are gathered, so every rank computes the same metrics over the whole split.
    ``constant`` receives the names of outputs whose predictions did not vary (:mod:`audiokd.validation`)."""
    d = d or Dist()
    part = d.shard(len(data))
    if part.stop > part.start:
        mine = predict(model, data.x[part], device=device)
    else:  # more ranks than clips: nothing to predict here
        mine = predict(model, data.x[:1], device=device)[:0]
    pred = d.gather(mine)
    out = {"loss": float(task.hard_loss(pred, data.y))}
    out.update(task.flat_quality(pred.numpy(), data.y.numpy()))
    if constant is not None:
        constant.extend(constant_outputs(task, pred.numpy()))
    return out


class _Rows(torch.utils.data.Dataset):
    """Rows of a split by index tensor: one batch is one slice of the (memory-mapped) arrays."""

    def __init__(self, data: SplitData) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.data.x[idx], self.data.y[idx], idx


class _EpochBatches(torch.utils.data.Sampler):
    """Yields this epoch's batches of indices (set by the loop before each epoch)."""

    def __init__(self) -> None:
        self.batches: list[torch.Tensor] = []

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class _Loader:
    """Batches ``(x, y, idx)`` for the loop: sliced in place (``workers == 0``) or by a DataLoader with
    persistent worker processes (pinned memory on CUDA) that prepare the next batches while the model runs."""

    def __init__(self, data: SplitData, workers: int, device: torch.device, seed: int) -> None:
        self.rows = _Rows(data)
        self.sampler = _EpochBatches()
        self.loader = (
            torch.utils.data.DataLoader(
                self.rows,
                sampler=self.sampler,
                batch_size=None,
                num_workers=workers,
                persistent_workers=True,
                pin_memory=device.type == "cuda",
                prefetch_factor=2,
                # its own generator: worker seeds must not draw from the global RNG (dropout's)
                generator=torch.Generator().manual_seed(seed),
            )
            if workers > 0
            else None
        )

    def epoch(self, batches: list[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        self.sampler.batches = batches
        if self.loader is None:
            return (self.rows[idx] for idx in batches)
        return iter(self.loader)


def fit(
    model: torch.nn.Module,
    objective: Objective,
    train: SplitData,
    val: SplitData,
    task: Task,
    s: FitSettings,
    metrics: MetricBuffer | None = None,
    extra_modules: tuple[torch.nn.Module, ...] = (),
    augment: Augment | None = None,
    checkpoint: Checkpointer | None = None,
) -> FitResult:
    """Train ``model`` with AdamW; keep the epoch with the best validation quality (``task.primary``).

    With ``s.ema_decay > 0`` the model validated (and kept) each epoch is the exponential moving average of
    the weights (:mod:`audiokd.averaging`); training itself goes on with the live weights.

    ``extra_modules`` train beside the model (e.g. feature-distillation projections) but are not part of it.
    ``augment`` transforms each training batch ``(x, y)`` before the objective sees it.
    With ``checkpoint``, the loop state is saved at the end of every epoch, and a loaded checkpoint
    (``checkpoint.state``) is resumed: training continues at the next epoch and step as if never stopped.

    Per step, each loss term is recorded as ``train/<term>_loss``; per epoch ``val/loss`` and the task's
    metrics (``val/ccc_mean``... or ``val/accuracy``...). A tqdm bar per epoch shows every loss term. The
    terms stay on the device and reach the host every :data:`audiokd.step_losses.SYNC_EVERY` steps and at
    the end of each epoch (:mod:`audiokd.step_losses`); a non-finite term stops training then, naming its
    step, before the epoch's checkpoint is written.

    Across processes (``s.dist``, :mod:`audiokd.distributed`) every rank draws the same global batches and
    trains on its part of each; the loss is scaled by ``local / global`` batch size times the world size, so
    the all-reduced (averaged) gradient is the gradient of the global batch's mean loss, as in one process.
    Logged losses are those global means; only rank 0 checkpoints (pass ``metrics=None`` on other ranks).
    """
    d = s.dist
    gen = torch.Generator().manual_seed(s.seed)
    model.to(s.device)
    synced = sync_batchnorm(model, d, s.device)  # global-batch statistics across CUDA processes
    params = list(model.parameters())
    for m in extra_modules:
        m.to(s.device).train()
        params += list(m.parameters())
    opt = adamw((model, *extra_modules), s.lr, s.weight_decay)  # no decay on biases, norms, embeddings
    rows = len(train)
    n = rows * s.passes  # an epoch's samples: ``passes`` shuffled passes over the rows
    steps_per_epoch = epoch_steps(n, s.batch_size)
    total_steps = steps_per_epoch * s.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, _lr_lambda(total_steps, warmup_steps(steps_per_epoch, total_steps))
    )
    best = FitResult(best_epoch=0, best_score=-math.inf)
    best_state: dict[str, torch.Tensor] | None = None
    step = 0
    scaler = torch.amp.GradScaler("cuda", enabled=s.precision == "16")
    aug_gen = getattr(augment, "gen", None)  # BatchAugment's own generator: resumed, not re-seeded
    aug_gen = aug_gen if isinstance(aug_gen, torch.Generator) else None
    ema = WeightAverage(model, s.ema_decay) if s.ema_decay > 0 else None
    parts = TrainingParts(model, extra_modules, opt, sched, gen, aug_gen, scaler, ema)
    first_epoch = 1
    if checkpoint is not None and checkpoint.state is not None:
        done = checkpoint.restore(parts, d.rank)
        first_epoch, step, best_state = done.epoch + 1, done.step, done.best_state
        best = FitResult(done.best_epoch, done.best_score, done.history)
        if metrics is not None and done.pending_metrics:
            metrics.replay(done.pending_metrics, "val/loss", done.epoch)
    net = wrap(model, extra_modules, d, s.device)  # DDP gives every rank rank 0's weights here
    if d.on and first_epoch == 1:
        # from here on each rank draws its own dropout masks: a shared seed would repeat one mask on every
        # shard (augmentation has its own generator, seeded seed + rank by the stage). A resumed run got
        # each rank's own states back from the checkpoint instead.
        seed_everything(s.seed + d.rank)
    if s.compile:
        net = torch.compile(net)
    autocast = functools.partial(
        torch.autocast,
        s.device.type,
        dtype=_DTYPES.get(s.precision, torch.bfloat16),
        enabled=s.precision in _DTYPES,
    )
    loader = _Loader(train, s.num_workers, s.device, s.seed)
    for epoch in range(first_epoch, s.epochs + 1):
        net.train()
        perm = torch.cat([torch.randperm(rows, generator=gen) for _ in range(s.passes)])
        batches = [
            d.batch_part(perm[b * s.batch_size : (b + 1) * s.batch_size if b < steps_per_epoch - 1 else n])
            for b in range(steps_per_epoch)
        ]
        sums: dict[str, float] = defaultdict(float)
        losses = StepLosses()
        with tqdm(
            total=steps_per_epoch,
            desc=f"{s.desc} {epoch}/{s.epochs}",
            unit="step",
            leave=False,
            disable=not d.main,
        ) as bar:  # closed before an exception is reported
            for b, (x, y, idx) in enumerate(loader.epoch(batches)):
                x, y = x.to(s.device, non_blocking=True), y.to(s.device, non_blocking=True)
                if augment is not None:
                    x, y = augment(x, y, idx)
                with autocast():
                    terms = objective(net, x, y, idx)
                values = global_means(terms, len(idx), _global_size(s, b, steps_per_epoch, n), d)
                opt.zero_grad(set_to_none=True)
                total = terms["total"]
                if d.on:  # so that DDP's average over ranks is the global batch's mean
                    total = total * (len(idx) * d.world / _global_size(s, b, steps_per_epoch, n))
                scaler.scale(total).backward()
                if s.grad_clip > 0:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(params, s.grad_clip)
                scaler.step(opt)
                scaler.update()
                sched.step()
                if ema is not None:
                    ema.update()
                step += 1
                losses.add(step, terms, values)
                bar.update()
                if losses.due or b == steps_per_epoch - 1:  # the host copy: see audiokd.step_losses
                    _take(losses.drain(), sums, metrics, bar, s.desc, epoch, checkpoint)
        # with an average, that is what is validated and kept
        with ema.swapped_in() if ema is not None else contextlib.nullcontext():
            # eval-mode batch norm with statistics of the current weights, not the lagging running averages
            recalibrate_batchnorm(model, train.x, s.device, val.x.shape[-1])
            d.sync_buffers(model)  # every rank validates (and rank 0 saves) the same batch-norm statistics
            constant: list[str] = []
            val_metrics = evaluate_split(model, val, task, s.device, d, constant)
            note_constant(s.desc, epoch, task, constant, metrics, d.main)
            improved = val_metrics[task.primary] > best.best_score
            if improved:
                best.best_epoch, best.best_score = epoch, val_metrics[task.primary]
                best_state = copy.deepcopy(model.state_dict())
        row = {
            "epoch": epoch,
            **{f"train_{k}_loss": v / steps_per_epoch for k, v in sums.items()},
            **{f"val_{k}": v for k, v in val_metrics.items()},
        }
        best.history.append(row)
        if metrics is not None:
            metrics.add({f"val/{k}": v for k, v in val_metrics.items()}, epoch)
        # each rank's random states (dropout, augmentation differ by rank): a collective, so on every rank
        rank_rng = d.all_objects(parts.rng()) if d.on and checkpoint is not None else None
        with deferred():  # Ctrl-C or SIGTERM waits for the checkpoint and the metrics to be written
            if checkpoint is not None and d.main:
                # saved before the flush with the epoch's metrics in it: a kill in between loses none of them
                done = LoopState(epoch, step, best.best_epoch, best.best_score, best_state, best.history)
                done.pending_metrics = metrics.pending() if metrics is not None else None
                checkpoint.save(done, parts, s.epochs, rank_rng)
            if metrics is not None:
                metrics.flush()
        if d.main:
            log.info(
                "%s epoch %d/%d: loss %.4f  val loss %.4f  val %s %.4f%s",
                s.desc,
                epoch,
                s.epochs,
                sums["total"] / steps_per_epoch,
                val_metrics["loss"],
                task.primary,
                val_metrics[task.primary],
                "  (best)" if improved else "",
            )
    if best_state is not None:
        model.load_state_dict(best_state)
    if synced:
        plain_batchnorm(model)
    model.eval()
    return best


def _global_size(s: FitSettings, b: int, steps_per_epoch: int, n: int) -> int:
    """Clips in global batch ``b`` (the last one takes the remainder)."""
    return s.batch_size if b < steps_per_epoch - 1 else n - b * s.batch_size


def _take(
    rows: list[tuple[int, dict[str, float]]],
    sums: dict[str, float],
    metrics: MetricBuffer | None,
    bar: tqdm,
    desc: str,
    epoch: int,
    checkpoint: Checkpointer | None,
) -> None:
    """Check, sum, log (per step) and show the steps' loss terms that just reached the host."""
    for step, values in rows:
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if bad:
            kept = checkpoint.where() if checkpoint is not None else "no checkpointing in this run"
            if metrics is not None:  # the losses that led up to it, for the diagnosis
                with contextlib.suppress(Exception):
                    metrics.flush()
            raise TrainingError(
                f"{desc}: non-finite loss at epoch {epoch}, step {step}: "
                f"term(s) {', '.join(bad)} = {[values[k] for k in bad]}; {kept}"
            )
        for k, v in values.items():
            sums[k] += v
        if metrics is not None:
            metrics.add({f"train/{k}_loss": v for k, v in values.items()}, step)
    if rows:
        last = rows[-1][1]
        bar.set_postfix(
            {"loss": f"{last['total']:.4f}", **{k: f"{v:.4f}" for k, v in last.items() if k != "total"}}
        )
