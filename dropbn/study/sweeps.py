"""Running a study's planned sweeps as child `dropbn train -m` processes; the study's progress lines.

A stage (tune, final, one Optuna trial) ends only when every one of its runs has ended, so the
selection and the report never read a stage that is still being trained. Several `dropbn study`
processes (or `dropbn train -m` processes) may share a study folder: their training sweeps split
the runs through run claims (dropbn/claims.py), and at the end of a stage each process waits for
the runs that others hold, and trains any run whose holder has gone (its claim is dead)."""
from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tqdm import tqdm

from .. import claims
from ..report import selection as S
from ..errors import DropbnError, Interrupted

DONE = ("completed", "diverged")                 # a run that a re-run would not change
TERMINAL = ("completed", "diverged", "failed")   # a run that ended (a failed one is retried next time)
POLL_S = 5.0   # how often a stage waiting for other processes' runs looks at their folders


def log(msg: str) -> None:
    print(f"study: {msg}", flush=True)


class StageError(DropbnError):
    """A training sweep stopped with runs unfinished (exit code: the child's)."""


def run_status(study_dir: Path, stage: str, folder: str) -> str:
    return S.read_val_run(study_dir / stage, folder, 0).status


def run_sweep(study_dir: Path, sw) -> None:
    """Train the sweep's missing runs (nothing when every run is done); sw is a plan.Sweep."""
    todo = [j for j in sw.jobs if run_status(study_dir, sw.stage, j[2]) not in DONE]
    what = f"{sw.stage} {sw.variant.name}"
    if not todo:
        log(f"{what}: all {len(sw.jobs)} run(s) done")
        return
    log(f"{what}: {len(todo)} of {len(sw.jobs)} run(s) to train")
    cmd = [*train_command(), "train", "-m", *sw.args]
    print(f"$ dropbn train -m {shlex.join(sw.args)}", flush=True)
    rc = run_child(cmd)
    if rc in (130, 143):
        raise Interrupted(f"study interrupted during {what}; run the same command again to continue",
                          rc - 128)
    if rc != 0:
        ended = [j for j in sw.jobs if run_status(study_dir, sw.stage, j[2]) in TERMINAL]
        if len(ended) < len(sw.jobs):
            err = StageError(f"study stopped: {what}: dropbn train exited with code {rc} (its message is "
                             f"above); {len(sw.jobs) - len(ended)} run(s) unfinished. Run the same command "
                             f"again to continue")
            err.exit_code = rc if 0 < rc < 126 else 1
            raise err
        log(f"{what}: dropbn train exited with code {rc}, every run ended; failed runs lose the selection")


def run_stage(study_dir: Path, sweeps: list, poll_s: float = POLL_S) -> None:
    """Train the sweeps' missing runs, then wait until every run of them has ended (module docstring):
    a run held by a live claim of another process is waited for; an unfinished run that nobody holds
    is trained here. Raises StageError when a run stays unfinished with nobody training it."""
    for sw in sweeps:
        run_sweep(study_dir, sw)
    stage = sweeps[0].stage if sweeps else ""
    total = sum(len(sw.jobs) for sw in sweeps)
    retried: dict[int, set] = {}  # sweep index -> the unheld unfinished runs it was re-run for
    bar, owners_seen = None, None
    try:
        while True:
            held, unheld = [], {}
            for i, sw in enumerate(sweeps):
                for job in sw.jobs:
                    if run_status(study_dir, sw.stage, job[2]) in TERMINAL:
                        continue
                    claim = claims.current(study_dir / sw.stage / job[2])
                    if claim is not None and claim.dead_because() is None:
                        held.append(claim)
                    else:
                        unheld.setdefault(i, set()).add(job[2])
            if not held and not unheld:
                return
            retried = {i: runs for i, runs in retried.items() if i in unheld}  # held again or ended since
            for i, runs in unheld.items():
                if retried.get(i) == runs:  # trained here a moment ago and still unfinished, nobody on it
                    err = StageError(f"study stopped: {stage} {sweeps[i].variant.name}: {len(runs)} run(s) stay "
                                     f"unfinished with no process training them (e.g. {sorted(runs)[0]}); "
                                     f"run the same command again to continue")
                    err.exit_code = 1
                    raise err
                retried[i] = runs
                log(f"{stage} {sweeps[i].variant.name}: {len(runs)} unfinished run(s) that no live process "
                    f"holds: training them here")
                run_sweep(study_dir, sweeps[i])
            if unheld:
                continue
            owners = sorted({c.owner for c in held})
            if owners != owners_seen:
                log(f"{stage}: waiting for {len(held)} run(s) trained by other processes ({', '.join(owners)})")
                owners_seen = owners
            if bar is None:
                bar = tqdm(total=total, desc=f"{stage}: runs ended", unit="run", leave=False, disable=None)
            bar.n = total - len(held)
            bar.refresh()
            time.sleep(poll_s)
    except KeyboardInterrupt:
        raise Interrupted(f"study interrupted while waiting for the {stage} runs of other processes; run the "
                          f"same command again to continue", signal.SIGINT) from None
    finally:
        if bar is not None:
            bar.close()


def train_command() -> list[str]:
    """The same `dropbn` as this process: the console script beside this interpreter, else -m."""
    script = Path(sys.executable).with_name("dropbn")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "dropbn.cli"]


def child_env() -> dict:
    """This process's environment, with this dropbn package first on the import path."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # the folder holding dropbn/
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_child(cmd: list[str]) -> int:
    """Run a training sweep; SIGINT reaches it with the terminal's process group, SIGTERM is forwarded.
    Returns its exit code (130/143 when it was stopped by SIGINT/SIGTERM)."""
    proc = subprocess.Popen(cmd, env=child_env())
    old = signal.getsignal(signal.SIGTERM)

    def forward(signum, frame):
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)

    in_main = _main_thread()
    if in_main:
        signal.signal(signal.SIGTERM, forward)
    try:
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:
                # Ctrl-C reaches the child too (same process group): it stops at its next step.
                # A SIGINT sent to this process alone is passed on if the child is still running.
                try:
                    rc = proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(signal.SIGINT)
                    try:
                        rc = proc.wait(timeout=300)
                    except (KeyboardInterrupt, subprocess.TimeoutExpired):
                        proc.kill()
                        proc.wait()
                        rc = 130
                except KeyboardInterrupt:
                    proc.kill()
                    proc.wait()
                    rc = 130
                return rc if rc in (130, 143) else 130
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, old)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
