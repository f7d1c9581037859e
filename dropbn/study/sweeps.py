"""Running a study's planned sweeps as child `dropbn train -m` processes; the study's progress lines.

A stage (tune, final, one Optuna trial) ends only when every one of its runs has ended, so the
selection and the report never read a stage that is still being trained. Several `dropbn study`
processes (or `dropbn train -m` processes) may share a study folder: their training sweeps split
the runs through run leases (claim files, dropbn/record/lease.py), and at the end of a stage each process waits for
the runs that others hold, and trains any run whose holder has gone (its claim is dead)."""
from __future__ import annotations

import math
import shlex
import signal
import time
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from tqdm import tqdm

from ..record import lease
from ..record.states import FINISHED, TERMINAL
from . import selection as S
from ..base.errors import DropbnError, Interrupted
from .children import Children, run_child, train_command
from .overrides import merge_overrides

POLL_S = 5.0   # how often a stage waiting for other processes' runs looks at their folders


def log(msg: str) -> None:
    print(f"study: {msg}", flush=True)


class StageError(DropbnError):
    """A training sweep stopped with runs unfinished (exit code: the child's)."""


def run_status(study_dir: Path, stage: str, folder: str) -> str:
    return S.read_val_run(study_dir / stage, folder, 0).status


def pending(study_dir: Path, sw) -> list:
    """The sweep's jobs that a run of it would train (not completed or diverged)."""
    return [j for j in sw.jobs if run_status(study_dir, sw.stage, j[2]) not in FINISHED]


def run_sweep(study_dir: Path, sw) -> None:
    """Train the sweep's missing runs (nothing when every run is done); sw is a plan.Sweep."""
    todo = pending(study_dir, sw)
    if not todo:
        log(f"{sw.stage} {sw.variant.name}: all {len(sw.jobs)} run(s) done")
        return
    log(f"{sw.stage} {sw.variant.name}: {len(todo)} of {len(sw.jobs)} run(s) to train")
    print(f"$ dropbn train -m {shlex.join(sw.args)}", flush=True)
    ended(study_dir, sw, run_child([*train_command(), "train", "-m", *sw.args]))


def run_packed(study_dir: Path, sweeps: list, workers: int | float, poll_s: float = POLL_S) -> None:
    """Train the sweeps side by side under a joblib launcher of `workers` workers, never more than
    `workers` runs at once: in plan order, each sweep starts as soon as a worker is free, with
    hydra.launcher.n_jobs = min(its missing runs, the free workers). A sweep's workers are free again
    when it ends, and as it ends: once fewer of its runs are unfinished than it has workers, the idle
    ones go to the next sweep (checked every `poll_s` s). DROPBN_STAGE_RUNS tells every run how many
    runs share the machine (its torch threads and env.parallel_runs, dropbn/base/parallel.py).
    workers = math.inf (a SLURM launcher: each run has its own allocation) starts every sweep at once
    with its launcher as configured, and the cluster queues the runs. On an error no further sweep
    starts; the running ones end."""
    bounded = math.isfinite(workers)
    queue = []
    for sw in sweeps:
        n = len(pending(study_dir, sw))
        if n:
            queue.append((sw, n))
        else:
            log(f"{sw.stage} {sw.variant.name}: all {len(sw.jobs)} run(s) done")
    if len(queue) <= 1 or workers <= 1:
        for sw, _ in queue:
            run_sweep(study_dir, sw)
        return
    env = {"DROPBN_STAGE_RUNS": str(min(workers, sum(n for _, n in queue)))} if bounded else {}
    parser = OverridesParser.create()
    free, running, errors = workers, {}, []
    with Children() as ch:
        try:
            while queue or running:
                while queue and free > 0 and not errors:
                    sw, n = queue.pop(0)
                    share = min(n, free)
                    args = merge_overrides(sw.args, [f"hydra.launcher.n_jobs={share}"], parser) if bounded \
                        else sw.args
                    how = f"{share} at a time," if bounded else "submitted"
                    log(f"{sw.stage} {sw.variant.name}: {n} of {len(sw.jobs)} run(s) to train, {how} beside the "
                        f"stage's other sweeps")
                    print(f"$ dropbn train -m {shlex.join(args)}", flush=True)
                    running[ch.start([*train_command(), "train", "-m", *args], env)] = (sw, share)
                    free -= share
                if not running:
                    break
                p = ch.wait_any(timeout=poll_s if queue and not errors else None)
                if p is None:  # lend the workers of sweeps with fewer runs left than workers
                    for child, (sw, share) in running.items():
                        left = len(pending(study_dir, sw))  # started or not: a bound on its busy workers
                        if left < share:
                            free += share - left
                            running[child] = (sw, left)
                    continue
                sw, share = running.pop(p)
                free += share
                try:
                    ended(study_dir, sw, p.returncode)
                except DropbnError as e:
                    errors.append(e)
        except KeyboardInterrupt:
            ch.interrupted()
            raise Interrupted(f"study interrupted during {sweeps[0].stage}; run the same command again to continue",
                              signal.SIGINT) from None
    if errors:
        raise next((e for e in errors if isinstance(e, Interrupted)), errors[0])


def ended(study_dir: Path, sw, rc: int) -> None:
    """Judge a finished `dropbn train -m` of the sweep by its exit code `rc`: stopped by a signal, or failed
    with runs left unfinished, raises; failed runs that all ended only lose the selection."""
    what = f"{sw.stage} {sw.variant.name}"
    if rc in (130, 143):
        raise Interrupted(f"study interrupted during {what}; run the same command again to continue",
                          rc - 128)
    if rc != 0:
        unfinished = [j for j in sw.jobs if run_status(study_dir, sw.stage, j[2]) not in TERMINAL]
        if unfinished:
            err = StageError(f"study stopped: {what}: dropbn train exited with code {rc} (its message is "
                             f"above); {len(unfinished)} run(s) unfinished. Run the same command "
                             f"again to continue")
            err.exit_code = rc if 0 < rc < 126 else 1
            raise err
        log(f"{what}: dropbn train exited with code {rc}, every run ended; failed runs lose the selection")


def run_stage(study_dir: Path, sweeps: list, poll_s: float = POLL_S, workers: int | None = None) -> None:
    """Train the sweeps' missing runs, then wait until every run of them has ended (module docstring):
    a run held by a live claim of another process is waited for; an unfinished run that nobody holds
    is trained here. Raises StageError when a run stays unfinished with nobody training it.
    `workers`: a joblib launcher's worker count, or math.inf under SLURM, to train the sweeps side by
    side (run_packed); None runs them one after another with the launcher as configured."""
    if workers:
        run_packed(study_dir, sweeps, workers, poll_s)
    else:
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
                    claim = lease.current(study_dir / sw.stage / job[2])
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
