"""Start a real process group of N ranks on the CPU (gloo) and run a function in each rank."""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from audiokd.distill.losses import hard_mse
from audiokd.distributed import Dist
from audiokd.models.student import build_student
from audiokd.step_losses import global_means
from audiokd.training import fit, seed_everything
from fit_helpers import SETTINGS, SHAPE, TASK, TINY, tiny_data


def _rank(rank: int, world: int, init: str, out: Path, fn: Callable[[Dist], Any]) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        result = fn(Dist(rank=rank, world=world, local_rank=rank, local_world=world))
        (out / f"rank{rank}.pkl").write_bytes(pickle.dumps(result))
    finally:
        dist.destroy_process_group()


def run_ranks(fn: Callable[[Dist], Any], world: int, tmp: Path) -> list[Any]:
    """``fn(dist)`` in each of ``world`` processes joined by a gloo group; their results in rank order.

    ``fn`` must be a module-level function (it is pickled into the spawned processes).
    """
    init = f"file://{tmp / 'rendezvous'}"
    mp.spawn(_rank, args=(world, init, tmp, fn), nprocs=world, join=True)
    return [pickle.loads((tmp / f"rank{r}.pkl").read_bytes()) for r in range(world)]


# functions the tests run in each rank (module level, so that they can be pickled)


def reduce_terms(d: Dist) -> tuple[str, list[float]]:
    """Rank r has 3 or 5 rows with mean losses hard = r + 1, total = 10 (r + 1): their global means."""
    rows = (3, 5)
    terms = {"total": torch.tensor(10.0 * (d.rank + 1)), "hard": torch.tensor(float(d.rank + 1))}
    v = global_means(terms, rows[d.rank], sum(rows), d)
    return str(v.device), v.tolist()


def train_one_epoch(d: Dist) -> dict[str, list]:
    """A 1-epoch DDP fit of the tiny student (dropout on): its initial and final weights and, per step,
    a dropout mask drawn from the global RNG, as the model's dropout layers draw theirs."""
    seed_everything(0)  # what every rank's stage process does before it builds the model
    model = build_student(TINY, SHAPE, TASK)
    initial = [p.detach().clone() for p in model.parameters()]
    masks: list[list[float]] = []

    def objective(net, x, y, idx):
        masks.append(torch.nn.functional.dropout(torch.ones(16), 0.5).tolist())
        hard = hard_mse(net(pixel_values=x).logits, y)
        return {"hard": hard, "total": hard}

    train, val = tiny_data()
    fit(model, objective, train, val, TASK, dataclasses.replace(SETTINGS, epochs=1, dist=d))
    return {"initial": initial, "final": [p.detach().clone() for p in model.parameters()], "masks": masks}
