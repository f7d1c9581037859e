"""Clean stops: SIGINT / SIGTERM set a flag that the training loop reads at every step.

The loop then stops before the next step, leaves the last end-of-epoch checkpoint
as it is, writes no summary (the run is unfinished, so running the same command
again resumes it) and the process exits with 128 + the signal number (130 for
SIGINT, 143 for SIGTERM).

Handlers are installed only where nobody else has claimed the signal: a launcher
that handles SIGTERM itself (submitit, which turns SLURM's warning signals into a
requeue) keeps its handler. A second signal of the same kind stops the process
the default way (KeyboardInterrupt / termination) without waiting for the step.
"""
from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger("dropbn")

_requested: int | None = None  # signal number once a stop was asked for


def stopping() -> bool:
    """True once SIGINT or SIGTERM arrived while handlers were installed."""
    return _requested is not None


def requested_signal() -> int | None:
    return _requested


class GracefulStop:
    """Context manager: while active, SIGINT/SIGTERM request a stop instead of killing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self._old: dict = {}

    def _handler(self, signum, frame):
        global _requested
        if _requested == signum:  # second time: give up waiting for the step boundary
            old = self._old.get(signum, signal.SIG_DFL)
            signal.signal(signum, old if old is not None else signal.SIG_DFL)
            signal.raise_signal(signum)
            return
        _requested = signum
        log.warning(f"{signal.Signals(signum).name}: stopping at the next step; the last "
                    f"end-of-epoch checkpoint is kept (send it again to stop at once)")

    def __enter__(self) -> "GracefulStop":
        global _requested
        _requested = None
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in self.SIGNALS:
            cur = signal.getsignal(sig)
            if cur in (signal.SIG_DFL, signal.default_int_handler):
                self._old[sig] = cur
                signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        global _requested
        _requested = None
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()
