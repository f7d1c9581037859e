"""train.steps: a budget of optimisation steps in evaluation periods, drawn from one stream of
seeded passes. Real short runs on MNIST: exactly S steps (Adam's own step counter), rows at the
right steps, the lr schedule over steps, a step budget of whole epochs equal to the epoch run,
and a run SIGKILLed mid-pass that resumes bit-identically."""
from __future__ import annotations

import csv
import json
import math
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from dropbn.train.data import Batches, Split
from dropbn.base.errors import DropbnError
from dropbn.config.precheck import check_args
from dropbn.train.optimize import Budget
from dropbn.train.loop import run

from .conftest import call_cli, compose, needs_mnist
from .test_resume import metrics, n_rows, start, wait_for

BASE = ("model.hidden=[64]", "train.progress=false", "train.diagnostics=false", "train.batch_size=32",
        "device=cpu", "train.threads=1")
# 2000 images in batches of 32: 63 steps per pass (the last batch holds 16)
SMALL = (*BASE, "data.train_size=2000", "train.eval_train_size=1000")
TINIER = (*BASE, "data.train_size=1000", "train.eval_train_size=500")
PER_PASS = 63


def rows_of(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]


def assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ---------------------------------------------------------------- the budget and the stream
def test_budget_splits_steps_into_periods():
    epochs = Budget.of(SimpleNamespace(epochs=3, steps=None, eval_every_steps=None), per_pass=PER_PASS)
    assert (epochs.total, epochs.every, epochs.periods, epochs.passes) == (189, 63, 3, 3)
    assert [epochs.epoch(epochs.steps_after(p)) for p in (1, 2, 3)] == [1, 2, 3]
    assert (epochs.ticks, epochs.ticks_per_period) == (3, 1)  # the scheduler steps per epoch

    steps = Budget.of(SimpleNamespace(epochs=3, steps=130, eval_every_steps=40), per_pass=PER_PASS)
    assert steps.periods == 4 and [steps.steps_in(p) for p in (1, 2, 3, 4)] == [40, 40, 40, 10]
    assert [steps.steps_after(p) for p in (0, 1, 4)] == [0, 40, 130]
    assert steps.epoch(126) == 2 and steps.epoch(40) == round(40 / 63, 4) and steps.passes == round(130 / 63, 4)
    assert (steps.ticks, steps.ticks_per_period) == (130, 40)  # the scheduler steps per step
    per_pass = Budget.of(SimpleNamespace(epochs=3, steps=130, eval_every_steps=None), per_pass=PER_PASS)
    assert [per_pass.steps_in(p) for p in range(1, per_pass.periods + 1)] == [63, 63, 4]


def _batches(seed: int) -> Batches:
    g = torch.Generator().manual_seed(123)
    split = Split(torch.randint(0, 256, (50, 1, 8, 8), generator=g, dtype=torch.uint8), torch.arange(50))
    return Batches(split, 16, torch.tensor([0.5]), torch.tensor([0.25]), shuffle=True,
                   generator=torch.Generator().manual_seed(seed), augment=True)


