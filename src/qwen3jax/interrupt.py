"""Ctrl-C before the train loop's own signal handler takes over (imports, data, model and compilation set-up)."""

from __future__ import annotations

import signal

_received = False


def catch_during_set_up() -> None:
    """SIGINT raises KeyboardInterrupt, as by default, and is remembered: the exception lands in whatever code runs
    at that moment, which can be a library's callback or clean-up that swallows it, and then the run must not start
    anyway (`raise_if_interrupted`)."""

    def handle(signum, frame):
        global _received
        _received = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handle)


def raise_if_interrupted() -> None:
    """KeyboardInterrupt if a Ctrl-C came during set-up (called where the loop takes over the signal)."""
    if _received:
        raise KeyboardInterrupt
