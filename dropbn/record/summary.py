"""summary.json: the typed record of one run, defined once for its writer (train) and its reader (report).

Torch-free. `summarize()` builds a `Summary` at the end of a run; the report
reads the same fields back with `Summary.from_json()`. The `diagnostics` part
(variance shift, BN folding, inference cost; written by dropbn/train/diagnostics.py)
has its own small schema below, and `diagnostic_columns()` flattens it into
the report's vs_* / inf_* columns.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields


def _column(optional: bool = False):
    """A headline scalar: copied into the report's one-row-per-run table under the same name."""
    return field(default=None, metadata={"column": True, "optional": optional})


def _record(optional: bool = False):
    """A structured value (dict) the report reads in its own way."""
    return field(default=None, metadata={"column": False, "optional": optional})


@dataclass
class Summary:
    """The fields of summary.json, in the order they are written. Optional ones are left out when None."""
    status: str | None = field(default=None, metadata={"column": False, "optional": False})
    seed: int | None = _column()
    data: str | None = _column()                    # data set label, e.g. "MNIST"
    data_sizes: dict | None = _record()             # {"train", "val", "test"}: images used
    params: int | None = _column()
    epochs: int | float | None = _column()             # the budget in passes over the training set
    epochs_completed: int | float | None = _column()   # passes done (fractional in a step run)
    final_test_acc: float | None = _column()
    final_test_loss: float | None = _column()
    final_train_acc: float | None = _column()
    final_train_loss: float | None = _column()
    # An oracle, labelled as such: the highest test accuracy over the epochs is chosen on the test set,
    # so it never selects an epoch or a configuration and never enters a claim.
    best_test_acc: float | None = _column()
    # The best epoch is chosen on the validation split (data.val_size > 0): the epoch with the highest
    # val_acc, ties -> the earliest. Without a validation split nothing is chosen: best_epoch,
    # best_epoch_by and test_acc_at_best_epoch are null (never chosen on test).
    best_epoch: int | float | None = _column()
    best_epoch_by: str | None = _column()             # "val", or null without a validation split
    test_acc_at_best_epoch: float | None = _column()  # test accuracy at the validation-selected epoch
    first_epoch_test_acc: float | None = _column()
    generalization_gap: float | None = _column()    # final train acc - final test acc
    loss_gap: float | None = _column()              # final test loss - final train loss
    # Convergence speed, measured on the test set: the first epoch whose test accuracy reaches target_acc
    # and the training seconds up to its end (null if never reached). A measurement, not a selection.
    target_acc: float | None = _column()
    epochs_to_target: int | float | None = _column()  # passes done at the first row at the target
    seconds_to_target: float | None = _column()
    # the budget in optimisation steps (train.steps, else train.epochs x steps per epoch), the steps
    # done, and the steps done at the first metrics row at the target accuracy
    steps: int | None = _column()
    steps_completed: int | None = _column()
    steps_to_target: int | None = _column()
    train_seconds: float | None = _column()         # training seconds of all epochs, warm-up included
    first_epoch_seconds: float | None = _column()   # wall seconds of epoch 1's training (warm-up, compile)
    # Steady state: mean training seconds per epoch over epochs 2..N, leaving out epoch 1's warm-up
    # (epoch 1's seconds when N = 1). Evaluation time is not included. The first epoch after a
    # resume pays warm-up again; it is counted like any other epoch.
    seconds_per_epoch: float | None = _column()
    diverged_at: dict | None = _record()            # {"epoch", "step", "reason"}; see dropbn.train.loop.divergence
    config: dict | None = _record()                 # the resolved config
    env: dict | None = _record()                    # dropbn.train.checkpoint.environment()
    final_val_acc: float | None = _column(optional=True)   # only with a validation split
    best_val_acc: float | None = _column(optional=True)
    final_val_loss: float | None = _column(optional=True)
    diagnostics: dict | None = _record(optional=True)      # see Diagnostics
    error: str | None = _record(optional=True)             # a failed run's exception

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if not (f.metadata["optional"] and getattr(self, f.name) is None)}

    @classmethod
    def from_json(cls, d: dict) -> "Summary":
        """Any summary.json object: missing fields read as None, unknown ones are ignored."""
        return cls(**{f.name: d.get(f.name) for f in fields(cls)})

    def columns(self) -> dict:
        return {name: getattr(self, name) for name in COLUMNS}


COLUMNS = tuple(f.name for f in fields(Summary) if f.metadata["column"])


def steady_seconds_per_epoch(rows: list[dict]) -> float | None:
    """Training seconds per pass over the training set after the first metrics row (epochs 2..N,
    or the evaluation periods after the first with train.steps); the first row's when there is one
    row; None without rows. `epoch` in a row is the passes done so far."""
    if not rows:
        return None
    if len(rows) == 1:
        return rows[0]["epoch_seconds"] / rows[0]["epoch"]
    return sum(r["epoch_seconds"] for r in rows[1:]) / (rows[-1]["epoch"] - rows[0]["epoch"])


def best_by_val(rows: list[dict]) -> dict | None:
    """The metrics row with the highest finite val_acc (ties: the earliest); None without a validation split."""
    cands = [r for r in rows if r.get("val_acc") is not None and math.isfinite(r["val_acc"])]
    return max(cands, key=lambda r: r["val_acc"]) if cands else None  # max keeps the first of equals


