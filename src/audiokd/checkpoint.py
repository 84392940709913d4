"""Per-epoch training checkpoints kept outside the DVC outputs, so a killed stage resumes where it stopped.

DVC deletes a stage's outputs before it reruns the stage, so checkpoints live in ``.checkpoints/<stage>/``
at the repository root (git- and DVC-ignored; ``AUDIOKD_CHECKPOINT_DIR`` moves the root). Each stage keeps
one file, ``last.pt``, replaced atomically (temp file, fsync, ``os.replace``) at the end of every epoch, so
a ``kill -9`` at any moment leaves the previous complete checkpoint in place.

A checkpoint holds plain tensors and Python scalars only and is read back with
``torch.load(weights_only=True)``: no pickled objects. It is keyed by a fingerprint of the stage's params
sections, the tracking store and the content of its input folders; one made under other params or from other
inputs is never resumed but renamed to ``set-aside-<time>.pt`` beside it (nothing is deleted), and so is an
unreadable one. After a successful stage the checkpoint is deleted: the outputs are then in DVC.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audiokd.io import tree_sha256

log = logging.getLogger(__name__)

FORMAT = 2  # 2: per-rank RNG states, the augmentation generator and the GradScaler
ROOT_ENV = "AUDIOKD_CHECKPOINT_DIR"
DEFAULT_ROOT = Path(".checkpoints")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used; the message is one line naming the file and what to do."""


def checkpoint_root() -> Path:
    """Where stages keep their checkpoints: ``$AUDIOKD_CHECKPOINT_DIR`` or ``.checkpoints``."""
    return Path(os.environ.get(ROOT_ENV) or DEFAULT_ROOT)


def fingerprint_parts(params: Mapping[str, Any], inputs: Sequence[str | Path]) -> dict[str, str]:
    """Digest of the params (JSON, sorted keys) and of each input folder, by name; see :func:`fingerprint`."""
    parts = {"params": hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()}
    for p in inputs:
        parts[f"input {Path(p).as_posix()}"] = tree_sha256(p)
    return parts


def fingerprint(parts: Mapping[str, str]) -> str:
    """One digest of :func:`fingerprint_parts`: equal only for the same params and the same input bytes."""
    return hashlib.sha256(json.dumps(dict(parts), sort_keys=True).encode()).hexdigest()


def capture_rng(gen: torch.Generator, augment: torch.Generator | None = None) -> dict[str, Any]:
    """The state of every random generator training draws from: Python, NumPy, torch (CPU, CUDA), ``gen``
    (batch order) and ``augment`` (the augmentation's own generator, when there is one)."""
    version, mt, gauss = random.getstate()
    key, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "python": [version, list(mt), gauss],
        "numpy": [str(key), torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generator": gen.get_state(),
        "augment": augment.get_state() if augment is not None else None,
    }


