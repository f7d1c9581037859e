"""Run integrity (issue 15): a run folder is reused only by the run it holds (its identity: the
config less the where/how keys, with the data's content fingerprint), a finished run is trusted
only while its files agree, folder names always fit, and the paths that used to crash are one
line with exit code 2. Bad config values are in tests/test_validation.py's table."""
from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import torch

from dropbn.train import data as D
from dropbn.record import identity
from dropbn.train import loop as T
from dropbn.train.checkpoint import load_checkpoint, save_checkpoint
from dropbn.base.errors import DataError, DropbnError
from dropbn.record.identity import IdentityError
from dropbn.record.layout import (CHECKPOINT, FOLDER_NAME, HYDRA_CONFIG, METRICS, SUMMARY, atomic_write_text,
                                  finished_problem, remove_stale_tmp)
from dropbn.record.run_dir import RunDir

from .conftest import DROPBN, call_cli, compose, needs_mnist
from .test_data import dcfg, fake_mnist, make_imagefolder
from .test_resume import metrics

SMALL = ("data.train_size=500", "train.eval_train_size=500", "model.hidden=[32]", "train.progress=false",
         "train.diagnostics=false", "device=cpu", "train.threads=1")
IMAGES = ("data=imagefolder", "model.hidden=[16]", "train.batch_size=4", "train.eval_train_size=100",
          "train.progress=false", "train.diagnostics=false", "device=cpu", "train.threads=1", "train.epochs=1")


def cli(args, cwd, unprivileged=False, timeout=300):
    """`dropbn train ARGS`, called in this process; unprivileged: in a subprocess, as a user that
    read-only folders stop (a root test process runs it in a user namespace, where root's
    permission override is gone)."""
    if not unprivileged:
        return call_cli(["train", *args], cwd=cwd)
    prefix = []
    if os.geteuid() == 0:
        if not shutil.which("unshare") or subprocess.run(["unshare", "--user", "true"]).returncode:
            pytest.skip("running as root without user namespaces: cannot make a folder read-only")
        prefix = ["unshare", "--user"]
    return subprocess.run([*prefix, DROPBN, "train", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ))


def one_line_exit_2(r, *parts):
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert lines[0].startswith("dropbn: error: ")
    for p in parts:
        assert p in lines[0], (p, lines[0])
    return lines[0]


