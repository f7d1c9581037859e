"""Scale-out through Hydra launcher plugins: joblib (local parallel), submitit_local,
and a real one-node SLURM cluster (scripts/slurm_local.sh up; .ci/run brings it up).
Each runs a tiny 2-run sweep and checks every run's summary.json, and that parallel
runs share the cores rather than each taking all of them."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from dropbn.base.parallel import available_cpus, parallel_runs, run_threads

from .conftest import TINY, needs_joblib, needs_mnist, needs_submitit, run_cli

SWEEP = [*TINY, "data.train_size=1000", "train.eval_train_size=500", "model.hidden=[32]", "train.epochs=1",
         "device=cpu", "seed=0,1"]



def slurm_reason() -> str | None:
    if not shutil.which("sinfo") or not shutil.which("sbatch"):
        return "SLURM client (sinfo/sbatch) not installed; scripts/slurm_local.sh up installs and starts one"
    r = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    if r.returncode != 0 or not any(s in r.stdout for s in ("idle", "mix", "alloc")):
        return "no SLURM cluster answering (run scripts/slurm_local.sh up)"
    return None


_SLURM = slurm_reason()
needs_slurm = pytest.mark.skipif(_SLURM is not None, reason=_SLURM or "")


def summaries(root):
    found = sorted((root / "default").glob("*/summary.json"))
    return [json.loads(p.read_text()) for p in found]


def test_run_threads_share_the_cores():
    cpus = available_cpus()
    assert run_threads(None, env={}) is None                                        # alone: torch's default
    assert run_threads({"n_jobs": 2}, env={}) == max(1, cpus // 2)
    assert run_threads({"n_jobs": -1}, env={}) == (1 if cpus > 1 else None)         # one worker per core
    assert run_threads({"n_jobs": 8}, env={"DROPBN_SWEEP_JOBS": "2"}) == max(1, cpus // 2)  # 2 runs only
    assert run_threads({"n_jobs": 4}, env={"DROPBN_SWEEP_JOBS": "1"}) is None
    assert run_threads({"cpus_per_task": 1, "_target_": "x.SlurmLauncher"}, env={}) == 1
    assert run_threads({"cpus_per_task": 99}, env={"SLURM_CPUS_PER_TASK": "1"}) == 1
    local = {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"}
    assert run_threads(local, env={"DROPBN_SWEEP_JOBS": "2"}) == max(1, cpus // 2)


def test_parallel_runs_counts_the_runs_sharing_the_machine():
    """summary.json env.parallel_runs: what a timing comparison needs to know about its runs."""
    cpus = available_cpus()
    assert parallel_runs(None, env={}) == 1                                          # a single run
    assert parallel_runs({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"},
                         env={"DROPBN_SWEEP_JOBS": "6"}) == 1                        # a sequential sweep
    assert parallel_runs({"n_jobs": 3}, env={"DROPBN_SWEEP_JOBS": "12"}) == 3
    assert parallel_runs({"n_jobs": 8}, env={"DROPBN_SWEEP_JOBS": "2"}) == 2          # only 2 runs to share
    assert parallel_runs({"n_jobs": -1}, env={}) == cpus
    local = {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"}
    assert parallel_runs(local, env={"DROPBN_SWEEP_JOBS": "5"}) == 5                 # all at once
    slurm = {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"}
    assert parallel_runs(slurm, env={"DROPBN_SWEEP_JOBS": "5"}) is None              # its own allocation


@needs_submitit
def test_slurm_preset_requests_a_gpu_only_for_cuda():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from dropbn.config.validation import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        for device, gpus in (("cuda", 1), ("cuda:1", 1), ("cpu", None), ("auto", None)):
            cfg = compose("train", [f"device={device}", "hydra/launcher=slurm"], return_hydra_config=True)
            assert OmegaConf.select(cfg, "hydra.launcher.gpus_per_node") == gpus
        cfg = compose("train", ["hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                                "hydra.launcher.timeout_min=30"], return_hydra_config=True)
        assert cfg.hydra.launcher.partition == "gpu" and cfg.hydra.launcher.timeout_min == 30
        assert cfg.hydra.launcher.cpus_per_task == 4 and cfg.hydra.launcher.max_num_timeout == 3


@needs_mnist
@needs_joblib
@pytest.mark.slow
def test_joblib_sweep_runs_in_parallel_with_a_share_of_the_cores(tmp_path):
    r = run_cli(["train", "-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", *SWEEP,
                 f"out_root={tmp_path}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    s = summaries(tmp_path)
    assert len(s) == 2 and all(x["status"] == "completed" for x in s)
    assert {x["seed"] for x in s} == {0, 1}
    assert all(x["env"]["threads"] == max(1, available_cpus() // 2) for x in s)
    assert all(x["env"]["parallel_runs"] == 2 for x in s)


@needs_mnist
@needs_submitit
@pytest.mark.slow
def test_submitit_local_sweep(tmp_path):
    r = run_cli(["train", "-m", "hydra/launcher=local", *SWEEP, f"out_root={tmp_path}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    s = summaries(tmp_path)
    assert len(s) == 2 and all(x["status"] == "completed" for x in s)
    assert all(x["env"]["threads"] == max(1, available_cpus() // 2) for x in s)
    assert all(x["env"]["parallel_runs"] == 2 for x in s)


@needs_mnist
@needs_submitit
@needs_slurm
@pytest.mark.slow
def test_slurm_sweep_on_a_real_cluster(tmp_path):
    r = run_cli(["train", "-m", "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1",
                 "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10", *SWEEP, f"out_root={tmp_path}"],
                cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    s = summaries(tmp_path)
    assert len(s) == 2 and all(x["status"] == "completed" for x in s)
    assert all(x["env"]["threads"] == 1 for x in s)               # SLURM_CPUS_PER_TASK
    assert list((tmp_path / "default" / ".submitit").iterdir())  # submitit's job folders, per SLURM job


@needs_mnist
@needs_submitit
@needs_slurm
@pytest.mark.slow
def test_slurm_study_submits_a_stages_sweeps_at_once(tmp_path):
    from .test_study import ARGS, NAME

    r = run_cli(["study", *ARGS, "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
                 "hydra.launcher.timeout_min=10", f"out_root={tmp_path}"], cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count("submitted beside the stage's other sweeps") == 4  # tune and final, 2 variants each
    final = [json.loads(p.read_text()) for p in (tmp_path / NAME / "final").glob("*/summary.json")]
    assert len(final) == 4 and all(x["status"] == "completed" and x["env"]["threads"] == 1 for x in final)
    assert (tmp_path / NAME / "report" / "report.md").exists()


@needs_mnist
@needs_joblib
@pytest.mark.slow
def test_sigterm_to_a_parallel_sweep_stops_its_workers_and_a_rerun_finishes(tmp_path):
    """SIGTERM sent to `dropbn train -m` alone (as `dropbn study` or a scheduler sends it) reaches the
    joblib workers: each stops at its next step and releases its run; none trains on, orphaned."""
    import os
    import signal
    import time

    from dropbn.base.signals import child_pids

    from .conftest import DROPBN

    sweep = [a for a in SWEEP if not a.startswith("train.epochs=")]
    args = ["train", "-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", *sweep, "train.epochs=40",
            "train.batch_size=32", f"out_root={tmp_path}"]
    log = tmp_path / "sweep.log"  # a file, not a pipe: an idle worker holding a pipe open is no hang here
    with open(log, "w") as f:
        p = subprocess.Popen([DROPBN, *args], cwd=tmp_path, stdout=f, stderr=subprocess.STDOUT)
    t0 = time.monotonic()
    while len(list(tmp_path.rglob("metrics.csv"))) < 2:  # both workers past their first epoch
        assert p.poll() is None and time.monotonic() - t0 < 180, log.read_text()[-3000:]
        time.sleep(0.1)
    workers = child_pids(p.pid)
    assert workers
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=60) != 0
    out = log.read_text()
    t1 = time.monotonic()
    while running := [w for w in workers if _alive(w)]:
        assert time.monotonic() - t1 < 60, f"still running after SIGTERM: {[_cmdline(w) for w in running]}"
        time.sleep(0.2)
    logs = [f.read_text() for f in tmp_path.rglob("train.log")]
    assert len(logs) == 2 and all("SIGTERM: stopping at the next step" in x for x in logs), out[-3000:]
    assert not list(tmp_path.rglob("summary.json"))  # both unfinished, to resume

    r = run_cli(args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("resuming") == 2
    assert all(x["status"] == "completed" for x in summaries(tmp_path)) and len(summaries(tmp_path)) == 2


@needs_mnist
@needs_joblib
def test_workers_of_a_parallel_sweep_exit_when_it_is_killed(tmp_path):
    """Issue 27: after kill -9 of `dropbn train -m hydra/launcher=parallel` (nothing to forward a signal)
    its joblib workers end within seconds instead of living on, orphaned."""
    import os
    import signal
    import time

    from dropbn.base.signals import child_pids

    from .conftest import DROPBN

    sweep = [a for a in SWEEP if not a.startswith("train.epochs=")]
    args = ["train", "-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", *sweep, "train.epochs=40",
            "train.batch_size=32", f"out_root={tmp_path}"]
    with open(tmp_path / "sweep.log", "w") as f:
        p = subprocess.Popen([DROPBN, *args], cwd=tmp_path, stdout=f, stderr=subprocess.STDOUT)
    t0 = time.monotonic()
    while len(list(tmp_path.rglob("train.log"))) < 2:  # both workers have started their run
        assert p.poll() is None and time.monotonic() - t0 < 180, (tmp_path / "sweep.log").read_text()[-3000:]
        time.sleep(0.1)
    workers = child_pids(p.pid)
    assert workers
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=10)
    t1 = time.monotonic()
    while running := [w for w in workers if _alive(w)]:
        assert time.monotonic() - t1 < 5, f"alive 5 s after their parent: {[_cmdline(w) for w in running]}"
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie (an orphan's exit status may wait for a reaper)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode()[:120]
    except OSError:
        return "?"
