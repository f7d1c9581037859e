"""Real short training runs on a subset of real MNIST: accuracy, determinism,
run files, and `dropbn train` end to end through the console script in a subprocess."""
import csv
import json

import pytest
import torch

from dropbn.train.loop import run
from tests.conftest import TINY, call_cli, compose, needs_mnist, run_cli

pytestmark = needs_mnist

METRIC_COLS = {"epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "epoch_seconds"}
SUMMARY_KEYS = {"status", "final_test_acc", "best_test_acc", "final_train_acc", "generalization_gap",
                "epochs_to_target", "seconds_to_target", "train_seconds", "seconds_per_epoch",
                "first_epoch_seconds", "best_epoch", "best_epoch_by", "test_acc_at_best_epoch",
                "params", "seed", "config", "env"}


def read_metrics(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_short_real_run_beats_90_percent_and_writes_its_files(tmp_path):
    cfg = compose("data.train_size=5000", "model.hidden=[256]", "train.epochs=2", "reg=both",
                  "train.progress=false", "train.diagnostics=false", "train.target_acc=0.9")
    s = run(cfg, tmp_path)
    assert s["status"] == "completed"
    assert s["final_test_acc"] > 0.90, s["final_test_acc"]
    assert SUMMARY_KEYS <= set(s)
    assert s["generalization_gap"] == pytest.approx(s["final_train_acc"] - s["final_test_acc"])
    assert s["epochs_to_target"] in (1, 2)
    assert s["env"]["torch"] == torch.__version__ and s["env"]["device"] == "cpu"
    assert s["env"]["parallel_runs"] == 1  # a single run has the machine to itself
    rows = read_metrics(tmp_path / "metrics.csv")
    assert len(rows) == 2 and METRIC_COLS <= set(rows[0])
    # no validation split: no epoch is selected (never on test); the test maximum is only an oracle
    assert s["best_epoch"] is None and s["best_epoch_by"] is None and s["test_acc_at_best_epoch"] is None
    assert s["best_test_acc"] == max(float(r["test_acc"]) for r in rows)
    # timing: epoch 1 apart, steady state = epoch 2's training seconds
    assert s["first_epoch_seconds"] == pytest.approx(float(rows[0]["epoch_seconds"]))
    assert s["seconds_per_epoch"] == pytest.approx(float(rows[1]["epoch_seconds"]))
    assert s["train_seconds"] == pytest.approx(float(rows[0]["epoch_seconds"]) + float(rows[1]["epoch_seconds"]))
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "completed"
    assert "block1.norm" in (tmp_path / "model.txt").read_text()
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ck["epoch"] == 2 and "block1.linear.weight" in ck["model"]


def test_validation_split_adds_val_columns_and_selects_the_best_epoch(tmp_path):
    cfg = compose(*TINY, "data.val_size=500", "train.epochs=2")
    s = run(cfg, tmp_path)
    assert s["data_sizes"] == {"train": 2000, "val": 500, "test": 10000}
    rows = read_metrics(tmp_path / "metrics.csv")
    assert {"val_loss", "val_acc"} <= set(rows[0])
    val = [float(r["val_acc"]) for r in rows]
    best = val.index(max(val))  # the first epoch with the highest validation accuracy
    assert (s["best_epoch"], s["best_epoch_by"]) == (best + 1, "val")
    assert s["test_acc_at_best_epoch"] == pytest.approx(float(rows[best]["test_acc"]))
    assert s["best_val_acc"] == pytest.approx(max(val)) and s["final_val_acc"] == pytest.approx(val[-1])


def test_same_seed_identical_metrics_other_seed_differs(tmp_path):
    ov = (*TINY, "reg=both", "train.epochs=2")
    a = run(compose(*ov), tmp_path / "a")
    b = run(compose(*ov), tmp_path / "b")
    c = run(compose(*ov, "seed=1"), tmp_path / "c")
    strip = lambda rows: [{k: v for k, v in r.items() if "seconds" not in k} for r in rows]  # noqa: E731
    ra, rb, rc = (strip(read_metrics(tmp_path / d / "metrics.csv")) for d in "abc")
    assert ra == rb
    assert ra != rc
    assert a["final_test_acc"] == b["final_test_acc"]


def test_completed_run_is_skipped_unless_forced(tmp_path):
    cfg = compose(*TINY, "train.epochs=1")
    first = run(cfg, tmp_path)
    mtime = (tmp_path / "summary.json").stat().st_mtime_ns
    again = run(cfg, tmp_path)
    assert again == json.loads((tmp_path / "summary.json").read_text()) == first
    assert (tmp_path / "summary.json").stat().st_mtime_ns == mtime
    forced = run(compose(*TINY, "train.epochs=1", "train.force=true"), tmp_path)
    assert forced["status"] == "completed"
    assert (tmp_path / "summary.json").stat().st_mtime_ns != mtime


@pytest.mark.parametrize("ov", [
    ("model=cnn", "model.channels=[4]", "model.fc=[16]", "reg=both", "reg.conv_dropout=0.1"),
    ("reg=batchnorm", "reg.norm=layer"),
    ("reg=both", "reg.norm=group", "reg.norm_groups=4", "optim=adam"),
    ("reg=dropout", "reg.max_norm=2.0", "reg.input_dropout=0.2", "optim=rmsprop", "train.schedule=cosine"),
])
def test_variants_train(tmp_path, ov):
    s = run(compose(*TINY, "data.train_size=500", "train.eval_train_size=500", "train.epochs=1", *ov), tmp_path)
    assert s["status"] == "completed" and s["final_test_acc"] > 0.15  # above chance (0.1)


@pytest.mark.slow
def test_cli_end_to_end(tmp_path):
    r = run_cli(["train", *TINY, "train.epochs=1", f"out_root={tmp_path}", "name=e2e", "reg=both"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    (run_dir,) = (tmp_path / "e2e").iterdir()  # one folder, named after the overrides
    assert run_dir.name == "data.train_size=2000,model.hidden=[64],reg=both,train.epochs=1,train.eval_train_size=1000"
    out = r.stdout
    assert "block1.linear" in out and "total parameters" in out      # the model, layer by layer
    assert "train" in out and "2000" in out and "device: cpu" in out  # data sizes and device
    assert "done: test acc" in out and str(run_dir) in out           # final numbers and run folder
    for f in ("metrics.csv", "summary.json", "model.txt", "checkpoint.pt", ".hydra/config.yaml", "train.log"):
        assert (run_dir / f).exists(), f


def test_cli_help_lists_subcommands(tmp_path):
    r = call_cli(["--help"], cwd=tmp_path)
    assert r.returncode == 0 and "train" in r.stdout and "report" in r.stdout
    r = call_cli(["train", "--help"], cwd=tmp_path)
    assert r.returncode == 0 and "reg:" in r.stdout and "model:" in r.stdout


@pytest.mark.slow
def test_cli_missing_data_offline_is_one_line_exit_2(tmp_path):
    r = run_cli(["train", f"data.root={tmp_path / 'nothing'}", "data.download=false", f"out_root={tmp_path}"],
                cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert "MNIST not found under" in lines[0] and "nothing" in lines[0]


def test_crash_leaves_failed_summary(tmp_path, monkeypatch):
    """A crash inside a run (not an input error) is recorded as status=failed, then raised."""
    import dropbn.train.loop as t

    def boom(*args, **kwargs):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(t, "train_epoch", boom)
    r = call_cli(["train", "train.epochs=1", f"out_root={tmp_path}", "name=crash"], cwd=tmp_path)
    assert r.returncode != 0 and "simulated crash" in r.stderr
    s = json.loads((tmp_path / "crash" / "train.epochs=1" / "summary.json").read_text())
    assert s["status"] == "failed" and "RuntimeError: simulated crash" in s["error"]
    assert s["config"]["train"]["epochs"] == 1
