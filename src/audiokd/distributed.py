"""Multi-process training through PyTorch's own launcher and DistributedDataParallel.

``runtime.nproc_per_node: N`` (N > 1) makes a training stage script start itself again under
``torch.distributed.run`` (what ``torchrun`` is) with N processes on this machine, then exit with their
status: ``dvc exp run -S runtime.nproc_per_node=2`` is all a user types. ``AUDIOKD_TORCHRUN_ARGS`` replaces
the launcher's default ``--standalone`` (single machine, a free port) with other launcher arguments, for
several machines: ``--nnodes=2 --node-rank=0 --rdzv-backend=c10d --rdzv-endpoint=host0:29400 --rdzv-id=job``.
A stage started by a launcher already (``torchrun stages/distill.py ...``) runs as the rank it is given.

Inside the processes (:func:`session`): backend ``nccl`` on CUDA (one GPU per local rank), ``gloo`` on the
CPU, each process with ``cores / local processes`` threads. The training loop
(:func:`audiokd.training.fit`) wraps the model in ``DistributedDataParallel`` (gradients all-reduced in
buckets while the backward pass runs) and gives each rank a disjoint part of every global batch
(:meth:`Dist.batch_part`, the sharding ``DistributedSampler`` does per epoch, done per batch so that an
N-process run steps through the same global batches as a 1-process run with the same ``batch_size``).
Validation is computed on a shard per rank and gathered, so every rank selects the same best epoch. Only
rank 0 writes checkpoints, outputs and MLflow: one MLflow run per stage, never one per rank.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from audiokd.config import ConfigError, RuntimeConfig

log = logging.getLogger(__name__)

LAUNCHER_ARGS_ENV = "AUDIOKD_TORCHRUN_ARGS"
T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    """This process's place in the job; the default is a single process."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes outputs, checkpoints and MLflow."""
        return self.rank == 0

    @property
    def on(self) -> bool:
        """More than one process."""
        return self.world > 1

    def batch_part(self, idx: torch.Tensor) -> torch.Tensor:
        """This rank's part of a global batch (every world-th index, from position ``rank``)."""
        return idx[self.rank :: self.world] if self.on else idx

    def shard(self, n: int) -> slice:
        """This rank's contiguous part of ``n`` items (for validation), rank order = item order."""
        if not self.on:
            return slice(0, n)
        per, extra = divmod(n, self.world)
        start = self.rank * per + min(self.rank, extra)
        return slice(start, start + per + (1 if self.rank < extra else 0))

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's ``t`` (CPU tensors, any length along dim 0) in rank order."""
        if not self.on:
            return t
        parts: list[torch.Tensor | None] = [None] * self.world
        dist.all_gather_object(parts, t.cpu())
        return torch.cat([p for p in parts if p is not None])

    def all_objects(self, obj: T) -> list[T]:
        """Every rank's ``obj`` (picklable, e.g. CPU tensors and numbers) in rank order."""
        if not self.on:
            return [obj]
        parts: list[Any] = [None] * self.world
        dist.all_gather_object(parts, obj)
        return parts

    def sync_buffers(self, model: torch.nn.Module) -> None:
        """Give every rank rank 0's buffers (batch-norm running statistics), e.g. before validation:
        DDP broadcasts them at the start of each forward, and each rank's last forward updated its own."""
        if self.on:
            for buf in model.buffers():
                dist.broadcast(buf, src=0)

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """Element-wise sum of ``t`` over ranks (same shape everywhere)."""
        if self.on:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t


