"""Published numbers that a report sets next to its own, defined once.

An anchor names the data sets, model and regularisation kind (collect.reg_kind) it matches, the
published test error or accuracy and the published setting. A report lists, for every configuration
that matches an anchor (and trained on the full training set), dropbn's number for it (mean ± 95% CI
over its completed runs, with how many runs did not complete) and that configuration's own settings
beside the published ones, so the setting difference is read off one row. Pure: no torch, no file
access.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from ..base.datasets import DATASETS
from .. import stats
from ..record.identity import fmt_value


@dataclass(frozen=True)
class Anchor:
    source: str                   # who published it, and where
    data: tuple[str, ...]         # data.name values it applies to (or an image folder with their label)
    model: str                    # model.name
    kind: str                     # the report kind of the matching configuration
    published: float              # in percent
    error: bool                   # True: a test error (100 - accuracy); False: a test accuracy
    setting: str                  # the published setting, in brief
    needs: tuple[str, ...] = field(default=())  # config keys (flattened) that must be set (not null/0)


MNIST_MLP = dict(data=("mnist",), model="mlp")
FASHION_MLP = dict(data=("fashion_mnist",), model="mlp")
CIFAR_CNN = dict(data=("cifar10", "cifar10_jpeg"), model="cnn")
ANCHORS: tuple[Anchor, ...] = (
    Anchor("Srivastava et al. 2014, Table 2", **MNIST_MLP, kind="none", published=1.60, error=True,
           setting="standard neural net (Simard et al. 2003): logistic units, 2 layers of 800, no dropout"),
    Anchor("Srivastava et al. 2014, Table 2", **MNIST_MLP, kind="dropout", published=1.25, error=True,
           setting="ReLU MLP 3x1024, dropout 0.2 on the input and 0.5 on hidden units, 60,000 training images"),
    Anchor("Srivastava et al. 2014, Table 2", **MNIST_MLP, kind="dropout", published=1.06, error=True,
           setting="the same with max-norm on each unit's incoming weights", needs=("reg.max_norm",)),
    # a submitted entry of the Fashion-MNIST benchmark table (listed as 0.900, not re-run by the data set's
    # authors); the submitter's code (its last version, 2017-08-29) trains a plain ReLU MLP with no dropout
    # or batch norm; it prints the test-set accuracy after every epoch and its README quotes one (which epoch's
    # is not stated)
    Anchor("Fashion-MNIST benchmark table (Xiao et al. 2017 repository; entry by lianghong, not re-run by the "
           "authors)", **FASHION_MLP, kind="none", published=90.05, error=False,
           setting="ReLU MLP 256-128-64, no dropout or batch norm, inputs scaled to [0, 1], 60,000 training images, "
                   "25 epochs, SGD lr 0.1 momentum 0.8, batch 200; one run"),
    Anchor("Garbin et al. 2020", **CIFAR_CNN, kind="batchnorm", published=84.47, error=False,
           setting="their CNN with batch norm on CIFAR-10 (the original images)"),
    Anchor("Garbin et al. 2020", **CIFAR_CNN, kind="none", published=80.21, error=False,
           setting="their standard CNN (no batch norm) on CIFAR-10 (the original images)"),
)


def _set(v) -> bool:
    """A config value that switches something on (not null, NaN, 0 or false)."""
    return fmt_value(v) not in ("null", "None", "0", "0.0", "false", "False", "")


def full_training_set(a: Anchor, row) -> bool:
    """Whether the run trained on all of the data set's training images but its validation split: a
    published number is for the whole training set, so a subset (a data-size study's 1k images) is no
    match for it. A run whose image count is unknown counts as full unless data.train_size is set."""
    used = pd.to_numeric(row.get("train_size_used"), errors="coerce")
    if pd.isna(used):
        return not _set(row.get("cfg.data.train_size"))
    val = pd.to_numeric(row.get("cfg.data.val_size"), errors="coerce")
    return used + (0 if pd.isna(val) else val) >= min(DATASETS[d].train_images for d in a.data)


def applies(a: Anchor, row) -> bool:
    """Whether anchor `a` is about the configuration of `row` (a run of it)."""
    labels = {DATASETS[d].label for d in a.data}  # an image folder of the data set carries its label
    return ((str(row.get("cfg.data.name")) in a.data or str(row.get("data")) in labels)
            and str(row.get("cfg.model.name")) == a.model
            and str(row.get("kind")) == a.kind and all(_set(row.get(f"cfg.{k}")) for k in a.needs)
            and full_training_set(a, row))


def setting_here(row) -> str:
    """A configuration's settings, in the terms the published settings are given in. Config values
    are read as text (record.identity.fmt_value), so runs read back from a runs.csv give the same line."""
    def get(key) -> str:
        return fmt_value(row.get(f"cfg.{key}"))
    name, label = get("data.name"), row.get("data")
    parts = [str(label) if isinstance(label, str) else DATASETS[name].label if name in DATASETS else name]
    if get("model.name") == "mlp":
        parts.append("ReLU MLP " + get("model.hidden").strip("[]").replace(" ", "").replace(",", "x"))
    elif get("model.name") == "cnn":
        parts.append(f"CNN conv {get('model.channels')} dense {get('model.fc')}")
    n = row.get("train_size_used")
    if _set(n):
        parts.append(f"{int(n):,} training images")
    if _set(row.get("cfg.data.augment")):
        parts.append("augmentation")
    if _set(row.get("cfg.reg.input_dropout")):
        parts.append(f"input dropout {get('reg.input_dropout')}")
    if "dropout" in str(row.get("kind")) and _set(row.get("cfg.reg.dropout")):
        parts.append(f"dropout {get('reg.dropout')}")
    parts.append(f"max-norm {get('reg.max_norm')}" if _set(row.get("cfg.reg.max_norm")) else "no max-norm")
    steps = row.get("cfg.train.steps")
    budget = f"{int(float(steps)):,} steps" if _set(steps) else f"{get('train.epochs')} epochs"
    sched = get("train.schedule")
    parts.append(budget + (f", {sched} lr schedule" if _set(sched) and sched != "none" else ", constant lr"))
    parts.append(f"{get('optim.name')} lr {get('optim.lr')}")
    return ", ".join(parts)


def anchor_table(runs: pd.DataFrame, gs: pd.DataFrame) -> pd.DataFrame:
    """One row per (anchor, matching configuration): the published number, ours with its 95% CI over
    completed runs (at the epoch picked on validation when the runs hold out a validation split, else
    at the last epoch), ours − published, and both settings. Empty when no anchor applies."""
    firsts = runs[runs["has_config"]].drop_duplicates("label") if "has_config" in runs else runs.iloc[:0]
    by_label = {str(r["configuration"]): r for _, r in gs.iterrows()}
    rows = []
    for a in ANCHORS:
        for _, run in firsts.iterrows():
            g = by_label.get(str(run["label"]))
            if g is None or not applies(a, run):
                continue
            metric = "val_selected_test_acc" if g.get("val_selected_test_acc_n", 0) > 0 else "final_test_acc"
            ci = stats.CI(int(g[f"{metric}_n"]), g[f"{metric}_mean"], g[f"{metric}_std"], g[f"{metric}_ci95"])
            what = "test error" if a.error else "test accuracy"
            ours, diff = "–", "–"
            if ci.n and math.isfinite(ci.mean):
                mean = 100 * (1 - ci.mean) if a.error else 100 * ci.mean
                half = 100 * ci.half if math.isfinite(ci.half) else math.nan
                ours = f"{mean:.2f}%" + (f" ± {half:.2f}" if math.isfinite(half) else "")
                d = mean - a.published
                diff = f"{d:+.2f}" + (f" [{d - half:+.2f}, {d + half:+.2f}]" if math.isfinite(half) else "")
            lost = int(g["runs"]) - int(g["completed"])
            rows.append({"source": a.source, "quantity": what, "published": f"{a.published:.2f}%",
                         "published setting": a.setting, "configuration here": str(run["label"]),
                         "ours (mean ± 95% CI)": ours, "ours − published (pp)": diff,
                         "n": f"{ci.n} completed" + (f", {lost} not completed" if lost else ""),
                         "at": "epoch picked on validation" if metric == "val_selected_test_acc" else "last epoch",
                         "setting here": setting_here(run)})
    return pd.DataFrame(rows)
