"""`dropbn status` on hand-made run folders (every state, the ETA, exit codes), on a sweep
composed from `dropbn train -m` arguments before anything ran, without importing torch.
The same command on a real shared sweep: tests/test_claims.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from dropbn.commands import status_cmd as status
from dropbn.record.lease import HOST, current
from dropbn.report.collect import collect

from .conftest import ROOT, call_cli
from .test_claims import dead_pid, live_process, write_claim  # noqa: F401 (live_process: a fixture)
from .test_report import make_run


def table(out: str) -> dict[str, tuple[str, str, str]]:
    """run -> (state, epochs, detail) from the printed table (its header and summary line aside)."""
    lines = out.strip().splitlines()
    assert lines[0].split() == ["state", "epochs", "run", "detail"]
    rows = {}
    for line in lines[1:-1]:
        state, epochs, run, *detail = line.split(maxsplit=3)
        rows[run] = (state, epochs, " ".join(detail))
    return rows


@pytest.fixture
def sweep(tmp_path, live_process):  # noqa: F811
    """Every state: measured epochs take 1.1 s (1.0 training + 0.1 evaluation), 3 epochs per run."""
    root = tmp_path / "study"
    make_run(root / "seed=0", seed=0, test_acc=(0.9, 0.95, 0.97))
    make_run(root / "seed=1", seed=1, test_acc=(0.9,), status="diverged")
    make_run(root / "seed=2", seed=2, test_acc=(0.9,), summary=False)                # partial 1/3
    failed = make_run(root / "seed=3", seed=3, test_acc=(0.9,), status="failed")
    s = json.loads((failed / "summary.json").read_text())
    s["error"] = "RuntimeError: CUDA out of memory\nTried to allocate 2 GiB"
    (failed / "summary.json").write_text(json.dumps(s))
    running = make_run(root / "seed=4", seed=4, test_acc=(0.9, 0.93), summary=False)
    write_claim(running, 1, pid=live_process.pid, age=3)
    stale = make_run(root / "seed=5", seed=5, test_acc=(0.9,), summary=False)
    write_claim(stale, 1, pid=dead_pid())
    (root / "seed=6" / ".hydra").mkdir(parents=True)                                    # started, no epoch yet
    (root / "seed=6" / ".hydra" / "config.yaml").write_text("train:\n  epochs: 3\n")
    return root


def test_every_state_with_its_detail_and_eta(sweep, live_process, capsys):  # noqa: F811
    assert status.main([str(sweep)]) == 1
    out = capsys.readouterr().out
    rows = table(out)
    assert rows == {
        "seed=0": ("completed", "3/3", "test acc 0.9700"),
        "seed=1": ("diverged", "1/3", "at epoch 2, step 7 (non-finite loss)"),
        "seed=2": ("partial", "1/3", ""),
        "seed=3": ("failed", "1/3", "RuntimeError: CUDA out of memory"),
        "seed=4": ("running", "2/3", f"claimed by {HOST}:{live_process.pid} (heartbeat 3s ago)"),
        "seed=5": ("partial", "1/3", rows["seed=5"][2]),
        "seed=6": ("partial", "0/3", ""),
    }
    assert rows["seed=5"][2].startswith("claim of ") and rows["seed=5"][2].endswith("is gone")
    # left: 2 + 2 (failed) + 1 + 2 + 3 = 10 epochs; measured 9 epochs of 1.1 s; one live worker
    assert out.strip().splitlines()[-1] == ("7 runs: 1 completed, 1 diverged, 1 running, 3 partial, 1 failed; "
                                            "10 epochs left x 1.1 s/epoch / 1 live worker: ETA 11s")


def test_exit_0_when_every_run_finished(tmp_path, capsys):
    make_run(tmp_path / "a", seed=0)
    make_run(tmp_path / "b", seed=1, test_acc=(0.9,), status="diverged")  # a study may diverge by design
    assert status.main([str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip().endswith("2 runs: 1 completed, 1 diverged; nothing left to train")
    assert status.main([str(tmp_path / "a")]) == 0  # one run folder


def test_eta_divides_by_the_live_workers(tmp_path):
    def st(state, done, owner=None):
        return status.RunState(tmp_path, state, done=done, epochs=10, owner=owner, seconds=[2.0] * done)

    states = [st("completed", 10), st("running", 4, "a:1"), st("running", 2, "b:2"), st("missing", 0)]
    assert status.eta(states) == "24 epochs left x 2.0 s/epoch / 2 live workers: ETA 24s"
    assert status.eta([st("missing", 0)]) == "10 epochs left; ETA unknown until an epoch has been measured"
    assert status.eta([st("completed", 10)] + [st("missing", 0)] * 200) == \
        "2000 epochs left x 2.0 s/epoch / 1 worker (none running now): ETA 1h06m"


def test_status_of_a_sweep_composed_from_train_arguments(tmp_path, capsys):
    args = ["-m", "seed=0,1", "train.epochs=2", "model.hidden=[32]", f"out_root={tmp_path}", "name=s"]
    assert status.main(args) == 1
    rows = table(capsys.readouterr().out)
    names = ["model.hidden=[32],seed=0,train.epochs=2", "model.hidden=[32],seed=1,train.epochs=2"]
    assert rows == {n: ("missing", "0/2", "") for n in names}
    make_run(tmp_path / "s" / names[0], seed=0, test_acc=(0.9, 0.95), epochs=2)
    assert status.main(args) == 1
    rows = table(capsys.readouterr().out)
    assert rows[names[0]] == ("completed", "2/2", "test acc 0.9500") and rows[names[1]][0] == "missing"
    # more seeds planned beside the finished run: their ETA reads its measured epochs (1.1 s each), and says so
    more = ["-m", "seed=2,3", *args[2:]]
    assert status.main(more) == 1
    out = capsys.readouterr().out.strip().splitlines()[-1]
    where = os.path.relpath(tmp_path / "s")
    assert out == f"2 runs: 2 missing; 4 epochs left x 1.1 s/epoch (measured on the other runs under {where}) " \
                  "/ 1 worker (none running now): ETA 4s"


def test_status_is_fast_and_never_imports_torch(sweep):
    code = ("import sys; from dropbn.commands.status_cmd import main; rc = main([sys.argv[1]]); "
            "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)")
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", code, str(sweep)], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 1, r.stderr
    assert "7 runs:" in r.stdout and time.monotonic() - t0 < 10


def test_bad_folder_is_one_line_exit_2(tmp_path):
    r = call_cli(["status", str(tmp_path / "nope")], cwd=tmp_path)
    assert (r.returncode, r.stderr.strip()) == (2, f"dropbn: error: status: {tmp_path / 'nope'}: no such folder")
    (tmp_path / "empty").mkdir()
    r = call_cli(["status", str(tmp_path / "empty")], cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no run folders" in r.stderr


def test_report_reads_runs_whatever_their_claims(sweep):
    """Claim files are no run files: the report reads the runs (a held one as unfinished)."""
    assert current(sweep / "seed=4").released is None
    coll = collect([sweep], progress=False, log=lambda *a: None)
    assert len(coll.runs) == 7 and not coll.skipped
    assert not any("claim" in str(c) for c in coll.runs.columns)
