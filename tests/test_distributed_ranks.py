"""Across processes: one starting point, per-rank randomness, and batch norm over the global batch on GPUs."""

from __future__ import annotations

import torch

from audiokd.distributed import Dist, plain_batchnorm, sync_batchnorm
from audiokd.models.student import build_student
from dist_helpers import run_ranks, train_one_epoch
from fit_helpers import SHAPE, TASK, TINY


def test_ranks_start_alike_draw_their_own_dropout_masks_and_end_alike(tmp_path):
    zero, one = run_ranks(train_one_epoch, 2, tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(zero["initial"], one["initial"], strict=True))
    assert len(zero["masks"]) == len(one["masks"]) == 3
    assert all(a != b for a, b in zip(zero["masks"], one["masks"], strict=True))  # not one mask for all
    assert all(torch.equal(a, b) for a, b in zip(zero["final"], one["final"], strict=True))  # DDP in step


def _batchnorms(model: torch.nn.Module) -> list[type]:
    return [type(m) for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def test_batch_norm_syncs_across_cuda_processes_only_and_converts_back_unchanged():
    model = build_student(TINY, SHAPE, TASK)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert not sync_batchnorm(model, Dist(rank=0, world=2), torch.device("cpu"))  # no CPU implementation
    assert not sync_batchnorm(model, Dist(), torch.device("cuda"))  # one process: nothing to sync
    assert set(_batchnorms(model)) == {torch.nn.BatchNorm2d}
    # converting needs no GPU; only a SyncBatchNorm's training forward does
    assert sync_batchnorm(model, Dist(rank=0, world=2), torch.device("cuda"))
    assert set(_batchnorms(model)) == {torch.nn.SyncBatchNorm}
    plain_batchnorm(model)
    assert set(_batchnorms(model)) == {torch.nn.BatchNorm2d}
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