def snapshot(folder: Path) -> dict:
    """Every file under `folder` with its bytes and modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def read_only(folder: Path) -> None:
    for p in [folder, *folder.rglob("*")]:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def writable(folder: Path) -> None:
    for p in [folder, *folder.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)


# ---------------------------------------------------------------- identity
@needs_mnist
@pytest.mark.slow
def test_a_changed_config_in_the_same_folder_is_one_line_and_touches_nothing(tmp_path):
    run_dir = tmp_path / "run"
    r = cli([*SMALL, "train.epochs=1", f"hydra.run.dir={run_dir}"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    before = snapshot(run_dir)
    assert {".hydra/config.yaml", ".hydra/overrides.yaml", "train.log", SUMMARY} <= set(before)

    r = cli([*SMALL, "train.epochs=2", "optim.lr=0.2", f"hydra.run.dir={run_dir}"], tmp_path)
    line = one_line_exit_2(r, str(run_dir), "holds a run of another config", "optim.lr=0.05 (now 0.2)",
                           "train.epochs=1 (now 2)", "train.force=true")
    assert "seed" not in line and "device" not in line  # only the keys that differ
    assert snapshot(run_dir) == before  # .hydra/, train.log and the results are untouched

    r = cli([*SMALL, "train.epochs=2", "optim.lr=0.2", "train.force=true", f"hydra.run.dir={run_dir}"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((run_dir / SUMMARY).read_text())
    assert s["epochs_completed"] == 2 and s["config"]["optim"]["lr"] == 0.2
    assert "lr: 0.2" in (run_dir / HYDRA_CONFIG).read_text()


@needs_mnist
def test_an_unfinished_run_resumes_only_with_its_own_config(tmp_path, caplog):
    cfg = compose(*SMALL, "train.epochs=1")
    T.run(cfg, tmp_path)
    (tmp_path / SUMMARY).unlink()  # killed between the last checkpoint and the summary
    with pytest.raises(IdentityError, match=r"optim.lr=0.05 \(now 0.3\)"):
        T.run(compose(*SMALL, "train.epochs=1", "optim.lr=0.3"), tmp_path)
    assert not (tmp_path / SUMMARY).exists()
    with caplog.at_level(logging.INFO, logger="dropbn"):
        s = T.run(cfg, tmp_path)
    assert s["status"] == "completed" and s["epochs_completed"] == 1
    assert "all 1 epochs are in the checkpoint" in caplog.text
    assert "resuming" not in caplog.text and "epoch 2/1" not in caplog.text


@needs_mnist
def test_the_record_holds_the_data_fingerprint_and_no_machine_paths(tmp_path):
    s = T.run(compose(*SMALL, "train.epochs=1", f"data.root={os.environ['DROPBN_DATA_DIR']}"), tmp_path)
    data = s["config"]["data"]
    assert data["root"] is None and data["cache_dir"] is None
    assert data["fingerprint"] == D.fingerprint(compose().data) and len(data["fingerprint"]) == 16
    assert load_checkpoint(RunDir(tmp_path))["config"] == s["config"]


# ---------------------------------------------------------------- finished runs whose files disagree
@needs_mnist
def test_a_completed_run_whose_files_disagree_is_repaired_not_skipped(tmp_path, caplog):
    """The issue's case: a summary saying 'completed, 2 epochs' next to a 1-row metrics.csv and
    an epoch-1 checkpoint (another process resumed after this one finished, then died)."""
    two, one = tmp_path / "two", tmp_path / "one"
    ref = T.run(compose(*SMALL, "train.epochs=2"), two)
    T.run(compose(*SMALL, "train.epochs=1"), one)  # epoch 1 of both runs is the same computation
    reference = metrics(two)
    ckpt = load_checkpoint(RunDir(one))
    ckpt["config"] = ref["config"]
    save_checkpoint(RunDir(two), ckpt)
    shutil.copy(one / METRICS, two / METRICS)

    with caplog.at_level(logging.INFO, logger="dropbn"):
        s = T.run(compose(*SMALL, "train.epochs=2"), two)
    assert "summary.json says 2 epochs, metrics.csv ends at epoch 1; training it again" in caplog.text
    assert "resuming" in caplog.text and "already completed" not in caplog.text
    assert s["status"] == "completed" and s["epochs_completed"] == 2
    assert metrics(two) == reference  # repaired: resumed from epoch 1, the same numbers
    assert load_checkpoint(RunDir(two))["epoch"] == 2


def test_finished_problem_names_what_disagrees():
    rows = [{"epoch": "1", "test_acc": "0.9"}, {"epoch": "2", "test_acc": "0.95"}]
    done = {"status": "completed", "epochs_completed": 2}
    assert finished_problem(done, rows, 2) is None
    assert finished_problem(done, rows, None) is None  # a committed record: no checkpoint
    assert finished_problem(done, rows[:1], 1) == "summary.json says 2 epochs, metrics.csv ends at epoch 1"
    assert finished_problem(done, rows, 1) == "metrics.csv holds 2 epochs, checkpoint.pt 1"
    assert finished_problem(done, None, 2) == "metrics.csv is missing or unreadable"
    assert "no epoch count" in finished_problem({"status": "completed"}, rows, 2)
    assert finished_problem({"epochs_completed": 0}, [], None) is None  # diverged in its first epoch
    assert finished_problem({"epochs_completed": 1.5}, [{"epoch": "0.75"}, {"epoch": "1.5"}], 2) is None


@needs_mnist
def test_a_committed_run_record_without_checkpoint_counts_as_complete(tmp_path, caplog):
    cfg = compose(*SMALL, "train.epochs=1")
    T.run(cfg, tmp_path)
    (tmp_path / CHECKPOINT).unlink()
    before = snapshot(tmp_path)
    with caplog.at_level(logging.INFO, logger="dropbn"):
        T.run(cfg, tmp_path)
    assert "already completed, skipping" in caplog.text
    assert snapshot(tmp_path) == before


@needs_mnist
@pytest.mark.parametrize("name", [SUMMARY, CHECKPOINT, METRICS])
def test_a_run_file_that_is_a_folder_is_one_line(tmp_path, name):
    (tmp_path / name).mkdir()
    with pytest.raises(DropbnError, match=f"{name} is not a file"):
        T.run(compose(*SMALL, "train.epochs=1"), tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [name]  # nothing written


@needs_mnist
@pytest.mark.slow
def test_a_corrupt_checkpoint_says_so_and_force_restarts(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / CHECKPOINT).write_bytes(b"PK\x03\x04 truncated by a crash")
    r = cli([*SMALL, "train.epochs=1", f"hydra.run.dir={run_dir}"], tmp_path)
    one_line_exit_2(r, f"{run_dir / CHECKPOINT} is corrupt", "train.force=true restarts the run",
                    "delete the checkpoint")
    r = cli([*SMALL, "train.epochs=1", "train.force=true", f"hydra.run.dir={run_dir}"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert load_checkpoint(RunDir(run_dir))["epoch"] == 1


# ---------------------------------------------------------------- temp files of interrupted writes
def test_remove_stale_tmp_removes_only_atomic_write_leftovers(tmp_path):
    atomic_write_text("x", tmp_path / ".hydra" / "config.yaml")
    stale = [tmp_path / ".checkpoint.pt.k2j3h.tmp", tmp_path / ".hydra" / ".config.yaml.a8d7.tmp"]
    kept = [tmp_path / "notes.tmp", tmp_path / ".keep", tmp_path / "summary.json"]
    for p in stale + kept:
        p.write_text("x")
    assert sorted(remove_stale_tmp(tmp_path)) == sorted(stale)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in stale)
    assert [p.name for p in (tmp_path / ".hydra").iterdir()] == ["config.yaml"]


@needs_mnist
def test_training_removes_leftover_temp_files_and_skipping_does_not(tmp_path):
    cfg = compose(*SMALL, "train.epochs=1")
    leftover = tmp_path / ".checkpoint.pt.x8f2k.tmp"
    tmp_path.mkdir(exist_ok=True)
    leftover.write_bytes(b"half a checkpoint")
    T.run(cfg, tmp_path)
    assert not leftover.exists()
    leftover.write_bytes(b"written by another process right now")
    T.run(cfg, tmp_path)  # skipped: this process does not own the folder, the file stays
    assert leftover.exists()


def test_a_cache_build_removes_the_leftovers_of_an_interrupted_build(tmp_path):
    fake_mnist(tmp_path / "root")
    cfg = dcfg(root=str(tmp_path / "root"), cache_dir=str(tmp_path / "c"))
    key = D._fingerprint(D.data_files(cfg), "mnist|None")
    (tmp_path / "c").mkdir()
    leftover = tmp_path / "c" / f".mnist-{key}.pt.q1w2e3.tmp"
    other = tmp_path / "c" / ".cifar10-0123.pt.z9.tmp"  # another entry's build: its lock, not ours
    leftover.write_bytes(b"half")
    other.write_bytes(b"half")
    D.load_raw(cfg)
    assert (tmp_path / "c" / f"mnist-{key}.pt").is_file()
    assert not leftover.exists() and other.exists()


# ---------------------------------------------------------------- data
def test_an_image_folder_needs_two_classes(tmp_path):
    make_imagefolder(tmp_path / "one", classes=("cat",))
    with pytest.raises(DataError, match=r"holds 1 class \['cat'\]; a classifier needs at least 2"):
        D.load_data(dcfg(name="imagefolder", path=str(tmp_path / "one"), cache_dir=str(tmp_path / "c")))


def test_fingerprint_is_the_content_wherever_it_lives(tmp_path):
    fake_mnist(tmp_path / "a")
    fake_mnist(tmp_path / "gz", gz=True)
    fake_mnist(tmp_path / "b", seed=1)
    shutil.copytree(tmp_path / "a", tmp_path / "elsewhere" / "copy")
    fp = {k: D.fingerprint(dcfg(root=str(tmp_path / k), cache_dir=str(tmp_path / "c")))
          for k in ("a", "gz", "b", "elsewhere/copy")}
    assert fp["a"] == fp["elsewhere/copy"] == fp["gz"]  # the same bytes (gzipped or not), another path
    assert fp["b"] != fp["a"]
    make_imagefolder(tmp_path / "imgs")
    shutil.copytree(tmp_path / "imgs", tmp_path / "imgs2")
    a = identity.fingerprint([tmp_path / "imgs"], tmp_path / "c")
    assert a == identity.fingerprint([tmp_path / "imgs2"], tmp_path / "c")
    (tmp_path / "imgs2" / "train" / "cat" / "0.png").rename(tmp_path / "imgs2" / "train" / "dog" / "9.png")
    assert identity.fingerprint([tmp_path / "imgs2"], tmp_path / "c") != a  # a label changed


def test_fingerprint_is_memoised_in_the_cache_and_works_without_one(tmp_path, monkeypatch):
    (tmp_path / "data.bin").write_bytes(os.urandom(1000))
    fp = identity.fingerprint([tmp_path / "data.bin"], tmp_path / "c")
    assert list((tmp_path / "c" / identity.MEMO_DIR).iterdir())

    def no_hashing(f):
        raise AssertionError("hashed again")

    monkeypatch.setattr(identity, "_hash_stream", no_hashing)
    assert identity.fingerprint([tmp_path / "data.bin"], tmp_path / "c") == fp  # read once
    monkeypatch.undo()
    (tmp_path / "afile").write_text("x")  # a cache that cannot be written: hashed, not memoised
    assert identity.fingerprint([tmp_path / "data.bin"], tmp_path / "afile" / "c") == fp


# ---------------------------------------------------------------- folder names
def test_long_folder_names_keep_a_readable_prefix_and_a_hash():
    items = [f"train.key{i:02d}=value{i}" for i in range(30)]
    name = ",".join(items)
    short = identity.fit_name(name)
    assert len(short.encode()) <= identity.MAX_NAME_BYTES < 255
    assert short.startswith(",".join(items[:3])) and short == identity.fit_name(name)  # deterministic
    assert identity.fit_name(name[:-1] + "X") != short  # the hash is of the whole name
    assert identity.fit_name("optim.lr=0.1") == "optim.lr=0.1"
    wide = "reg.order=" + "é" * 300  # multi-byte characters are never cut in half
    assert len(identity.fit_name(wide).encode()) <= identity.MAX_NAME_BYTES
    identity.fit_name(wide).encode().decode()


def test_folder_names_show_the_data_by_its_content(tmp_path):
    make_imagefolder(tmp_path / "a", classes=("cat", "dog"))
    make_imagefolder(tmp_path / "b", classes=("cat", "dog", "frog"))
    shutil.copytree(tmp_path / "a", tmp_path / "moved" / "a")
    name = {k: identity.folder_name("data=imagefolder,seed=0", str(tmp_path / k), tmp_path / "c")
            for k in ("a", "b", "moved/a")}
    fp = identity.fingerprint([tmp_path / "a"], tmp_path / "c")
    assert name["a"] == f"data.fingerprint={fp},data=imagefolder,seed=0"  # sorted as Hydra sorts
    assert name["moved/a"] == name["a"] != name["b"]
    assert identity.folder_name("", None) == "run" and identity.folder_name("seed=1", None) == "seed=1"


@pytest.mark.slow
def test_a_data_path_sweep_makes_one_folder_per_data_set_and_moved_data_is_the_same_run(tmp_path):
    make_imagefolder(tmp_path / "A", classes=("cat", "dog"))
    make_imagefolder(tmp_path / "B", classes=("cat", "dog", "frog"))
    out = tmp_path / "out"
    r = cli(["-m", *IMAGES, f"data.path={tmp_path / 'A'},{tmp_path / 'B'}", f"out_root={out}", "name=s"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    runs = sorted(p for p in (out / "s").iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(runs) == 2 and all("data.fingerprint=" in p.name for p in runs)
    summaries = [json.loads((p / SUMMARY).read_text()) for p in runs]
    assert all(s["status"] == "completed" for s in summaries)
    assert sorted(s["data_sizes"]["train"] for s in summaries) == [8, 12]  # 2 and 3 classes of 4 images
    assert len({s["config"]["data"]["fingerprint"] for s in summaries}) == 2

    shutil.copytree(tmp_path / "A", tmp_path / "moved" / "A")  # the same data, elsewhere
    r = cli([*IMAGES, f"data.path={tmp_path / 'moved' / 'A'}", f"out_root={out}", "name=s"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "already completed, skipping" in r.stdout
    assert len([p for p in (out / "s").iterdir() if p.is_dir() and not p.name.startswith(".")]) == 2


@needs_mnist
@pytest.mark.slow
def test_a_30_override_sweep_runs_in_folders_that_fit(tmp_path):
    overrides = ["data.train_size=200", "data.val_size=0", "data.split_seed=0", "data.augment=false",
                 "model.hidden=[32]", "reg.norm=batch", "reg.norm_groups=8", "reg.dropout=0.1",
                 "reg.input_dropout=0.0", "reg.conv_dropout=0.0", "reg.channel_dropout=false",
                 "reg.order=[norm,act,dropout]", "reg.dropout_blocks=all", "reg.max_norm=4.0", "optim=sgd",
                 "optim.lr=0.05", "optim.momentum=0.5", "optim.weight_decay=0.0001", "train.epochs=1",
                 "train.batch_size=50", "train.schedule=step", "train.step_every=5", "train.step_gamma=0.5",
                 "train.target_acc=0.5", "train.eval_train_size=200", "train.eval_batch_size=500",
                 "train.amp=false", "train.compile=false", "train.progress=false", "train.diagnostics=false"]
    assert len(overrides) == 30
    r = cli(["-m", *overrides, "seed=0,1", "device=cpu", "train.threads=1", f"out_root={tmp_path}", "name=wide"],
            tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    runs = sorted(p for p in (tmp_path / "wide").iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(runs) == 2
    for p in runs:
        full = (p / FOLDER_NAME).read_text().strip()
        assert len(full.encode()) > 255 and len(p.name.encode()) <= identity.MAX_NAME_BYTES
        assert p.name == identity.fit_name(full) and p.name.startswith("data.augment=False,data.split_seed=0,")
        assert json.loads((p / SUMMARY).read_text())["status"] == "completed"
        assert "folder name shortened" in (p / "train.log").read_text()


# ---------------------------------------------------------------- devices
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_is_one_line_before_anything_runs(tmp_path):
    r = cli(["-m", "seed=0,1", "device=cuda", "train.epochs=1", f"out_root={tmp_path / 'out'}"], tmp_path)
    one_line_exit_2(r, "device=cuda: no CUDA device is available here", "device=cpu")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- read-only folders
@needs_mnist
@pytest.mark.slow
def test_a_read_only_built_cache_trains_normally(tmp_path):
    cache = tmp_path / "cache"
    D.load_raw(dcfg(root=os.environ["DROPBN_DATA_DIR"], cache_dir=str(cache)))  # built once
    for p in cache.glob("*.lock"):
        p.unlink()
    before = snapshot(cache)
    read_only(cache)
    try:
        r = cli([*SMALL, "train.epochs=1", f"data.cache_dir={cache}", f"out_root={tmp_path / 'out'}"], tmp_path,
                unprivileged=True)
    finally:
        writable(cache)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "done: test acc" in r.stdout
    assert snapshot(cache) == before  # no lock file, no memo: nothing written


@needs_mnist
@pytest.mark.slow
def test_a_read_only_finished_run_is_skipped_without_writing(tmp_path):
    args = [*SMALL, "train.epochs=1", f"out_root={tmp_path / 'out'}"]
    r = cli(args, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    before = snapshot(tmp_path / "out")
    read_only(tmp_path / "out")
    try:
        r = cli(args, tmp_path, unprivileged=True)
        assert r.returncode == 0, r.stderr[-2000:]
        assert "already completed, skipping" in r.stdout
        forced = cli([*args, "train.force=true"], tmp_path, unprivileged=True)
        sweep = cli(["-m", *args, "seed=0,1"], tmp_path, unprivileged=True)
    finally:
        writable(tmp_path / "out")
    assert snapshot(tmp_path / "out") == before
    one_line_exit_2(forced, "is not writable")
    one_line_exit_2(sweep, "is not writable", "multirun.yaml")


# ---------------------------------------------------------------- the report
def test_report_flags_non_finite_metrics_and_skips_non_numbers(tmp_path):
    import pandas as pd

    from dropbn.commands import report_cmd as report_cli
    from dropbn.report.collect import collect

    from .test_report import make_run

    make_run(tmp_path / "s" / "ok", "none", seed=0)
    nan = make_run(tmp_path / "s" / "nan", "none", seed=1)
    s = json.loads((nan / SUMMARY).read_text())
    s["final_test_acc"] = float("nan")
    (nan / SUMMARY).write_text(json.dumps(s))
    inf = make_run(tmp_path / "s" / "inf", "none", seed=2)
    m = pd.read_csv(inf / METRICS)
    m.loc[1, "train_loss"] = float("inf")
    m.to_csv(inf / METRICS, index=False)
    text = make_run(tmp_path / "s" / "text", "none", seed=3)
    s = json.loads((text / SUMMARY).read_text())
    s["best_test_acc"] = "n/a"
    (text / SUMMARY).write_text(json.dumps(s))

    coll = collect([tmp_path / "s"], progress=False)
    flagged = dict(zip(coll.runs["run"], coll.runs["nonfinite"]))
    assert flagged["s/ok"] == [] and flagged["s/nan"] == ["final_test_acc"]
    assert flagged["s/inf"] == ["metrics.csv train_loss"]
    assert [(Path(p).name, why) for p, why in coll.skipped] == [("text", 'summary.json: best_test_acc="n/a" '
                                                                         'is not a number')]
    md = report_cli.main([str(tmp_path / "s"), "--out", str(tmp_path / "rep"), "--no-progress"]).read_text()
    assert "Runs with non-finite metrics (NaN or infinite values):" in md
    assert "- `s/nan`: final_test_acc" in md and "- `s/inf`: metrics.csv train_loss" in md
    assert "is not a number" in md  # the skipped folder, with its reason
