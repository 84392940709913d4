"""Checkpoints: atomic, weights-only, keyed by params and inputs; a stale or unreadable one is set aside."""

from __future__ import annotations

import logging
import random

import numpy as np
import pytest
import torch

from audiokd.checkpoint import (
    Checkpointer,
    LoopState,
    TrainingParts,
    capture_rng,
    fingerprint_parts,
    restore_rng,
)

UNPICKLED: list[str] = []


class Payload:
    """Something a pickle-based loader would rebuild, running code of the file's choosing."""

    def __setstate__(self, state: dict) -> None:
        UNPICKLED.append("ran")
        self.__dict__.update(state)


def _parts(seed: int = 0) -> TrainingParts:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    model(torch.randn(5, 4)).pow(2).mean().backward()
    opt.step()
    sched.step()
    return TrainingParts(model, (), opt, sched, torch.Generator().manual_seed(seed))


def _draws(gen: torch.Generator) -> tuple:
    return (
        random.random(),
        float(np.random.rand()),
        float(torch.rand(1)),
        torch.randperm(10, generator=gen).tolist(),
    )


def test_rng_states_round_trip():
    gen = torch.Generator().manual_seed(3)
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    state = capture_rng(gen)
    first = _draws(gen)
    _draws(gen)
    restore_rng(state, gen)
    assert _draws(gen) == first


