"""Ctrl-C and SIGTERM become KeyboardInterrupt, but not in the middle of a checkpoint or store write."""

from __future__ import annotations

import os
import signal

import pytest

from audiokd.interrupts import deferred, install


@pytest.fixture
def handlers():
    """Install the stage handlers for one test, then put pytest's back."""
    old = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    install()
    yield
    signal.signal(signal.SIGINT, old[0])
    signal.signal(signal.SIGTERM, old[1])


def test_sigterm_raises_keyboard_interrupt_naming_it(handlers):
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        os.kill(os.getpid(), signal.SIGTERM)
        sum(range(1000))  # a few bytecodes for the handler to run between


def test_a_signal_during_a_deferred_write_waits_for_the_write(handlers):
    written = []
    with pytest.raises(KeyboardInterrupt, match="SIGINT"), deferred():
        os.kill(os.getpid(), signal.SIGINT)
        sum(range(1000))
        with deferred():  # nested blocks hold it until the outermost ends
            written.append("checkpoint")
        written.append("metrics")
    assert written == ["checkpoint", "metrics"]
    with deferred():  # nothing pending any more
        written.append("next")
    assert written[-1] == "next"
