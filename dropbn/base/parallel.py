"""How many torch threads one run gets when several runs share a machine.

With `train.threads=null` a run takes every core when it runs alone. Under a
parallel launcher each run gets its share, so that the runs together use the
machine's cores rather than N x all of them:

  * SLURM (`SLURM_CPUS_PER_TASK` set) or a submitit launcher with
    `hydra.launcher.cpus_per_task`: that many threads;
  * joblib (`hydra/launcher=joblib` / `parallel`): cores // workers, where
    workers = n_jobs (negative: cores + 1 + n_jobs, joblib's rule), capped at the
    number of runs in the sweep;
  * submitit_local without cpus_per_task (every run of the sweep starts at once):
    cores // runs in the sweep;
  * a stage of `dropbn study` training several sweeps side by side under joblib
    (dropbn/study/sweeps.py: run_packed): cores // the stage's runs at once, which the
    study exports as DROPBN_STAGE_RUNS.

The number of runs in a sweep comes from the pre-check (dropbn/config/precheck.py),
which exports it as DROPBN_SWEEP_JOBS before Hydra starts the workers.
"""
from __future__ import annotations

import os


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def joblib_workers(n_jobs) -> int:
    """joblib's worker count for n_jobs: n_jobs itself, or for a negative value cores + 1 + n_jobs."""
    n = int(n_jobs)
    return n if n > 0 else max(1, available_cpus() + 1 + n)


def own_allocations(launcher) -> bool:
    """Whether each run of a sweep under `launcher` (hydra.launcher) gets its own cluster allocation
    (the submitit SLURM launcher), so that no machine here is shared and the cluster does the queueing."""
    return "Slurm" in str((launcher or {}).get("_target_", ""))


def run_threads(launcher, env=None) -> int | None:
    """Threads for one run under `launcher` (hydra.launcher), or None to leave torch's default."""
    env = os.environ if env is None else env
    launcher = launcher or {}
    cpus = available_cpus()
    slurm = env.get("SLURM_CPUS_PER_TASK")
    if slurm and slurm.isdigit() and int(slurm) > 0:
        return min(int(slurm), cpus)
    per_task = launcher.get("cpus_per_task")
    if per_task:
        return max(1, min(int(per_task), cpus))
    workers = parallel_runs(launcher, env)
    return max(1, cpus // workers) if workers and workers > 1 else None


def parallel_runs(launcher, env=None) -> int | None:
    """How many runs of this launch train side by side on this machine (summary.json env.parallel_runs,
    so timing comparisons can tell runs that shared the machine from runs that had it alone):
    joblib's workers (capped at the sweep's runs), every run of the sweep under submitit_local, else 1
    (a single run, a sequential sweep). None under the submitit SLURM launcher: each run has its own
    allocation and what else shares its node is not known here."""
    env = os.environ if env is None else env
    launcher = launcher or {}
    target = str(launcher.get("_target_", ""))
    sweep = int(env.get("DROPBN_SWEEP_JOBS") or 0) or None
    if own_allocations(launcher):
        return None
    stage = str(env.get("DROPBN_STAGE_RUNS") or "")
    if stage.isdigit() and int(stage) > 0:  # this sweep is one of a study stage's side-by-side sweeps
        return int(stage)
    n_jobs = launcher.get("n_jobs")
    if n_jobs is not None:
        workers = joblib_workers(n_jobs)
        return min(workers, sweep) if sweep else workers
    if "LocalLauncher" in target:
        return sweep or 1
    return 1
