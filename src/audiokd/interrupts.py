"""Ctrl-C and SIGTERM as ``KeyboardInterrupt``, held back while a checkpoint or a store write is under way.

A signal that interrupts a database transaction (MLflow's sqlite store) or a checkpoint write half-way can
leave the store unable to mark the run KILLED. Inside :func:`deferred`, a signal is remembered and raised
when the block ends, so every write completes or never starts.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

_depth = 0
_pending: int | None = None


def _handler(signum: int, _frame: FrameType | None) -> None:
    global _pending
    if _depth:
        _pending = signum  # no logging here: the interrupted code may be inside a logging call
        return
    raise KeyboardInterrupt(signal.Signals(signum).name)


def install() -> None:
    """Route SIGINT and SIGTERM through the deferring handler (call once, from the main thread)."""
    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends, then raise ``KeyboardInterrupt`` naming the signal."""
    global _depth, _pending
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _pending is not None:
            signum, _pending = _pending, None
            raise KeyboardInterrupt(signal.Signals(signum).name)
