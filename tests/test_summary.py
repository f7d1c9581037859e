"""dropbn.record.summary.summarize on hand-made metrics rows: selection on validation, steady-state timing."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from dropbn.record.summary import Summary, best_by_val, steady_seconds_per_epoch, summarize


def cfg(epochs, target=0.9):
    return OmegaConf.create({"seed": 0, "train": {"epochs": epochs, "target_acc": target}})


DATA = SimpleNamespace(label="hand-made", sizes=lambda: {"train": 100, "val": 20, "test": 50})


def rows(test_acc, val_acc=None, epoch_seconds=None):
    out, total = [], 0.0
    for i, te in enumerate(test_acc):
        sec = epoch_seconds[i] if epoch_seconds else 1.0
        total += sec
        r = {"epoch": i + 1, "step": 10 * (i + 1), "train_loss": 0.5, "train_acc": 0.95, "test_loss": 0.4, "test_acc": te,
             "epoch_seconds": sec, "train_seconds": total}
        if val_acc is not None:
            r["val_loss"], r["val_acc"] = 0.3, val_acc[i]
        out.append(r)
    return out


def summary(rs, epochs=None):
    return summarize(rs, cfg(epochs or len(rs)), status="completed", diverged_at=None, params=10, data=DATA,
                     config={}, env={}, epochs=epochs or len(rs), steps=10 * (epochs or len(rs)))


def test_best_epoch_is_chosen_on_validation_not_on_test():
    # test accuracy peaks at epoch 2, validation accuracy at epoch 3: the validation choice wins
    s = summary(rows([0.80, 0.95, 0.90, 0.85], val_acc=[0.70, 0.80, 0.90, 0.85]))
    assert (s["best_epoch"], s["best_epoch_by"]) == (3, "val")
    assert s["test_acc_at_best_epoch"] == 0.90 and s["best_val_acc"] == 0.90
    assert s["best_test_acc"] == 0.95  # the oracle, kept and labelled, never the selection
    assert s["final_val_acc"] == 0.85


def test_val_ties_go_to_the_earliest_epoch_and_nan_is_skipped():
    s = summary(rows([0.5, 0.6, 0.7, 0.8], val_acc=[float("nan"), 0.9, 0.9, 0.8]))
    assert s["best_epoch"] == 2 and s["test_acc_at_best_epoch"] == 0.6
    assert best_by_val(rows([0.5], val_acc=[float("nan")])) is None


def test_without_validation_nothing_is_chosen():
    s = summary(rows([0.80, 0.95, 0.90]))
    assert s["best_epoch"] is None and s["best_epoch_by"] is None and s["test_acc_at_best_epoch"] is None
    assert "best_val_acc" not in s and "final_val_acc" not in s  # optional fields, left out
    assert s["best_test_acc"] == 0.95
    assert {"best_epoch", "best_epoch_by", "test_acc_at_best_epoch"} <= set(s)  # written as null


def test_seconds_per_epoch_is_steady_state():
    s = summary(rows([0.8, 0.85, 0.9, 0.91], epoch_seconds=[10.0, 2.0, 3.0, 4.0]))
    assert s["first_epoch_seconds"] == 10.0
    assert s["seconds_per_epoch"] == pytest.approx(3.0)  # epochs 2..4 only
    assert s["train_seconds"] == pytest.approx(19.0)     # all epochs, warm-up included
    one = summary(rows([0.8], epoch_seconds=[7.0]))
    assert one["first_epoch_seconds"] == one["seconds_per_epoch"] == 7.0  # N = 1: epoch 1's own
    assert steady_seconds_per_epoch([]) is None


def test_targets_stay_measured_on_test():
    s = summary(rows([0.80, 0.92, 0.95], val_acc=[0.95, 0.95, 0.95], epoch_seconds=[5.0, 1.0, 1.0]))
    assert s["epochs_to_target"] == 2 and s["seconds_to_target"] == pytest.approx(6.0)


def test_no_rows():
    s = summary([], epochs=3)
    assert s["epochs_completed"] == 0
    for k in ("best_epoch", "best_epoch_by", "test_acc_at_best_epoch", "first_epoch_seconds",
              "seconds_per_epoch", "best_test_acc"):
        assert s[k] is None, k
    assert Summary.from_json(s).to_json() == s


def test_git_commit_is_dirty_for_code_changes_not_for_run_records(tmp_path):
    """summary.json env.git_commit: "+dirty" marks code that differs from its commit; committed run
    records and reports under results/ (the default out_root) are outputs and do not count."""
    import subprocess

    from dropbn.train.checkpoint import git_commit

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "dropbn").mkdir()
    (tmp_path / "results" / "study").mkdir(parents=True)
    (tmp_path / "dropbn" / "train.py").write_text("x = 1\n")
    (tmp_path / "results" / "study" / "sweep_times.txt").write_text("a\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert git_commit(tmp_path) == rev
    (tmp_path / "results" / "study" / "sweep_times.txt").write_text("a\nb\n")  # a record appended
    (tmp_path / "results" / "new_run.txt").write_text("untracked\n")
    assert git_commit(tmp_path) == rev
    (tmp_path / "dropbn" / "train.py").write_text("x = 2\n")  # the code changed
    assert git_commit(tmp_path) == rev + "+dirty"
