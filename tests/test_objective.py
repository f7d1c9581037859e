"""The training task returns train.objective (a validation metric) to Hydra: real tiny
runs, one of them diverging, through `dropbn train -m` with dropbn's job-end callback
(dropbn.callbacks.SaveReturn), and the rule itself on their summaries."""
from __future__ import annotations

import json
import math
import os

import pytest

from dropbn.record.objective import OBJECTIVES, objective
from dropbn.train.loop import run

from .conftest import TINY, call_cli, compose, needs_mnist

pytestmark = needs_mnist

SMALL = ["data.train_size=1000", "train.eval_train_size=500", "model.hidden=[32]", "train.epochs=1", "reg=none",
         "device=cpu", "train.progress=false", "train.diagnostics=false"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """4 jobs: lr 0.01 (trains) and 1e6 (diverges), with and without a validation split."""
    root = tmp_path_factory.mktemp("objective")
    returns = root / "returns.jsonl"
    r = call_cli(["train", "-m", *SMALL, "optim.lr=1e6,0.01", "data.val_size=0,500", f"out_root={root}",
                 "+hydra.callbacks.returns._target_=dropbn.callbacks.SaveReturn",
                 f"+hydra.callbacks.returns.path={returns}"], cwd=root)
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = [json.loads(line) for line in returns.read_text().splitlines()]
    out = {}
    for job in jobs:
        summary = json.loads(open(os.path.join(job["run_dir"], "summary.json")).read())
        cfg = summary["config"]
        out[(cfg["optim"]["lr"] > 1, cfg["data"]["val_size"])] = (job["value"], summary, job["run_dir"])
    assert len(out) == 4, jobs
    return out


def test_completed_run_returns_its_final_val_accuracy(sweep):
    value, s, _ = sweep[(False, 500)]
    assert s["status"] == "completed"
    assert value == s["final_val_acc"] and 0.2 < value <= 1.0
    assert objective(s, "best_val_acc") == s["best_val_acc"]
    assert objective(s, "val_loss") == s["final_val_loss"] and math.isfinite(s["final_val_loss"])


def test_diverged_run_returns_the_worst_value(sweep):
    value, s, _ = sweep[(True, 500)]
    assert s["status"] == "diverged"
    assert value == 0.0
    assert objective(s, "best_val_acc") == 0.0
    assert objective(s, "val_loss") == math.inf


@pytest.mark.parametrize("diverges", [False, True])
def test_without_validation_split_the_task_returns_none_and_logs_why(sweep, diverges):
    value, s, run_dir = sweep[(diverges, 0)]
    assert value is None
    assert s["final_test_acc"] is not None or s["status"] == "diverged"  # a test metric exists; it is not used
    assert all(objective(s, name) is None for name in OBJECTIVES)
    assert "no validation split (data.val_size=0)" in open(os.path.join(run_dir, "train.log")).read()


def test_objective_must_be_a_validation_metric(tmp_path):
    r = call_cli(["train", *TINY, "train.objective=test_acc", f"out_root={tmp_path}"], cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == "dropbn: error: train.objective='test_acc': allowed: val_acc, best_val_acc, val_loss"


def test_a_skipped_completed_run_returns_the_same_objective(tmp_path):
    cfg = compose(*TINY, "train.epochs=1", "data.val_size=500", "train.objective=val_loss")
    first = run(cfg, tmp_path)
    again = run(cfg, tmp_path)  # already completed: read back from summary.json
    assert objective(again, "val_loss") == objective(first, "val_loss") == first["final_val_loss"]
