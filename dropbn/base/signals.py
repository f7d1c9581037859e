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

import contextlib
import logging
import os
import signal
import threading
import time

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
            if cur in (signal.SIG_DFL, signal.default_int_handler, forward_to_children):
                self._old[sig] = cur
                signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        global _requested
        _requested = None
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


# ---------------------------------------------------------------- the main process of a parallel sweep
# Under a launcher whose workers are child processes (joblib: hydra/launcher=parallel), SIGTERM sent to
# `dropbn train -m` alone (by `dropbn study`, a job scheduler, `kill PID`) would end the main process
# and leave its workers training, orphaned. The main process forwards it to its children instead, each
# of which stops at its next step as above, then ends the default way. A worker running in this same
# process (the basic launcher) replaces the forwarder with GracefulStop while it trains.

def child_pids(pid: int | None = None) -> list[int]:
    """The direct child processes of `pid` (default: this process), from /proc; [] where there is none."""
    pid = os.getpid() if pid is None else pid
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return []
    out = []
    for e in entries:
        try:
            with open(f"/proc/{e}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 1 and fields[1] == str(pid):
            out.append(int(e))
    return out


def forward_to_children(signum, frame) -> None:
    """Signal handler: send the signal on to every child process, then end this one by it."""
    for pid in child_pids():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)


MAIN_PID_ENV = "DROPBN_SWEEP_MAIN_PID"  # the pid of `dropbn train -m`, for its worker processes


def forward_sigterm() -> None:
    """In the main process of `dropbn train -m`: pass SIGTERM on to the launcher's worker processes
    (when nobody else handles SIGTERM there)."""
    os.environ[MAIN_PID_ENV] = str(os.getpid())
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, forward_to_children)


def in_worker_process(launcher) -> bool:
    """Whether this job runs in a joblib worker process, not in the sweep's main process. A worker whose
    run was stopped by a signal ends itself (os._exit): an idle worker would otherwise live on, orphaned."""
    main = os.environ.get(MAIN_PID_ENV)
    joblib = str((launcher or {}).get("_target_", "")).endswith("JoblibLauncher")
    return joblib and bool(main) and main != str(os.getpid())


# kill -9 of `dropbn train -m` gives it no chance to forward anything: its joblib workers would live on,
# orphaned and idle (or training a run nobody waits for). Each worker watches its parent instead.
_watching = False


def exit_with_parent(poll_s: float = 1.0) -> None:
    """In a worker process of a parallel launcher: end this process (os._exit) within `poll_s` of its
    parent's death, seen as this process being re-parented. The run it was training keeps its last
    checkpoint and its claim turns dead, so the same command resumes it. Once per process."""
    global _watching
    if _watching:
        return
    _watching = True
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(128 + signal.SIGKILL)  # as if killed with its parent

    threading.Thread(target=watch, name="dropbn-exit-with-parent", daemon=True).start()
