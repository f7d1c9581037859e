"""Run claims (dropbn/record/lease.py): one process at a time trains a run folder.

The claim files themselves (acquire, heartbeat, release, skip at a live claim,
takeover of a dead one: a pid gone on this machine, a stale heartbeat from another
host; a race of many takers has one winner), run() on every exit path, a SIGKILLed
run taken over and resumed, and two `dropbn train -m` processes sharing one sweep:
every run trained once, results equal to a sequential run, `dropbn status` on it.
"""
from __future__ import annotations

import csv
import json
import logging
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dropbn.record import lease as claims
from dropbn.record.lease import HOST, MACHINE, Busy, acquire, current

from .conftest import DROPBN, call_cli, compose, needs_mnist

TIMING = {"epoch_seconds", "eval_seconds", "train_seconds"}
SMALL = ["data.train_size=2000", "train.eval_train_size=1000", "model.hidden=[32]", "train.progress=false",
         "train.diagnostics=false", "device=cpu", "train.threads=1"]


def write_claim(folder: Path, number: int, *, host=HOST, machine=MACHINE, pid: int, age: float = 0.0,
                timeout: float = 600.0, released=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / claims.claim_name(number)
    path.write_text(json.dumps({"host": host, "pid": pid, "machine": machine, "token": f"t{number}",
                                "started": time.time() - age, "timeout": timeout, "released": released}))
    os.utime(path, (time.time() - age, time.time() - age))
    return path


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.fixture
def live_process():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield p
    p.kill()
    p.wait()


# ---------------------------------------------------------------- the claim files
def test_acquire_heartbeat_release(tmp_path):
    with acquire(tmp_path, timeout=0.4) as c:  # heartbeat every 0.1 s
        info = current(tmp_path)
        assert (info.number, info.host, info.pid, info.released) == (1, HOST, os.getpid(), None)
        assert info.dead_because() is None
        with pytest.raises(Busy, match=rf"claimed by {HOST}:{os.getpid()} \(heartbeat 0s ago\)"):
            acquire(tmp_path, timeout=600)
        first = info.heartbeat
        time.sleep(0.5)
        assert current(tmp_path).heartbeat > first + 0.2  # refreshed while held
        assert c.lost is None
    info = current(tmp_path)
    assert info.released is not None and info.dead_because() == "released"
    with acquire(tmp_path, timeout=600) as c2:
        assert c2.number == 2
        assert sorted(p.name for p in tmp_path.iterdir()) == ["claim.2.json"]  # the old one is cleaned up
    assert claims.heartbeat_interval(600) == 30 and claims.heartbeat_interval(8) == 2


def test_a_live_process_on_this_machine_keeps_its_claim(tmp_path, live_process):
    write_claim(tmp_path, 1, pid=live_process.pid, age=5)
    with pytest.raises(Busy) as e:
        acquire(tmp_path, timeout=600)
    assert str(e.value) == f"claimed by {HOST}:{live_process.pid} (heartbeat 5s ago)"
    live_process.kill()
    live_process.wait()
    with acquire(tmp_path, timeout=600) as c:  # the owner is gone: taken over at once
        assert c.number == 2


def test_claim_of_a_dead_pid_on_this_machine_is_taken_over(tmp_path, caplog):
    pid = dead_pid()
    write_claim(tmp_path, 1, pid=pid)
    with caplog.at_level(logging.WARNING, logger="dropbn"), acquire(tmp_path, timeout=600) as c:
        assert c.number == 2 and not (tmp_path / "claim.1.json").exists()
    assert f"taking over the claim of {HOST}:{pid}" in caplog.text and "is gone" in caplog.text


def test_claim_left_by_an_earlier_process_with_our_pid_is_dead(tmp_path):
    write_claim(tmp_path, 1, pid=os.getpid())  # e.g. a container restarted: same host name and pid
    with acquire(tmp_path, timeout=600) as c:
        assert c.number == 2


def test_another_hosts_claim_is_dead_only_when_its_heartbeat_is_stale(tmp_path):
    write_claim(tmp_path, 1, host="elsewhere", machine="x", pid=1, age=100)
    with pytest.raises(Busy, match="claimed by elsewhere:1 \\(heartbeat 100s ago\\)"):
        acquire(tmp_path, timeout=600)
    write_claim(tmp_path, 1, host="elsewhere", machine="x", pid=1, age=700)
    assert current(tmp_path).dead_because(600) == "its heartbeat is 700s old (> 600s)"
    with acquire(tmp_path, timeout=600) as c:
        assert c.number == 2


def test_a_late_claimer_backs_off(tmp_path, live_process, monkeypatch):
    """A process that saw claim 1 dead long ago creates claim 2 while 3 exists: it withdraws."""
    stale = write_claim(tmp_path, 1, pid=dead_pid())
    old_view = current(tmp_path)
    stale.unlink()  # the winner of 3 cleaned up
    write_claim(tmp_path, 3, pid=live_process.pid)
    real, views = claims.current, iter([old_view])  # its first look is the old one
    monkeypatch.setattr(claims, "current", lambda folder: next(views, None) or real(folder))
    with pytest.raises(Busy, match=f":{live_process.pid} "):
        acquire(tmp_path, timeout=600)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["claim.3.json"]


def test_a_claim_taken_over_is_noticed_and_not_released_by_its_old_owner(tmp_path, live_process):
    c = acquire(tmp_path, timeout=0.4)
    write_claim(tmp_path, 2, pid=live_process.pid)  # another process judged us dead
    time.sleep(0.5)
    assert c.lost is not None and c.lost.pid == live_process.pid
    c.release()
    assert current(tmp_path).pid == live_process.pid and current(tmp_path).released is None


def _race(folder, barrier, results):
    barrier.wait()
    try:
        c = acquire(folder, timeout=600)
    except Busy:
        results.put("busy")
        return
    results.put("won")
    time.sleep(1.0)  # hold it while the others try
    c.release()


@pytest.mark.parametrize("prior", ["none", "dead", "released"])
def test_of_many_simultaneous_claimers_exactly_one_wins(tmp_path, prior):
    if prior == "dead":
        write_claim(tmp_path, 4, pid=dead_pid())
    elif prior == "released":
        write_claim(tmp_path, 4, pid=os.getpid(), released=time.time())
    ctx = multiprocessing.get_context("fork")
    n = 8
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(tmp_path, barrier, results)) for _ in range(n)]
    for p in procs:
        p.start()
    outcomes = sorted(results.get(timeout=60) for _ in range(n))
    for p in procs:
        p.join(60)
    assert outcomes == ["busy"] * (n - 1) + ["won"]
    info = current(tmp_path)
    assert info.released is not None and info.number == (5 if prior != "none" else 1)
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("claim.")] == []  # no temp files left