def restore_rng(
    state: Mapping[str, Any], gen: torch.Generator, augment: torch.Generator | None = None
) -> None:
    """Put back what :func:`capture_rng` recorded."""
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    key, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((key, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    gen.set_state(state["generator"])
    if augment is not None and state.get("augment") is not None:
        augment.set_state(state["augment"])


def _atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync it, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)


@dataclass
class LoopState:
    """Where the training loop stands at the end of an epoch (what :func:`audiokd.training.fit` resumes)."""

    epoch: int
    step: int
    best_epoch: int
    best_score: float
    best_state: dict[str, torch.Tensor] | None
    history: list[dict[str, float]] = field(default_factory=list)
    pending_metrics: dict[str, list] | None = None


@dataclass
class TrainingParts:
    """The stateful pieces of a training loop that a checkpoint captures and restores."""

    model: torch.nn.Module
    extra_modules: tuple[torch.nn.Module, ...]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    augment_generator: torch.Generator | None = None  # the batch augmentation's (audiokd.augment)
    scaler: torch.amp.GradScaler | None = None  # fp16 loss scaling: its scale and growth tracker
    ema: Any = None  # the weight average (audiokd.averaging.WeightAverage), when training keeps one

    def rng(self) -> dict[str, Any]:
        """This process's random generator states (:func:`capture_rng`)."""
        return capture_rng(self.generator, self.augment_generator)


class Checkpointer:
    """The checkpoint file of one stage: load (verified), save (atomic), restore, discard."""

    def __init__(self, stage: str, parts: Mapping[str, str], root: str | Path | None = None) -> None:
        self.stage = stage
        self.parts = dict(parts)
        self.fingerprint = fingerprint(parts)
        self.path = Path(root if root is not None else checkpoint_root()) / stage / "last.pt"
        self.run_id: str | None = None
        self.state: dict[str, Any] | None = None
        self.saved_epoch: int | None = None
        self.stale_run_id: str | None = None

    def load(self, owner: bool = True) -> dict[str, Any] | None:
        """Read the checkpoint if it belongs to these params and inputs; else set it aside and return None.

        ``owner=False`` (the other ranks of a multi-process run) only reads: it neither sets files aside
        nor cleans up, and resumes exactly when the owner does (the same file, checked the same way).
        """
        if not owner:
            return self._read_only()
        for tmp in self.path.parent.glob(f".{self.path.name}.tmp-*"):
            tmp.unlink(missing_ok=True)  # a write cut short by a kill: never complete, never used
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated, tampered with, or not a checkpoint at all
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            aside = self.set_aside()
            log.warning(
                "%s: checkpoint %s is unreadable (%s); set aside as %s", self.stage, self.path, reason, aside
            )
            return None
        if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("stage") != self.stage:
            aside = self.set_aside()
            log.warning(
                "%s: %s is not a format-%d checkpoint of this stage; set aside as %s",
                self.stage,
                self.path,
                FORMAT,
                aside,
            )
            return None
        if state.get("fingerprint") != self.fingerprint:
            old = state.get("parts", {})
            differ = [k for k in sorted(set(old) | set(self.parts)) if old.get(k) != self.parts.get(k)]
            self.stale_run_id = state.get("run_id")
            aside = self.set_aside()
            log.warning(
                "%s: checkpoint %s was made with other %s; not resumed, set aside as %s; starting afresh",
                self.stage,
                self.path,
                ", ".join(differ) or "settings",
                aside,
            )
            return None
        self.state, self.run_id, self.saved_epoch = state, state.get("run_id"), int(state["epoch"])
        log.info(
            "%s: resuming from %s after epoch %d/%d (step %d), continuing MLflow run %s",
            self.stage,
            self.path,
            state["epoch"],
            state["epochs"],
            state["step"],
            self.run_id,
        )
        return state

    def _read_only(self) -> dict[str, Any] | None:
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:  # missing (set aside by the owner meanwhile) or unreadable: the owner starts afresh
            return None
        if not isinstance(state, dict) or state.get("fingerprint") != self.fingerprint:
            return None
        self.state, self.run_id, self.saved_epoch = state, state.get("run_id"), int(state["epoch"])
        return state

    def set_aside(self) -> Path:
        """Rename the checkpoint to ``set-aside-<time>.pt`` beside it (never delete what a run made)."""
        aside = self.path.with_name(f"set-aside-{time.strftime('%Y%m%d-%H%M%S')}.pt")
        n = 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"set-aside-{time.strftime('%Y%m%d-%H%M%S')}-{n}.pt")
        os.replace(self.path, aside)
        return aside

    def save(
        self,
        loop: LoopState,
        parts: TrainingParts,
        epochs: int,
        rank_rng: list[dict[str, Any]] | None = None,
    ) -> None:
        """Write the loop state atomically; a failed write (e.g. disk full) is logged, training goes on.

        ``rank_rng``: every rank's :meth:`TrainingParts.rng` in rank order (several processes, whose dropout
        and augmentation draw different numbers); each rank resumes its own.
        """
        state = {
            "format": FORMAT,
            "stage": self.stage,
            "fingerprint": self.fingerprint,
            "parts": self.parts,
            "run_id": self.run_id,
            "epochs": epochs,
            "epoch": loop.epoch,
            "step": loop.step,
            "best_epoch": loop.best_epoch,
            "best_score": loop.best_score,
            "best_state": loop.best_state,
            "history": loop.history,
            "pending_metrics": loop.pending_metrics,
            "model": parts.model.state_dict(),
            "extra_modules": [m.state_dict() for m in parts.extra_modules],
            "optimizer": parts.optimizer.state_dict(),
            "scheduler": parts.scheduler.state_dict(),
            "rng": parts.rng(),
            "rank_rng": rank_rng or [],
            "scaler": parts.scaler.state_dict() if parts.scaler is not None else {},
            "ema": parts.ema.state_dict() if parts.ema is not None else None,
        }
        try:
            _atomic_save(state, self.path)
        except (OSError, RuntimeError) as e:  # torch reports a failed write (e.g. ENOSPC) as either
            log.warning(
                "%s: could not write checkpoint %s (%s); training goes on, %s",
                self.stage,
                self.path,
                e,
                self.where(),
            )
            return
        self.saved_epoch = loop.epoch

    def restore(self, parts: TrainingParts, rank: int = 0) -> LoopState:
        """Load the verified checkpoint into the model, optimizer, scheduler, GradScaler and generators
        (``rank``'s own random states where the checkpoint has one per rank)."""
        if self.state is None:
            raise CheckpointError(f"{self.path}: nothing loaded to restore")
        s = self.state
        try:
            parts.model.load_state_dict(s["model"])
            for module, sd in zip(parts.extra_modules, s["extra_modules"], strict=True):
                module.load_state_dict(sd)
            parts.optimizer.load_state_dict(s["optimizer"])
            parts.scheduler.load_state_dict(s["scheduler"])
            ranks = s["rank_rng"]
            rng = ranks[rank] if rank < len(ranks) else s["rng"]
            restore_rng(rng, parts.generator, parts.augment_generator)
            if parts.scaler is not None and s["scaler"]:
                parts.scaler.load_state_dict(s["scaler"])
            if parts.ema is not None:
                parts.ema.load_state_dict(s["ema"])
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            aside = self.set_aside()
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(
                f"{self.path} does not fit the model built from these params ({first}); "
                f"set aside as {aside}: rerun to start afresh"
            ) from None
        return LoopState(
            epoch=int(s["epoch"]),
            step=int(s["step"]),
            best_epoch=int(s["best_epoch"]),
            best_score=float(s["best_score"]),
            best_state=s["best_state"],
            history=list(s["history"]),
            pending_metrics=s["pending_metrics"],
        )

    def where(self) -> str:
        """Where the last good checkpoint is, for log and error messages."""
        if self.saved_epoch is None:
            return f"no checkpoint written yet ({self.path} is written at the end of each epoch)"
        return f"the last good checkpoint (end of epoch {self.saved_epoch}) is kept in {self.path}"

    def discard(self) -> None:
        """Delete the checkpoint after a successful stage (its outputs are then in DVC)."""
        self.path.unlink(missing_ok=True)
        for d in (self.path.parent, self.path.parent.parent):
            try:
                d.rmdir()  # only when empty: set-aside checkpoints stay
            except OSError:
                break


def open_checkpoint(
    stage: str, params: Mapping[str, Any], inputs: Sequence[str | Path], owner: bool = True
) -> Checkpointer:
    """The stage's checkpointer, with a matching checkpoint loaded (or a stale one set aside).

    ``params`` should hold everything that changes the result (params sections, tracking URI); ``inputs``
    are the folders or files the stage reads. The MLflow run of a set-aside checkpoint, left RUNNING by a
    killed job, is marked KILLED. ``owner=False``: a rank other than 0, which only reads.
    """
    from audiokd.tracking import end_stale_run

    ckpt = Checkpointer(stage, fingerprint_parts(params, [p for p in inputs if p]))
    ckpt.load(owner)
    if ckpt.stale_run_id:
        end_stale_run(ckpt.stale_run_id)
    return ckpt