def test_save_then_restore_gives_back_model_optimizer_scheduler_and_loop(tmp_path):
    parts = _parts(0)
    ckpt = Checkpointer("distill", {"params": "a"}, tmp_path)
    ckpt.run_id = "run123"
    loop = LoopState(2, 6, 1, 0.5, {"w": torch.ones(2)}, [{"epoch": 1, "val_loss": 0.3}], {"key": ["x"]})
    ckpt.save(loop, parts, epochs=4)
    assert ckpt.path == tmp_path / "distill" / "last.pt" and ckpt.path.is_file()
    assert not list(ckpt.path.parent.glob(".*tmp*"))

    fresh = _parts(1)
    again = Checkpointer("distill", {"params": "a"}, tmp_path)
    assert again.load() is not None and again.run_id == "run123" and again.saved_epoch == 2
    got = again.restore(fresh)
    assert (got.epoch, got.step, got.best_epoch, got.best_score) == (2, 6, 1, 0.5)
    assert got.history == [{"epoch": 1, "val_loss": 0.3}] and got.pending_metrics == {"key": ["x"]}
    for a, b in zip(parts.model.state_dict().values(), fresh.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert fresh.scheduler.state_dict()["last_epoch"] == 1
    assert fresh.optimizer.state_dict()["state"][0]["exp_avg"].equal(
        parts.optimizer.state_dict()["state"][0]["exp_avg"]
    )
    assert "epoch 2" in again.where() and str(again.path) in again.where()


def _scaler(scale: float) -> torch.amp.GradScaler:
    """A GradScaler at ``scale`` (the CPU one: its state is the same as the CUDA one's)."""
    scaler = torch.amp.GradScaler("cpu", init_scale=scale)
    scaler.scale(torch.ones(()))  # the scale tensor exists from the first use on
    return scaler


def test_the_gradscaler_and_each_ranks_augmentation_generator_come_back(tmp_path):
    parts = _parts(0)
    parts.augment_generator = torch.Generator().manual_seed(7)
    parts.scaler = _scaler(1024.0)
    parts.scaler.update(new_scale=96.0)  # what a run of fp16 steps with overflows leaves
    ranks = []
    for rank in range(2):  # each rank's augmentation generator has drawn different numbers
        torch.randint(0, 9, (rank + 3,), generator=parts.augment_generator)
        ranks.append(parts.rng())
    ckpt = Checkpointer("distill", {"params": "a"}, tmp_path)
    ckpt.save(LoopState(1, 3, 1, 0.1, None), parts, 4, rank_rng=ranks)
    for rank in range(2):
        fresh = _parts(1)
        fresh.augment_generator, fresh.scaler = torch.Generator().manual_seed(7), _scaler(1024.0)
        again = Checkpointer("distill", {"params": "a"}, tmp_path)
        assert again.load() is not None
        again.restore(fresh, rank)
        assert fresh.scaler.get_scale() == 96.0
        assert torch.equal(fresh.augment_generator.get_state(), ranks[rank]["augment"])
    assert not torch.equal(ranks[0]["augment"], ranks[1]["augment"])


def test_checkpoint_of_other_params_is_set_aside_not_resumed(tmp_path, caplog):
    Checkpointer("distill", {"params": "a"}, tmp_path).save(LoopState(1, 3, 1, 0.1, None), _parts(), 4)
    saved = (tmp_path / "distill" / "last.pt").read_bytes()
    other = Checkpointer("distill", {"params": "b"}, tmp_path)
    with caplog.at_level(logging.WARNING):
        assert other.load() is None
    assert other.state is None and other.run_id is None
    assert not other.path.exists()
    (aside,) = (tmp_path / "distill").glob("set-aside-*.pt")
    assert aside.read_bytes() == saved  # renamed, nothing lost
    assert "other params" in caplog.text and str(aside) in caplog.text


def test_fingerprint_follows_input_content_and_names_what_changed(tmp_path, caplog):
    features = tmp_path / "features"
    (features / "train").mkdir(parents=True)
    (features / "train" / "x.npy").write_bytes(b"abc")
    parts = fingerprint_parts({"distill": {"lr": 0.1}}, [features])
    assert parts == fingerprint_parts({"distill": {"lr": 0.1}}, [features])
    assert parts["params"] != fingerprint_parts({"distill": {"lr": 0.2}}, [features])["params"]
    Checkpointer("distill", parts, tmp_path / "ck").save(LoopState(1, 3, 1, 0.1, None), _parts(), 4)

    (features / "train" / "x.npy").write_bytes(b"abd")
    changed = fingerprint_parts({"distill": {"lr": 0.1}}, [features])
    assert changed["params"] == parts["params"] and changed != parts
    with caplog.at_level(logging.WARNING):
        assert Checkpointer("distill", changed, tmp_path / "ck").load() is None
    assert f"other input {features.as_posix()}" in caplog.text


def test_truncated_checkpoint_is_set_aside_with_a_warning(tmp_path, caplog):
    ckpt = Checkpointer("train_teacher", {"params": "a"}, tmp_path)
    ckpt.save(LoopState(1, 3, 1, 0.1, None), _parts(), 4)
    data = ckpt.path.read_bytes()
    ckpt.path.write_bytes(data[: len(data) // 2])
    (ckpt.path.parent / ".last.pt.tmp-123").write_bytes(b"half a write")
    with caplog.at_level(logging.WARNING):
        assert Checkpointer("train_teacher", {"params": "a"}, tmp_path).load() is None
    assert "unreadable" in caplog.text
    assert [p.name.startswith("set-aside-") for p in ckpt.path.parent.iterdir()] == [True]


def test_a_pickled_object_in_a_checkpoint_is_never_unpickled(tmp_path, caplog):
    ckpt = Checkpointer("distill", {"params": "a"}, tmp_path)
    ckpt.path.parent.mkdir(parents=True)
    torch.save({"format": 1, "payload": Payload()}, ckpt.path)
    with caplog.at_level(logging.WARNING):
        assert ckpt.load() is None
    assert UNPICKLED == [] and "unreadable" in caplog.text


def test_discard_removes_the_checkpoint_but_keeps_set_aside_ones(tmp_path):
    root = tmp_path / ".checkpoints"
    ckpt = Checkpointer("distill", {"params": "a"}, root)
    ckpt.save(LoopState(1, 3, 1, 0.1, None), _parts(), 4)
    ckpt.discard()
    assert not root.exists()
    ckpt.save(LoopState(1, 3, 1, 0.1, None), _parts(), 4)
    aside = ckpt.set_aside()
    ckpt.save(LoopState(2, 6, 1, 0.1, None), _parts(), 4)
    ckpt.discard()
    assert not ckpt.path.exists() and aside.is_file()


def test_a_failed_write_is_logged_and_training_goes_on(tmp_path, caplog):
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the checkpoint folder would be")  # as a full disk, fails the write
    ckpt = Checkpointer("distill", {"params": "a"}, blocker)
    with caplog.at_level(logging.WARNING):
        ckpt.save(LoopState(2, 6, 1, 0.1, None), _parts(), 4)
    assert "could not write checkpoint" in caplog.text
    assert ckpt.saved_epoch is None and "no checkpoint written yet" in ckpt.where()


@pytest.mark.parametrize("stage", ["train_teacher", "distill"])
def test_checkpoints_live_under_the_stage_name(tmp_path, stage):
    assert Checkpointer(stage, {}, tmp_path).path == tmp_path / stage / "last.pt"
