"""Per-step loss terms: reduced across ranks on the training device, copied to the host once per interval."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from audiokd.distill.losses import hard_mse
from audiokd.distributed import Dist
from audiokd.models.student import build_student
from audiokd.step_losses import StepLosses, global_means
from audiokd.tracking import MetricBuffer
from audiokd.training import fit, seed_everything
from dist_helpers import reduce_terms, run_ranks
from fit_helpers import SETTINGS, SHAPE, TASK, TINY, tiny_data


def test_two_gloo_ranks_reduce_the_terms_to_the_global_batch_mean_as_a_device_tensor(tmp_path):
    results = run_ranks(reduce_terms, 2, tmp_path)  # rank r: 3 or 5 rows, losses r + 1, 10 (r + 1)
    hard = (3 * 1.0 + 5 * 2.0) / 8
    for device, values in results:  # every rank gets the same global means, sorted by term name
        assert device == "cpu"
        assert values == pytest.approx([hard, 10 * hard])


class _DeviceOfReduce(Dist):
    """A 2-rank layout whose ``sum`` records the device of what it is asked to all-reduce."""

    seen: list[torch.device] = []

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        self.seen.append(t.device)
        return t


def test_the_reduction_never_leaves_the_device_of_the_terms():
    # NCCL reduces CUDA tensors only; a "meta" tensor stands in for one here: any copy to the CPU raises
    terms = {"total": torch.empty((), device="meta"), "hard": torch.empty((), device="meta")}
    v = global_means(terms, 4, 8, _DeviceOfReduce(rank=0, world=2))
    assert _DeviceOfReduce.seen == [torch.device("meta")] and v.device.type == "meta"


def test_step_losses_wait_on_the_device_and_come_back_in_order():
    losses = StepLosses(every=3)
    for step in (1, 2):  # device tensors that cannot be copied: adding them must not copy
        losses.add(step, {"hard": 0, "total": 0}, torch.empty(2, device="meta"))
    assert not losses.due
    losses = StepLosses(every=2)
    losses.add(7, {"total": 0, "hard": 0}, torch.tensor([1.0, 2.0]))
    losses.add(8, {"total": 0, "hard": 0}, torch.tensor([3.0, 4.0]))
    assert losses.due
    assert losses.drain() == [(7, {"hard": 1.0, "total": 2.0}), (8, {"hard": 3.0, "total": 4.0})]
    assert losses.drain() == [] and not losses.due


class _Kept(MetricBuffer):
    """A metric buffer that keeps what each flush would send (no MLflow run is active here)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, int, float]] = []

    def flush(self) -> None:
        p = self.pending()
        self.sent += list(zip(p["key"], p["step"], p["value"], strict=True))
        super().flush()


class _Recorder:
    def __init__(self) -> None:
        self.totals: list[float] = []

    def __call__(self, net, x, y, idx):
        hard = hard_mse(net(pixel_values=x).logits, y)
        self.totals.append(float(hard.detach()))
        return {"hard": hard, "total": hard}


def test_every_step_is_still_logged_under_its_name_and_step(monkeypatch):
    monkeypatch.setattr("audiokd.step_losses.SYNC_EVERY", 2)
    seed_everything(0)
    model = build_student(TINY, SHAPE, TASK)
    train, val = tiny_data()
    metrics, rec = _Kept(), _Recorder()
    result = fit(model, rec, train, val, TASK, dataclasses.replace(SETTINGS, epochs=2), metrics)
    logged = metrics.sent
    totals = [(s, v) for k, s, v in logged if k == "train/total_loss"]
    assert [s for s, _ in totals] == [1, 2, 3, 4, 5, 6]
    assert [v for _, v in totals] == pytest.approx(rec.totals, rel=1e-6)
    assert {k for k, _, _ in logged} >= {"train/hard_loss", "train/total_loss", "val/loss"}
    assert result.history[0]["train_total_loss"] == pytest.approx(sum(rec.totals[:3]) / 3, rel=1e-6)