def _assert_same_batches(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_stream_is_passes_in_a_row_and_resumes_mid_pass():
    ref = _batches(0)
    passes = [b for _ in range(3) for b in ref]  # 50 images: batches of 16, 16, 16, 2 per pass
    assert len(passes) == 12 and sorted(torch.cat([y for _, y in passes[:4]]).tolist()) == list(range(50))
    s = _batches(0)
    _assert_same_batches(list(s.take(5)) + list(s.take(7)), passes)  # periods across pass ends
    assert s.state()["pos"] == 0 and s.state()["perm"] is None

    first = _batches(0)
    _assert_same_batches(list(first.take(6)), passes[:6])  # stops mid-pass 2
    state, gen = first.state(), first.gen.get_state()
    assert state["pos"] == 2 and state["perm"] is not None
    resumed = _batches(99)  # another seed: only the saved state can make it continue the same way
    resumed.load_state(state)
    resumed.gen.set_state(gen)
    _assert_same_batches(list(resumed.take(6)), passes[6:])


# ---------------------------------------------------------------- real runs
@needs_mnist
def test_step_budget_trains_exactly_S_steps_and_evaluates_every_period(tmp_path):
    cfg = compose(*SMALL, "optim=adam", "train.epochs=1", "train.steps=130", "train.eval_every_steps=40")
    s = run(cfg, tmp_path)
    assert s["status"] == "completed"
    rows = rows_of(tmp_path)
    assert [int(r["step"]) for r in rows] == [40, 80, 120, 130]  # train.epochs=1 is ignored
    assert [float(r["epoch"]) for r in rows] == [round(k / PER_PASS, 4) for k in (40, 80, 120, 130)]
    assert (s["steps"], s["steps_completed"]) == (130, 130)
    assert s["epochs"] == s["epochs_completed"] == round(130 / PER_PASS, 4)
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ck["step"] == 130 and ck["epoch"] == 4 and ck["stream"]["pos"] == 130 - 2 * PER_PASS
    adam_steps = {float(st["step"]) for st in ck["optimizer"]["state"].values()}
    assert adam_steps == {130.0}  # Adam counts the optimisation steps it took
    hit = next((r for r in rows if float(r["test_acc"]) >= cfg.train.target_acc), None)
    assert s["steps_to_target"] == (int(hit["step"]) if hit else None)


@needs_mnist
@pytest.mark.parametrize("schedule,expected", [
    # lr of each period's last step (step k-1 of the run): cosine over all 100 steps
    ("cosine", lambda lr, k: lr * (1 + math.cos(math.pi * (k - 1) / 100)) / 2),
    # halved every train.step_every=2 periods of 25 steps
    ("step", lambda lr, k: lr * 0.5 ** ((k - 1) // 50)),
])
def test_lr_schedule_runs_over_steps(tmp_path, schedule, expected):
    cfg = compose(*TINIER, f"train.schedule={schedule}",
                  "train.steps=100", "train.eval_every_steps=25", "train.step_every=2", "train.step_gamma=0.5")
    assert run(cfg, tmp_path)["status"] == "completed"
    got = [(int(r["step"]), float(r["lr"])) for r in rows_of(tmp_path)]
    assert [k for k, _ in got] == [25, 50, 75, 100]
    for k, lr in got:
        assert lr == pytest.approx(expected(cfg.optim.lr, k), rel=1e-6, abs=1e-9), k
    assert got[-1][1] < got[0][1]


@needs_mnist
def test_a_step_budget_of_whole_epochs_is_the_epoch_run(tmp_path):
    """Same batches, same dropout masks, same schedule ticks: only the budget's spelling differs."""
    by_epochs = tmp_path / "epochs"
    by_steps = tmp_path / "steps"
    s_e = run(compose(*SMALL, "reg=both", "train.epochs=2"), by_epochs)
    s_s = run(compose(*SMALL, "reg=both", f"train.steps={2 * PER_PASS}"), by_steps)
    assert metrics(by_epochs) == metrics(by_steps)
    assert [r["epoch"] for r in rows_of(by_steps)] == ["1", "2"]
    assert_same_weights(weights(by_epochs), weights(by_steps))
    for k in ("epochs", "epochs_completed", "steps", "steps_completed", "final_test_acc", "best_epoch"):
        assert s_e[k] == s_s[k], k
    assert s_e["steps"] == 2 * PER_PASS


@needs_mnist
def test_tensorboard_steps_are_the_metrics_rows(tmp_path):
    pytest.importorskip("tensorboard", reason="the tracking extra (tensorboard) is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = compose(*TINIER, "train.steps=50",
                  "train.eval_every_steps=20", "train.tensorboard=true")
    assert run(cfg, tmp_path)["status"] == "completed"
    ea = EventAccumulator(str(tmp_path))
    ea.Reload()
    assert [e.step for e in ea.Scalars("acc/test")] == [1, 2, 3]
    assert [e.value for e in ea.Scalars("acc/test")] == pytest.approx([float(r["test_acc"]) for r in rows_of(tmp_path)])
    assert "step" not in ea.Tags()["scalars"]


# 300 steps in periods of 40: every checkpoint but the last lies inside a pass of 63 steps
KILL_ARGS = [*SMALL, "reg=both", "data.augment=true", "train.steps=300", "train.eval_every_steps=40"]


def _run_dir(root: Path) -> Path | None:
    found = list((root / "default").glob("*/checkpoint.pt"))
    return found[0].parent if found else None


@needs_mnist
@pytest.mark.slow
def test_sigkill_mid_pass_then_resume_is_identical(tmp_path):
    ref_root = tmp_path / "ref"
    r = call_cli(["train", *KILL_ARGS, f"out_root={ref_root}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    ref = _run_dir(ref_root)

    root = tmp_path / "killed"
    p = start([*KILL_ARGS, f"out_root={root}"], tmp_path)
    wait_for(lambda: _run_dir(root) is not None and n_rows(_run_dir(root)) >= 1, p)
    p.send_signal(signal.SIGKILL)
    p.communicate()
    assert p.returncode == -signal.SIGKILL
    run_dir = _run_dir(root)
    assert run_dir.name == ref.name and not (run_dir / "summary.json").exists()
    ck = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert ck["step"] < 300 and ck["step"] % PER_PASS != 0 and ck["stream"]["pos"] == ck["step"] % PER_PASS

    r = call_cli(["train", *KILL_ARGS, f"out_root={root}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"resuming {run_dir} at step {ck['step'] + 1}/300" in r.stdout
    assert metrics(run_dir) == metrics(ref)
    assert [int(row["step"]) for row in rows_of(run_dir)] == [40, 80, 120, 160, 200, 240, 280, 300]
    assert_same_weights(weights(run_dir), weights(ref))
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (run_dir, ref))
    assert sa["status"] == "completed" and sa["steps_completed"] == 300
    for k in ("final_test_acc", "final_train_loss", "best_test_acc", "epochs_completed", "steps_to_target"):
        assert sa[k] == sb[k], k


# ---------------------------------------------------------------- config
def test_eval_every_steps_needs_a_step_budget(tmp_path):
    with pytest.raises(DropbnError, match=r"train.eval_every_steps=100: needs train.steps"):
        check_args(["train.eval_every_steps=100", f"out_root={tmp_path}"])


@pytest.mark.slow
def test_datasize_steps_preset_sweeps_sizes_regs_and_replicates_at_equal_steps(tmp_path, monkeypatch):
    monkeypatch.delenv("DROPBN_SWEEP_JOBS", raising=False)
    assert check_args(["-m", "+exp=datasize_steps_mnist_mlp", f"out_root={tmp_path}"]) == 48
    cfg = compose("+exp=datasize_steps_mnist_mlp", "seed=2", "data.train_size=1000")
    assert (cfg.train.steps, cfg.train.eval_every_steps, cfg.data.val_size) == (6000, 500, 5000)
    assert cfg.data.split_seed == 2  # replicate k: seed k and training subset k