# ---------------------------------------------------------------- run() and claims
TINY_RUN = ("data.train_size=500", "train.eval_train_size=500", "model.hidden=[32]", "train.epochs=1",
            "train.progress=false", "train.diagnostics=false", "device=cpu")


@needs_mnist
def test_run_skips_a_folder_claimed_by_a_live_process(tmp_path, live_process, caplog):
    from dropbn.train.loop import run

    write_claim(tmp_path, 1, pid=live_process.pid)
    with caplog.at_level(logging.INFO, logger="dropbn"):
        assert run(compose(*TINY_RUN), tmp_path) is None
    assert re.search(rf"claimed by {HOST}:{live_process.pid} \(heartbeat \d+s ago\), skipping: {re.escape(str(tmp_path))}$",
                     caplog.text, re.M), caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["claim.1.json"]  # nothing trained or written


@needs_mnist
@pytest.mark.parametrize("end", ["completed", "interrupted", "failed"])
def test_run_releases_its_claim_on_every_exit_path(tmp_path, monkeypatch, end):
    from dropbn.train import loop as T
    from dropbn.base.errors import Interrupted

    if end == "interrupted":
        monkeypatch.setattr("dropbn.train.optimize.stopping", lambda: True)  # as if SIGTERM arrived at once
    elif end == "failed":
        monkeypatch.setattr(T, "train_epoch", lambda *a, **k: 1 / 0)
    if end == "completed":
        assert T.run(compose(*TINY_RUN), tmp_path)["status"] == "completed"
    else:
        with pytest.raises(Interrupted if end == "interrupted" else ZeroDivisionError):
            T.run(compose(*TINY_RUN), tmp_path)
    info = current(tmp_path)
    assert info.pid == os.getpid() and info.released is not None


@needs_mnist
def test_run_finished_by_another_process_meanwhile_is_not_trained_again(tmp_path, monkeypatch):
    """The completion check runs again once the claim is held."""
    import shutil

    from dropbn.train import loop as T

    other = tmp_path / "other"  # the same run, finished by "another process" in its own folder
    T.run(compose(*TINY_RUN), other)
    done = json.loads((other / "summary.json").read_text())
    here = tmp_path / "here"

    def acquire_after_another_finished(folder, timeout):
        for name in ("metrics.csv", "summary.json"):  # the other process's last writes
            shutil.copy(other / name, Path(folder) / name)
        return acquire(folder, timeout)

    monkeypatch.setattr(T.lease, "acquire", acquire_after_another_finished)
    assert T.run(compose(*TINY_RUN), here) == done
    tmp_path = here
    assert not (tmp_path / "model.txt").exists() and current(tmp_path).released is not None


