"""Resume and clean stops: real `dropbn train` processes killed or stopped, then the same command
again (called in this process: the stop is the process's part, the resume the command's).

A run killed with SIGKILL mid-epoch, or stopped with SIGINT/SIGTERM, and then
started again with the same command ends with the same metrics (timing columns
aside) and bit-identical final weights as a run never interrupted (CPU, same
seed). A re-run multirun skips finished runs, resumes the partial one and runs
the missing one. A diverging run in a multirun is recorded as diverged and the
sweep goes on.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dropbn.train.checkpoint import load_checkpoint
from dropbn.record.identity import same_config
from dropbn.record.run_dir import RunDir
from dropbn.base.signals import GracefulStop, stopping
from dropbn.record.predictions import read_predictions

from .conftest import DROPBN, TINY, call_cli, needs_mnist

TIMING = {"epoch_seconds", "eval_seconds", "train_seconds"}
# 63 steps per epoch: SIGKILL lands inside an epoch, not between two
ARGS = [*TINY, "train.epochs=3", "train.batch_size=32", "reg=both", "device=cpu", "train.threads=1"]
DIRNAME = ("data.train_size=2000,model.hidden=[64],reg=both,train.batch_size=32,train.epochs=3,"
           "train.eval_train_size=1000")


def metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(f)]


def n_rows(run_dir: Path) -> int:
    try:
        return max(0, len((run_dir / "metrics.csv").read_text().strip().splitlines()) - 1)
    except OSError:
        return 0


def start(args, cwd) -> subprocess.Popen:
    return subprocess.Popen([DROPBN, "train", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ))


def wait_for(cond, proc, timeout=120):
    t0 = time.monotonic()
    while not cond():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"process ended (rc {proc.returncode}) before the condition held:\n{err[-2000:]}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            pytest.fail("timed out waiting")
        time.sleep(0.02)


def assert_identical(run_dir: Path, ref_dir: Path):
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    assert metrics(run_dir) == metrics(ref_dir)
    a = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    b = torch.load(ref_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    pa, pb = read_predictions(run_dir / "predictions.npz"), read_predictions(ref_dir / "predictions.npz")
    assert pa.arrays.keys() == pb.arrays.keys() and "test_final" in pa.arrays
    for k in pa.arrays:
        assert (pa.arrays[k] == pb.arrays[k]).all(), k
    for k in ("final_test_acc", "final_train_loss", "best_test_acc", "epochs_completed"):
        sa = json.loads((run_dir / "summary.json").read_text())
        sb = json.loads((ref_dir / "summary.json").read_text())
        assert sa[k] == sb[k], k


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same tiny run, never interrupted."""
    root = tmp_path_factory.mktemp("reference")
    r = call_cli(["train", *ARGS, f"out_root={root}"], cwd=root)
    assert r.returncode == 0, r.stderr[-2000:]
    return root / "default" / DIRNAME


