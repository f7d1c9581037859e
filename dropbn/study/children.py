"""Child `dropbn train -m` processes of a study: started one by one, waited for together.

While a `Children` block is open in the main thread, SIGTERM sent to the study is forwarded to every
running child. Ctrl-C reaches the children directly (the terminal signals the whole process group)
and each stops at its next step; a SIGINT sent to the study alone is passed on to children still
running 5 s later, and a child still running 300 s after that is killed.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

POLL_S = 0.2      # how often wait_any looks at the children
GRACE_S = 5.0     # after Ctrl-C: how long children get before SIGINT is passed on
STOP_S = 300.0    # then: how long they get to stop at their next step before they are killed


class Children:
    def __init__(self):
        self.running: list[subprocess.Popen] = []
        self._old = None

    def __enter__(self) -> "Children":
        if threading.current_thread() is threading.main_thread():
            self._old = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGTERM, self._forward)
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.running:  # left by an error: the children must not outlive the study
                self._signal_all(signal.SIGTERM)
                self._wait_all(STOP_S)
        finally:
            if self._old is not None:
                signal.signal(signal.SIGTERM, self._old)

    def _forward(self, signum, frame) -> None:
        self._signal_all(signum)

    def _signal_all(self, signum) -> None:
        for p in self.running:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signum)

    def _wait_all(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        for p in list(self.running):
            try:
                p.wait(timeout=max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.running.clear()

    def start(self, cmd: list[str], env: dict | None = None) -> subprocess.Popen:
        p = subprocess.Popen(cmd, env=child_env(env))
        self.running.append(p)
        return p

    def wait_any(self, timeout: float | None = None) -> subprocess.Popen | None:
        """The first running child to end (it leaves `running`); None if none ended within `timeout` s."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            for p in self.running:
                if p.poll() is not None:
                    self.running.remove(p)
                    return p
            if end is not None and time.monotonic() >= end:
                return None
            time.sleep(POLL_S)

    def interrupted(self) -> int:
        """After Ctrl-C: let every child stop (module docstring); 130, or 143 if a child says SIGTERM."""
        codes = []
        try:
            end = time.monotonic() + GRACE_S
            while self.running and time.monotonic() < end:
                codes += [p.returncode for p in list(self.running) if p.poll() is not None]
                self.running = [p for p in self.running if p.returncode is None]
                time.sleep(POLL_S)
            self._signal_all(signal.SIGINT)
            self._wait_all(STOP_S)
        except KeyboardInterrupt:  # a second Ctrl-C: stop now
            for p in self.running:
                p.kill()
            self._wait_all(STOP_S)
        return 143 if 143 in codes else 130


def run_child(cmd: list[str], env: dict | None = None) -> int:
    """Run one training sweep to its end; its exit code (130/143 when stopped by SIGINT/SIGTERM)."""
    with Children() as ch:
        ch.start(cmd, env)
        try:
            return ch.wait_any().returncode
        except KeyboardInterrupt:
            return ch.interrupted()


def train_command() -> list[str]:
    """The same `dropbn` as this process: the console script beside this interpreter, else -m."""
    script = Path(sys.executable).with_name("dropbn")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "dropbn.cli"]


def child_env(extra: dict | None = None) -> dict:
    """This process's environment plus `extra`, with this dropbn package first on the import path."""
    env = dict(os.environ, **(extra or {}))
    root = str(Path(__file__).resolve().parents[2])  # the folder holding dropbn/
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