@needs_mnist
@pytest.mark.slow
def test_sigkilled_run_is_taken_over_and_resumed(tmp_path):
    args = ["train", *SMALL, "train.epochs=3", "train.batch_size=32", f"out_root={tmp_path}"]
    run_dir = tmp_path / "default" / ("data.train_size=2000,model.hidden=[32],train.batch_size=32,"
                                      "train.epochs=3,train.eval_train_size=1000")
    p = subprocess.Popen([DROPBN, *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    t0 = time.monotonic()
    while not (run_dir / "checkpoint.pt").exists():
        assert p.poll() is None and time.monotonic() - t0 < 180, "the run ended or never checkpointed"
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.communicate()
    killed = current(run_dir)
    assert killed.pid == p.pid and killed.released is None  # the claim outlived its process

    r = call_cli(args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"taking over the claim of {HOST}:{p.pid}" in r.stdout and "resuming" in r.stdout
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    assert current(run_dir).number == 2 and current(run_dir).released is not None


# ---------------------------------------------------------------- two processes, one sweep
SWEEP = ["-m", *SMALL, "train.epochs=2", "seed=0,1,2,3"]


def metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(f)]


def run_dirs(root: Path) -> dict[str, Path]:
    return {d.name: d for d in (root / "default").iterdir() if d.is_dir() and not d.name.startswith(".")}


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """The 4-run sweep trained by two processes started together, and sequentially by one."""
    root = tmp_path_factory.mktemp("shared")
    before = call_cli(["status", *SWEEP, f"out_root={root}"], cwd=root)
    procs = [subprocess.Popen([DROPBN, "train", *SWEEP, f"out_root={root}"], cwd=root, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    seq = tmp_path_factory.mktemp("sequential")
    r = call_cli(["train", *SWEEP, f"out_root={seq}"], cwd=seq)
    assert r.returncode == 0, r.stderr[-2000:]
    return {"root": root, "seq": seq, "before": before, "codes": [p.returncode for p in procs], "outs": outs}


@needs_mnist
@pytest.mark.slow
def test_two_processes_share_a_sweep_and_train_every_run_once(shared):
    assert shared["codes"] == [0, 0], [err[-2000:] for _, err in shared["outs"]]
    dirs = run_dirs(shared["root"])
    assert len(dirs) == 4
    started = sum(out.count("threads: 1") for out, _ in shared["outs"])
    assert started == 4  # four trainings in all, between the two processes
    for d in dirs.values():
        log = (d / "train.log").read_text()
        assert log.count("threads: 1") == 1 and "resuming" not in log, d.name
        assert json.loads((d / "summary.json").read_text())["status"] == "completed"
        assert current(d).released is not None


@needs_mnist
@pytest.mark.slow
def test_shared_sweep_results_equal_a_sequential_run(shared):
    dirs, seq = run_dirs(shared["root"]), run_dirs(shared["seq"])
    assert dirs.keys() == seq.keys()
    for name in dirs:
        assert metrics(dirs[name]) == metrics(seq[name]), name
        a = json.loads((dirs[name] / "summary.json").read_text())
        b = json.loads((seq[name] / "summary.json").read_text())
        for k in ("final_test_acc", "final_train_loss", "best_test_acc", "epochs_completed", "params"):
            assert a[k] == b[k], (name, k)


@needs_mnist
@pytest.mark.slow
def test_status_of_the_shared_sweep(shared, tmp_path):
    root = shared["root"]
    before = shared["before"]  # composed from the same arguments before anything ran
    assert before.returncode == 1 and before.stdout.count("missing  0/2") == 4, before.stdout + before.stderr
    assert "4 runs: 4 missing; 8 epochs left" in before.stdout

    r = call_cli(["status", str(root / "default")], cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0].split() == ["state", "epochs", "run", "detail"]
    assert [ln.split()[:2] for ln in lines[1:5]] == [["completed", "2/2"]] * 4
    assert all(f"seed={s}" in lines[1 + s] for s in range(4))
    assert lines[-1] == "4 runs: 4 completed; nothing left to train"
    same = call_cli(["status", *SWEEP, f"out_root={root}"], cwd=root)
    assert same.returncode == 0 and same.stdout.count("completed  2/2") == 4

    half = tmp_path / "half"
    shutil.copytree(root / "default", half)
    dirs = sorted(p for p in half.iterdir() if p.is_dir() and not p.name.startswith("."))
    (dirs[0] / "summary.json").unlink()  # killed after its last epoch, before its summary
    (dirs[1] / "summary.json").unlink()
    rows = (dirs[1] / "metrics.csv").read_text().splitlines()
    (dirs[1] / "metrics.csv").write_text("\n".join(rows[:2]) + "\n")  # killed after epoch 1
    r = call_cli(["status", str(half)], cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    states = {ln.split()[2]: ln.split()[:2] for ln in r.stdout.strip().splitlines()[1:-1]}
    assert states[dirs[0].name] == ["partial", "2/2"] and states[dirs[1].name] == ["partial", "1/2"]
    assert r.stdout.strip().splitlines()[-1].startswith("4 runs: 2 completed, 2 partial; 1 epoch left x ")
