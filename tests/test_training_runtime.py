"""runtime settings of the training loop: DataLoader workers, autocast precision, torch.compile."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from audiokd.config import ConfigError, RuntimeConfig, StudentConfig, load_section
from audiokd.distill.losses import hard_mse
from audiokd.distributed import Dist
from audiokd.models.student import build_student
from audiokd.training import FitSettings, fit, seed_everything, settings_from
from fit_helpers import SETTINGS, SHAPE, TASK, TINY, tiny_data


class Recorder:
    """MSE to the labels; remembers the dtype of the model's outputs and the batches it saw."""

    def __init__(self) -> None:
        self.dtypes: set[torch.dtype] = set()
        self.batches: list[list[int]] = []
        self.losses: list[float] = []

    def __call__(self, net, x, y, idx):
        logits = net(pixel_values=x).logits
        self.dtypes.add(logits.dtype)
        self.batches.append(idx.tolist())
        hard = hard_mse(logits.float(), y)
        self.losses.append(float(hard))
        return {"hard": hard, "total": hard}


def _fit(settings: FitSettings, student: StudentConfig = TINY):
    seed_everything(0)
    model = build_student(student, SHAPE, TASK)
    train, val = tiny_data()
    rec = Recorder()
    result = fit(model, rec, train, val, TASK, settings)
    return result, {k: v.clone() for k, v in model.state_dict().items()}, rec


def test_dataloader_workers_give_the_same_batches_and_weights_as_in_process_slicing():
    ref, w_ref, rec_ref = _fit(SETTINGS)
    two, w_two, rec_two = _fit(dataclasses.replace(SETTINGS, num_workers=2))
    assert rec_two.batches == rec_ref.batches and len(rec_ref.batches) == 12
    assert two.history == ref.history
    assert all(torch.equal(w_ref[k], w_two[k]) for k in w_ref)


def test_bf16_autocast_runs_the_forward_in_bf16_on_the_cpu():
    fp32, _, rec32 = _fit(SETTINGS)
    bf16, w16, rec16 = _fit(dataclasses.replace(SETTINGS, precision="bf16"))
    assert rec32.dtypes == {torch.float32} and rec16.dtypes == {torch.bfloat16}
    assert all(v.dtype == torch.float32 for v in w16.values() if v.is_floating_point())  # fp32 master weights
    assert all(torch.isfinite(torch.tensor(h["train_total_loss"])) for h in bf16.history)
    # rounding differs from fp32 but it learns the same thing
    assert bf16.history[-1]["train_total_loss"] < bf16.history[0]["train_total_loss"]
    assert bf16.history[-1]["train_total_loss"] != fp32.history[-1]["train_total_loss"]


def test_fp16_needs_cuda_and_the_message_names_the_key():
    runtime = RuntimeConfig(precision=16)
    with pytest.raises(ConfigError, match=r"runtime\.precision = 16 needs a CUDA device"):
        settings_from(
            runtime, torch.device("cpu"), Dist(), epochs=1, batch_size=2, lr=1e-3, weight_decay=0, desc="t"
        )


@pytest.mark.parametrize("value", [32, "bf16", 16])
def test_precision_accepts_32_bf16_16(value):
    assert load_section({"runtime": {"precision": value}}, "runtime").precision == value


def test_precision_rejects_other_values_naming_the_key():
    with pytest.raises(
        ConfigError, match=r"runtime\.precision = 8 is not allowed: choose one of 32, bf16, 16"
    ):
        load_section({"runtime": {"precision": 8}}, "runtime")


@pytest.mark.slow
def test_torch_compile_trains_like_eager():
    # without dropout: compiled code draws dropout masks from its own random stream
    student = dataclasses.replace(TINY, dropout=0.0)
    # lr 1e-3: at 1e-2 the 12 steps amplify rounding differences chaotically (3% apart by the end, measured)
    settings = dataclasses.replace(SETTINGS, lr=1e-3)
    eager, _, rec_eager = _fit(settings, student)
    compiled, _, rec_compiled = _fit(dataclasses.replace(settings, compile=True), student)
    # the same weights and batch: the first step's loss differs only by the fused kernels' rounding (measured
    # 1.4e-4 relative since the batch-norm scales start at 1, so the body is no longer scaled down to ~0; a
    # wrong compiled graph would be off by far more)
    assert rec_compiled.losses[0] == pytest.approx(rec_eager.losses[0], rel=5e-4)
    # 12 optimizer steps on 24 clips amplify it (measured 0.8% apart at the end): the same training, not the
    # same bits; a graph that trained differently (a lost update, another loss) would be far outside this
    last = compiled.history[-1]
    assert last["train_total_loss"] == pytest.approx(eager.history[-1]["train_total_loss"], rel=2.5e-2)
    assert last["val_loss"] == pytest.approx(eager.history[-1]["val_loss"], rel=2.5e-2)
    assert last["train_total_loss"] < compiled.history[0]["train_total_loss"]
