"""predictions.npz: every run records its predicted class per test and validation image, at the last
epoch and at the validation-picked one; train.eval_test=false (a study's tune stage) evaluates no test
image at all and leaves the run's identity, folder and training unchanged."""
from __future__ import annotations

import csv
import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from dropbn.record.predictions import labels_fingerprint, read_predictions

from .conftest import TINY, needs_mnist, run_cli

ARGS = [*TINY, "data.val_size=500", "train.epochs=3", "device=cpu", "train.threads=1", "reg=both"]
DIRNAME = ("data.train_size=2000,data.val_size=500,model.hidden=[64],reg=both,train.epochs=3,"
           "train.eval_train_size=1000")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = {}
    for mode, extra in (("with_test", []), ("no_test", ["train.eval_test=false"])):
        root = tmp_path_factory.mktemp(mode)
        r = run_cli(["train", *ARGS, *extra, f"out_root={root}"], cwd=root)
        assert r.returncode == 0, r.stderr[-2000:]
        out[mode] = root / "default" / DIRNAME  # the same folder name either way
    return out


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def _metrics(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _acc(pred, labels) -> float:
    return float((pred == labels).mean())


@needs_mnist
def test_a_run_records_its_predictions_at_the_last_and_the_picked_epoch(runs):
    run = runs["with_test"]
    s, p = _summary(run), read_predictions(run / "predictions.npz")
    y = p.labels("test")
    assert len(y) == s["data_sizes"]["test"] and len(p.labels("val")) == s["data_sizes"]["val"] == 500
    assert p.test_fingerprint == labels_fingerprint(y)
    assert p.data_fingerprint == s["config"]["data"]["fingerprint"] and p.num_classes == 10
    assert p.final_epoch == s["epochs_completed"] == 3 and p.picked_epoch == s["best_epoch"]
    # the predictions reproduce the accuracies the run logged, exactly (same evaluation)
    assert _acc(p.get("test", "final"), y) == s["final_test_acc"]
    assert _acc(p.get("test", "picked"), y) == s["test_acc_at_best_epoch"]
    assert _acc(p.get("val", "final"), p.labels("val")) == s["final_val_acc"]
    assert _acc(p.get("val", "picked"), p.labels("val")) == s["best_val_acc"]
    assert (run / "predictions.npz").stat().st_size < 16_000  # a few KB per run, committed with the record


@needs_mnist
def test_eval_test_false_computes_no_test_number_and_trains_the_same(runs):
    a, b = runs["with_test"], runs["no_test"]
    rows_a, rows_b = _metrics(a), _metrics(b)
    assert not [k for k in rows_b[0] if k.startswith("test_")]
    for ra, rb in zip(rows_a, rows_b, strict=True):  # evaluating the test set changes nothing else
        for k in ("epoch", "step", "train_loss", "train_acc", "val_loss", "val_acc", "step_loss"):
            assert ra[k] == rb[k], k
    s = _summary(b)
    for k in ("final_test_acc", "final_test_loss", "best_test_acc", "test_acc_at_best_epoch",
              "first_epoch_test_acc", "generalization_gap", "loss_gap", "epochs_to_target",
              "seconds_to_target", "steps_to_target"):
        assert s[k] is None, k
    assert s["status"] == "completed" and s["best_epoch"] == _summary(a)["best_epoch"]
    p = read_predictions(b / "predictions.npz")
    assert p.labels("test") is None and p.get("test", "final") is None and p.test_fingerprint == ""
    assert np.array_equal(p.get("val", "final"), read_predictions(a / "predictions.npz").get("val", "final"))
    # the same run: re-running without the key skips it as finished (not part of the identity)
    r = run_cli(["train", *ARGS, f"out_root={b.parent.parent}"], cwd=b.parent.parent)
    assert r.returncode == 0 and "already completed, skipping" in r.stdout + r.stderr


def test_reading_predictions_never_unpickles(tmp_path):
    class Boom:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "ran",))

    bad = tmp_path / "predictions.npz"
    with zipfile.ZipFile(bad, "w") as z:  # an object array: only np.load(allow_pickle=True) would run it
        buf = io.BytesIO()
        np.save(buf, np.array([Boom()], dtype=object), allow_pickle=True)
        z.writestr("test_labels.npy", buf.getvalue())
    with pytest.raises(ValueError, match="predictions"):
        read_predictions(bad)
    assert not (tmp_path / "ran").exists()
    (tmp_path / "junk.npz").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match="not a readable predictions file"):
        read_predictions(tmp_path / "junk.npz")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Two arms x two seeds of a tiny MLP, reported against a one-claim file."""
    root = tmp_path_factory.mktemp("sweep")
    r = run_cli(["train", "-m", *TINY, "data.train_size=1000", "train.epochs=1", "device=cpu", "train.threads=1",
                 "reg=none,batchnorm", "seed=0,1", f"out_root={root}", "name=s"], cwd=root, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    claims = root / "claims.yaml"
    claims.write_text("claims:\n  - {id: U1, text: BN beats none, a: {reg: batchnorm}, b: {reg: none}, "
                      "quantity: final_test_acc, expect: greater}\n")
    r = run_cli(["report", str(root / "s"), "--claims", str(claims), "--no-progress"], cwd=root)
    assert r.returncode == 0, r.stderr[-2000:]
    return root / "s"


@needs_mnist
def test_accuracy_claims_carry_the_interval_over_seeds_and_test_images(sweep):
    import pandas as pd
    from dropbn.stats.crossed import correctness, crossed_difference
    row = pd.read_csv(sweep / "report" / "tables" / "claims.csv").set_index("claim").loc["U1"]

    def arm(reg):
        ps = [read_predictions(d / "predictions.npz") for d in sorted(sweep.glob(f"*,reg={reg},seed=*"))]
        assert len(ps) == 2
        return np.vstack([correctness(p.get("test", "final")[None, :], p.labels("test")) for p in ps])

    expect = crossed_difference(arm("batchnorm"), arm("none"))
    assert row["images_ci_low"] == pytest.approx(expect.lo * 100, rel=1e-9)
    assert row["images_ci_high"] == pytest.approx(expect.hi * 100, rel=1e-9)
    assert row["images_p"] == pytest.approx(expect.p, rel=1e-9)
    assert row["diff"] == pytest.approx(expect.diff * 100, rel=1e-9)  # the same runs, the same difference
    # the test images add their own sampling noise to the seeds' (its degrees of freedom, and so the
    # width, can still come out below the seed-only Welch interval's when the seeds are few)
    assert expect.se >= expect.se_seeds > 0 and expect.se_images >= 0
    assert "Test images as a sample" in (sweep / "report" / "report.md").read_text()


def test_timing_rows_need_runs_that_trained_alone_on_one_kind_of_machine():
    import pandas as pd
    from dropbn.report.measures import unequal_conditions
    alone = pd.DataFrame({"env_parallel_runs": [1, 1], "env_platform": ["x", "x"], "env_cpu_count": [2, 2]})
    assert unequal_conditions(alone, alone) == ""
    assert unequal_conditions(alone, alone.assign(env_parallel_runs=[1, 2])) == "up to 2 runs shared the machine"
    assert unequal_conditions(alone, alone.drop(columns="env_parallel_runs")) == "runs sharing the machine not recorded"
    assert unequal_conditions(alone, alone.assign(env_platform=["y", "y"])) == "machines differ"
