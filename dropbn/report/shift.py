"""Variance shift (Li et al. 2019) from the runs' diagnostics, as DataFrames: a per-configuration
summary (ratios by median and interquartile range, not by mean: a few near-dead channels dominate
means), a per-layer long table on test and, where measured, training data, and the correlation
across runs between the shift and the accuracy change when the BN statistics are re-estimated.

Ratios r are running variance / the variance the layer sees in eval mode; the symmetric form
max(r, 1/r) (Li et al.'s plots) treats a shift down like one up.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..record.summary import vs_column
from .. import stats
from .collect import Collection
from .markdown import fmt_robust

DATA = {"test": "layers", "training": "train_layers"}     # data the ratio is measured on -> per-layer list
WORST = [  # (VarianceShift field, column name in the summary table); worst = the ratio furthest from 1
    ("worst_mean_ratio", "test data, worst layer by mean: mean ratio over channels"),
    ("worst_median_ratio", "test data, worst layer by median: median ratio over channels"),
    ("worst_max_ratio", "test data, worst layer by mean: max ratio over channels"),
    ("train_worst_mean_ratio", "training data, worst layer by median: mean ratio"),
    ("train_worst_median_ratio", "training data, worst layer by median: median ratio"),
    ("train_worst_max_ratio", "training data, worst layer by median: max ratio"),
]
LAYER_NAMES = [("worst_layer", "worst layer by mean (test data)"),
               ("worst_median_layer", "worst layer by median (test data)"),
               ("train_worst_layer", "worst layer by median (training data)")]
LAYER_COLUMNS = ["configuration", "run", "data", "layer", "mean_ratio", "median_ratio", "max_ratio",
                 "median_mean2_over_var"]


def symmetric(r) -> np.ndarray:
    """max(r, 1/r) for r > 0; NaN otherwise."""
    r = np.asarray(r, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(r > 0, np.maximum(r, 1 / r), np.nan)


def shift_runs(coll: Collection) -> pd.DataFrame:
    """Completed runs that carry variance-shift diagnostics."""
    runs = coll.runs[coll.runs["status"] == "completed"]
    col = vs_column("worst_mean_ratio")
    return runs[runs[col].notna()] if col in runs else runs.iloc[:0]


def recalibration_gain(runs: pd.DataFrame) -> pd.Series:
    """Test accuracy change (pp) when the BN statistics are re-estimated with dropout off."""
    return (runs[vs_column("test_acc_recalibrated")].astype(float) - runs[vs_column("test_acc")].astype(float)) * 100


def summary_table(coll: Collection) -> pd.DataFrame:
    runs = shift_runs(coll)
    rows = []
    for label, g in runs.groupby("label", observed=True):
        row = {"configuration": str(label)}
        for key, name in LAYER_NAMES:
            col = vs_column(key)
            if col in g and g[col].notna().any():
                row[name] = ", ".join(sorted(set(g[col].dropna().astype(str))))
        for key, name in WORST:
            col = vs_column(key)
            if col in runs and runs[col].notna().any():
                row[name] = fmt_robust(stats.robust_summary(g[col]), 3)
        row["test acc. (running statistics)"] = stats.fmt_ci(stats.mean_ci(g[vs_column("test_acc")]), 100, 2)
        row["test acc. (BN statistics re-estimated)"] = stats.fmt_ci(
            stats.mean_ci(g[vs_column("test_acc_recalibrated")]), 100, 2)
        row["change (pp)"] = stats.fmt_ci(stats.mean_ci(recalibration_gain(g)), 1, 2)
        rows.append(row)
    return pd.DataFrame(rows)


def layers(coll: Collection) -> pd.DataFrame:
    """One row per (run, data, BN layer) with the mean, median and max ratio over its channels."""
    runs = shift_runs(coll)
    rows = []
    for data, key in DATA.items():
        col = vs_column(key)
        if col not in runs:
            continue
        for _, r in runs.iterrows():
            for lay in r[col] if isinstance(r[col], list) else []:
                rows.append({"configuration": str(r["label"]), "run": r["run"], "data": data,
                             "layer": lay.get("name"), "mean_ratio": lay.get("mean_ratio"),
                             "median_ratio": lay.get("median_ratio"), "max_ratio": lay.get("max_ratio"),
                             "median_mean2_over_var": lay.get("median_mean2_over_var")})
    return pd.DataFrame(rows, columns=LAYER_COLUMNS)


def correlations(coll: Collection) -> pd.DataFrame:
    """Spearman's rho across runs between the symmetric worst-layer ratio and the accuracy change
    after re-estimating the BN statistics, for each ratio the runs carry."""
    runs = shift_runs(coll)
    gain = recalibration_gain(runs)
    rows = []
    for key, name in WORST:
        col = vs_column(key)
        if "max" in key or col not in runs or runs[col].isna().all():
            continue
        c = stats.spearman(symmetric(runs[col]), gain)
        rows.append({"shift (max(r, 1/r) of)": name, "Spearman rho": c.rho, "p": c.p, "runs": c.n})
    return pd.DataFrame(rows)