def global_sum(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over the processes of the job (a copy; ``t`` itself when there is one process).

    For loss terms that need a global count inside the objective (a mean over the labelled rows of the
    global batch); every rank must call it at the same point of each step, as for any collective.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def from_env() -> Dist:
    """The job layout torchrun exported (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    return Dist(
        rank=int(os.environ["RANK"]),
        world=world,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        local_world=int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
    )


def launched() -> bool:
    """True inside a process started by torchrun / ``torch.distributed.run``."""
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ


def launcher_command(nproc: int, argv: Sequence[str]) -> list[str]:
    """``python -m torch.distributed.run <launcher args> --nproc-per-node N <argv>``."""
    extra = shlex.split(os.environ.get(LAUNCHER_ARGS_ENV, "")) or ["--standalone"]
    return [sys.executable, "-m", "torch.distributed.run", *extra, f"--nproc-per-node={nproc}", *argv]


def relaunch_if_needed(runtime: RuntimeConfig, argv: Sequence[str] | None = None) -> None:
    """With ``runtime.nproc_per_node > 1`` outside a launcher: run this script under the launcher and exit
    with its status (never returns); otherwise return at once."""
    if runtime.nproc_per_node <= 1 or launched():
        return
    cmd = launcher_command(runtime.nproc_per_node, argv if argv is not None else sys.argv)
    log.info("runtime.nproc_per_node = %d: %s", runtime.nproc_per_node, shlex.join(cmd))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env)
    try:
        rc = proc.wait()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM here: the launcher stops its workers, then we exit
        proc.send_signal(signal.SIGTERM)
        proc.wait()
        raise
    sys.exit(rc)


def _threads(d: Dist, runtime: RuntimeConfig) -> int:
    if runtime.num_threads:
        return runtime.num_threads
    return max(1, (os.cpu_count() or 1) // max(1, d.local_world))


@contextlib.contextmanager
def session(runtime: RuntimeConfig, device: torch.device) -> Iterator[tuple[Dist, torch.device]]:
    """Join the job torchrun started (nothing to do for a single process) and leave it at the end.

    Yields this process's :class:`Dist` and its device (``cuda:<local rank>`` on GPUs).
    """
    d = from_env()
    if not d.on:
        yield d, device
        return
    if device.type == "cuda":
        if d.local_world > torch.cuda.device_count():
            raise ConfigError(
                f"runtime.nproc_per_node = {d.local_world} but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
        device = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(device)
    torch.set_num_threads(_threads(d, runtime))
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    if d.main:
        log.info("distributed: %d processes (%s), %d threads each", d.world, backend, torch.get_num_threads())
    try:
        yield d, device
    finally:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


class Joint(torch.nn.Module):
    """The model plus the modules that train beside it (e.g. feature projections), as one module for DDP.

    Its forward is the model's; the extra modules are used by the loss in the same backward pass, so DDP
    all-reduces their gradients together with the model's.
    """

    def __init__(self, model: torch.nn.Module, extra: Sequence[torch.nn.Module]) -> None:
        super().__init__()
        self.model = model
        self.extra = torch.nn.ModuleList(extra)

    def forward(self, *args: object, **kwargs: object) -> object:
        """The model's forward."""
        return self.model(*args, **kwargs)


def wrap(
    model: torch.nn.Module, extra: Sequence[torch.nn.Module], d: Dist, device: torch.device
) -> torch.nn.Module:
    """``model`` for training: unchanged in a single process, else DDP over ``model`` and ``extra``."""
    if not d.on:
        return model
    joint = Joint(model, extra) if extra else model
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(joint, device_ids=ids)


def sync_batchnorm(model: torch.nn.Module, d: Dist, device: torch.device) -> bool:
    """Turn ``model``'s batch-norm layers into ``SyncBatchNorm`` (in place) across CUDA processes.

    Each rank sees ``batch_size / world`` clips; per-rank batch statistics are noisier than those of the
    global batch, and the running averages differ by rank. SyncBatchNorm computes them over the global
    batch. PyTorch implements it for accelerators only, so CPU (gloo) runs keep per-rank statistics
    (README, "Scaling out"). Returns whether anything was converted; :func:`plain_batchnorm` undoes it.
    """
    if not d.on or device.type != "cuda":
        return False
    for name, child in list(model.named_children()):  # in place: the caller keeps its model object
        setattr(model, name, torch.nn.SyncBatchNorm.convert_sync_batchnorm(child))
    return any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())


def plain_batchnorm(model: torch.nn.Module) -> None:
    """Replace every ``SyncBatchNorm`` in ``model`` by the ``BatchNorm2d`` it was (same parameters and
    buffers), so that the trained model saves, exports and runs like one never trained across processes."""
    for name, child in list(model.named_children()):
        if isinstance(child, torch.nn.SyncBatchNorm):
            plain = torch.nn.BatchNorm2d(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            plain.load_state_dict(child.state_dict())
            plain.train(child.training)
            setattr(model, name, plain.to(next(iter(child.state_dict().values())).device))
        else:
            plain_batchnorm(child)


def unwrap(net: torch.nn.Module) -> torch.nn.Module:
    """The model inside a :func:`wrap` result."""
    if isinstance(net, DistributedDataParallel):
        net = net.module
    return net.model if isinstance(net, Joint) else net