def summarize(rows: list[dict], cfg, *, status, diverged_at, params, data, config, env, epochs, steps) -> dict:
    """summary.json of a run: its headline numbers from metrics rows, its config and its environment.
    `epochs`, `steps`: the budget in passes over the training set and in optimisation steps."""
    target = float(cfg.train.target_acc)
    last = rows[-1] if rows else {}
    hit = next((r for r in rows if r.get("test_acc") is not None and r["test_acc"] >= target), None)
    has_val = bool(rows) and "val_acc" in last
    best = best_by_val(rows)
    return Summary(
        status=status, seed=cfg.seed, data=data.label, data_sizes=data.sizes(), params=params,
        epochs=epochs, epochs_completed=last.get("epoch", 0),
        final_test_acc=last.get("test_acc"), final_test_loss=last.get("test_loss"),
        final_train_acc=last.get("train_acc"), final_train_loss=last.get("train_loss"),
        best_test_acc=max((r["test_acc"] for r in rows if "test_acc" in r), default=None),
        best_epoch=best["epoch"] if best else None,
        best_epoch_by="val" if best else None,
        test_acc_at_best_epoch=best.get("test_acc") if best else None,
        first_epoch_test_acc=rows[0].get("test_acc") if rows else None,
        generalization_gap=(last["train_acc"] - last["test_acc"]) if "test_acc" in last else None,
        loss_gap=(last["test_loss"] - last["train_loss"]) if "test_loss" in last else None,
        target_acc=target,
        epochs_to_target=hit["epoch"] if hit else None,
        seconds_to_target=hit["train_seconds"] if hit else None,
        steps=steps, steps_completed=last.get("step", 0), steps_to_target=hit["step"] if hit else None,
        train_seconds=last.get("train_seconds", 0.0),
        first_epoch_seconds=rows[0]["epoch_seconds"] if rows else None,
        seconds_per_epoch=steady_seconds_per_epoch(rows),
        diverged_at=diverged_at, config=config, env=env,
        final_val_acc=last["val_acc"] if has_val else None,
        best_val_acc=best["val_acc"] if best else None,
        final_val_loss=last["val_loss"] if has_val else None,
    ).to_json()


# ---------------------------------------------------------------- summary.json's "diagnostics"

MODES = ("as_trained", "folded")  # the trained model as it is, and with BN folded into Linear/Conv


@dataclass
class VarianceShift:
    """Li et al.'s moving/real variance ratio of every BN layer, on test and on training data.

    Per layer and channel, ratio = running_var / variance of the layer's input in eval mode
    (dropout off) over the data (see dropbn/train/bn.py). Every per-layer dict is
    {"name", "mean_ratio", "median_ratio", "max_ratio"}: the arithmetic mean, median and
    maximum over the layer's channels. `layers` is measured on the test set; `train_layers`
    on training data (un-augmented, the first `train_images` images of a fixed seeded order),
    as Li et al. measure it. The fields after test_acc_recalibrated were added later and read
    as None in older summary.json files.
    """
    layers: list = field(metadata={"per_layer": True})  # test set; per_layer: a list in the report's vs_* columns
    # the worst test layer by its mean ratio: largest |log mean_ratio| (kept for compatibility)
    worst_layer: str | None
    worst_mean_ratio: float | None
    worst_max_ratio: float | None
    # test accuracy with the trained BN statistics, and after BN statistics re-estimation with dropout
    # off (Hendrycks & Gimpel 2016's re-estimation of the BN variance; not one of Li et al.'s remedies,
    # which are dropout after all BN layers, and Uout)
    test_acc: float
    test_acc_recalibrated: float
    # the worst test layer by its median ratio: largest |log median_ratio| (may differ from worst_layer)
    worst_median_layer: str | None = None
    worst_median_ratio: float | None = None
    train_layers: list | None = field(default=None, metadata={"per_layer": True})  # training data
    train_images: int | None = None                      # training images measured
    # the worst training-data layer by its median ratio (largest |log median_ratio|), and its ratios
    train_worst_layer: str | None = None
    train_worst_mean_ratio: float | None = None
    train_worst_median_ratio: float | None = None
    train_worst_max_ratio: float | None = None


@dataclass
class Inference:
    bn_layers_folded: int
    fold_max_abs_diff: float
    batch1_ms: dict = field(metadata={"per_mode": True})     # {mode: milliseconds} for mode in MODES
    batch256_ms: dict = field(metadata={"per_mode": True})
    throughput: dict = field(metadata={"per_mode": True})    # {mode: samples per second} at batch 256


@dataclass
class Diagnostics:
    variance_shift: VarianceShift | None    # None when the model has no BN layer
    inference: Inference

    def to_json(self) -> dict:
        vs = self.variance_shift
        return {"variance_shift": None if vs is None else {f.name: getattr(vs, f.name) for f in fields(vs)},
                "inference": {f.name: getattr(self.inference, f.name) for f in fields(self.inference)}}


def vs_column(key: str) -> str:
    """Report column of a VarianceShift field."""
    return f"vs_{key}"


def inf_column(key: str, mode: str | None = None) -> str:
    """Report column of an Inference field (per-mode fields: one column per mode)."""
    return f"inf_{key}" + (f"_{mode}" if mode else "")


def diagnostic_columns(diag) -> dict:
    """summary.json's diagnostics -> vs_* and inf_* scalar columns; the layer lists kept as lists."""
    out = {}
    if not isinstance(diag, dict):
        return out
    vs = diag.get("variance_shift")
    if isinstance(vs, dict):
        for f in fields(VarianceShift):
            out[vs_column(f.name)] = (vs.get(f.name) or []) if f.metadata.get("per_layer") else vs.get(f.name)
    inf = diag.get("inference")
    if isinstance(inf, dict):
        for f in fields(Inference):
            if f.metadata.get("per_mode"):
                for mode in MODES:
                    out[inf_column(f.name, mode)] = (inf.get(f.name) or {}).get(mode)
            else:
                out[inf_column(f.name)] = inf.get(f.name)
    return out