@needs_mnist
@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_identical(tmp_path, reference):
    run_dir = tmp_path / "default" / DIRNAME
    p = start([*ARGS, f"out_root={tmp_path}"], tmp_path)
    wait_for(lambda: (run_dir / "checkpoint.pt").exists() and n_rows(run_dir) >= 1, p)
    p.send_signal(signal.SIGKILL)
    p.communicate()
    assert p.returncode == -signal.SIGKILL
    assert not (run_dir / "summary.json").exists()
    killed_at = torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"]
    assert killed_at < 3  # killed before the end (almost always during epoch 2)

    r = call_cli(["train", *ARGS, f"out_root={tmp_path}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"resuming {run_dir} at epoch {killed_at + 1}/3" in r.stdout
    assert_identical(run_dir, reference)


@needs_mnist
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.slow
def test_sigint_sigterm_stop_cleanly_and_resume_identically(tmp_path, reference, sig, code):
    run_dir = tmp_path / "default" / DIRNAME
    p = start([*ARGS, f"out_root={tmp_path}"], tmp_path)
    wait_for(lambda: n_rows(run_dir) >= 1, p)
    p.send_signal(sig)
    out, err = p.communicate(timeout=120)
    assert p.returncode == code, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"interrupted by {signal.Signals(sig).name}" in lines[0]
    assert not (run_dir / "summary.json").exists()  # not marked completed
    ckpt = load_checkpoint(RunDir(run_dir))          # the last end-of-epoch checkpoint is valid
    assert 1 <= ckpt["epoch"] < 3 and len(ckpt["metrics"]) == ckpt["epoch"] == n_rows(run_dir)

    r = call_cli(["train", *ARGS, f"out_root={tmp_path}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming" in r.stdout
    assert_identical(run_dir, reference)


@needs_mnist
@pytest.mark.slow
def test_rerunning_a_killed_multirun_skips_resumes_and_runs_the_rest(tmp_path):
    args = ["-m", *TINY, "train.epochs=2", "train.batch_size=32", "device=cpu", "train.threads=1",
            "seed=0,1,2", f"out_root={tmp_path}"]
    dirs = [tmp_path / "default" / f"data.train_size=2000,model.hidden=[64],seed={s},train.batch_size=32,"
                                   f"train.epochs=2,train.eval_train_size=1000" for s in range(3)]
    p = start(args, tmp_path)
    wait_for(lambda: (dirs[0] / "summary.json").exists() and n_rows(dirs[1]) >= 1, p)
    p.send_signal(signal.SIGKILL)
    p.communicate()
    done = [d for d in dirs if (d / "summary.json").exists()]
    assert done == [dirs[0]] and not (dirs[2] / "checkpoint.pt").exists()
    first_summary = (dirs[0] / "summary.json").stat().st_mtime_ns

    r = call_cli(["train", *args], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("already completed, skipping") == 1
    assert f"resuming {dirs[1]} at epoch 2/2" in r.stdout
    assert r.stdout.count("resuming") == 1
    for d in dirs:
        assert json.loads((d / "summary.json").read_text())["status"] == "completed"
    assert (dirs[0] / "summary.json").stat().st_mtime_ns == first_summary  # untouched


@needs_mnist
@pytest.mark.slow
def test_divergence_in_a_multirun_is_recorded_and_the_sweep_goes_on(tmp_path):
    r = call_cli(["train", "-m", *TINY, "data.train_size=1000", "train.eval_train_size=500", "train.epochs=2",
                 "reg=none", "device=cpu", "optim.lr=1e6,0.01", f"out_root={tmp_path}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    runs = {d.name: json.loads((d / "summary.json").read_text()) for d in (tmp_path / "default").iterdir()
            if d.is_dir() and not d.name.startswith(".")}
    assert len(runs) == 2
    (bad,) = [s for n, s in runs.items() if "optim.lr=1000000.0" in n or "optim.lr=1e6" in n]
    (good,) = [s for n, s in runs.items() if "optim.lr=0.01" in n]
    assert bad["status"] == "diverged"
    assert bad["diverged_at"]["epoch"] == 1 and bad["diverged_at"]["step"] >= 0
    assert bad["diverged_at"]["reason"] in ("non-finite loss", "non-finite weights")
    assert good["status"] == "completed" and good["epochs_completed"] == 2


def test_same_config_ignores_where_and_how_but_not_what():
    base = {"seed": 0, "device": "cpu", "out_root": "a", "optim": {"lr": 0.1},
            "train": {"epochs": 3, "progress": True, "threads": None, "force": False, "diagnostics": True},
            "data": {"root": "/x", "cache_dir": None, "download": True, "train_size": 100}}
    other = json.loads(json.dumps(base))
    other.update(device="cuda", out_root="b")
    other["train"].update(progress=False, threads=2, force=True, diagnostics=False)
    other["data"].update(root="/y", cache_dir="/c", download=False)
    assert same_config(base, other)
    for key, v in (("optim", {"lr": 0.2}), ("seed", 1)):
        changed = json.loads(json.dumps(base))
        changed[key] = v
        assert not same_config(base, changed)
    changed = json.loads(json.dumps(base))
    changed["data"]["train_size"] = 200
    assert not same_config(base, changed)


def test_graceful_stop_sets_a_flag_and_restores_handlers():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with GracefulStop():
        assert not stopping()
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100):
            if stopping():
                break
            time.sleep(0.01)
        assert stopping()
    assert not stopping()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_graceful_stop_leaves_a_launchers_own_handler_alone():
    def mine(signum, frame):
        pass

    old = signal.signal(signal.SIGTERM, mine)  # e.g. submitit's
    try:
        with GracefulStop():
            assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, old)


@needs_mnist
def test_forced_rerun_drops_the_old_summary_first(tmp_path, monkeypatch):
    """A train.force=true re-run that gets interrupted must not leave 'completed' behind."""
    from dropbn.train import loop as T
    from .conftest import compose

    cfg = compose(*TINY, "data.train_size=500", "train.eval_train_size=500", "train.epochs=1")
    assert T.run(cfg, tmp_path)["status"] == "completed"
    monkeypatch.setattr("dropbn.train.optimize.stopping", lambda: True)  # as if SIGTERM arrived at once
    from dropbn.base.errors import Interrupted
    with pytest.raises(Interrupted):
        T.run(compose(*TINY, "data.train_size=500", "train.eval_train_size=500", "train.epochs=1",
                      "train.force=true"), tmp_path)
    assert not RunDir(tmp_path).is_completed()
