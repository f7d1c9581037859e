"""The numbers of the report as DataFrames: per-configuration statistics, the
article's comparison table and the optional sections' tables (the claims check is claims.py).

Per-configuration statistics describe completed runs; diverged / failed / unfinished
runs are counted per configuration and listed by name elsewhere (the claims enter them).
"""
from __future__ import annotations

import math
import pandas as pd

from ..base.errors import DropbnError
from ..record.states import FINISHED
from ..record.summary import MODES, inf_column
from .. import stats
from .collect import Collection, make_label
from .measures import failed_to_train
from .measures import steady_state as steady_state_runs

PURPOSE = {
    "none": "baseline: neither regularisation nor normalisation",
    "dropout": "regularisation: prevents co-adaptation / overfitting",
    "batchnorm": "stabilise and speed up optimisation (normalise layer inputs)",
}
PURPOSE["both"] = PURPOSE["dropout"] + "; " + PURPOSE["batchnorm"]
PURPOSE["dropout_before_bn"] = PURPOSE["both"] + " (dropout placed before batch norm)"
PURPOSE["dropout_after_bn"] = PURPOSE["both"] + " (dropout placed right after batch norm)"

# (column, scale for display, digits, unit) of the per-configuration statistics
METRICS = {
    "final_test_acc": (100, 2, "%"), "best_test_acc": (100, 2, "%"), "val_selected_test_acc": (100, 2, "%"),
    "first_epoch_test_acc": (100, 2, "%"), "first_epoch_seconds": (1, 2, " s"),
    "final_train_acc": (100, 2, "%"), "generalization_gap": (100, 2, " pp"), "loss_gap": (1, 4, ""),
    "final_test_loss": (1, 4, ""), "epochs_to_target": (1, 1, ""), "seconds_to_target": (1, 1, " s"),
    "seconds_per_epoch": (1, 2, " s"), "train_seconds": (1, 1, " s"), "params": (1, 0, ""),
}
STATUSES = ("completed", "diverged", "failed", "unfinished")


def purpose(kind: str) -> str:
    if kind in PURPOSE:
        return PURPOSE[kind]
    if "norm" in kind:  # layer / group norm variants
        base = "normalise layer inputs per sample (" + kind.split("+")[0].replace("dropout_before_", "") + ")"
        return base + ("; " + PURPOSE["dropout"] if "dropout" in kind else "")
    return "unknown"


def completed(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["status"] == "completed"]


def context_of(row, dims) -> str:
    return make_label(row, dims, drop=("kind",))


def with_context(coll: Collection) -> pd.DataFrame:
    runs = coll.runs.copy()
    runs["context"] = [context_of(r, coll.dims) for _, r in runs.iterrows()]
    return runs


# ---------------------------------------------------------------- per configuration

def group_stats(coll: Collection) -> pd.DataFrame:
    """One row per configuration: run counts and mean / CI half-width / std / n of each metric."""
    runs = with_context(coll)
    out = []
    for label, g in runs.groupby("label", observed=True, sort=True):
        first = g.iloc[0]
        row = {"configuration": label, "kind": first["kind"], "context": first["context"], "runs": len(g)}
        for s in STATUSES:
            row[s] = int((g["status"] == s).sum())
        row["target_acc"] = first.get("target_acc")
        done = completed(g)
        for m in METRICS:
            vals = done[m] if m in done else []
            ci = stats.mean_ci(vals)
            row.update({f"{m}_mean": ci.mean, f"{m}_ci95": ci.half, f"{m}_std": ci.std, f"{m}_n": ci.n})
        row["reached_target"] = int(done["epochs_to_target"].notna().sum()) if "epochs_to_target" in done else 0
        row["steady_state"] = steady_state_runs(done)
        out.append(row)
    return pd.DataFrame(out)


def cell(gs_row, metric) -> str:
    scale, digits, unit = METRICS[metric]
    ci = stats.CI(int(gs_row[f"{metric}_n"]), gs_row[f"{metric}_mean"], gs_row[f"{metric}_std"],
                  gs_row[f"{metric}_ci95"])
    return stats.fmt_ci(ci, scale, digits, unit)


def parse_baseline(spec: str) -> tuple[str, str]:
    if not spec or "=" not in spec:
        raise DropbnError(f"--baseline {spec!r}: expected KEY=VALUE, e.g. reg=none or optim.lr=0.1")
    k, v = spec.split("=", 1)
    return k.strip(), v.strip()


def matches(row, spec: tuple[str, str]) -> bool:
    key, value = spec
    if key == "reg":
        return row["kind"] == value
    have = row.get(f"cfg.{key}")
    if have is None or (isinstance(have, float) and math.isnan(have)):
        return False
    if str(have) == value:
        return True
    try:
        return float(have) == float(value)
    except (TypeError, ValueError):
        return False


def baselines(coll: Collection, spec) -> dict:
    """{context: baseline configuration label or None}; baseline = the configuration matching
    the spec among those sharing every other varying setting (preferring kind 'none')."""
    runs = with_context(coll)
    out = {}
    for ctx, g in runs.groupby("context", sort=False):
        hits = g[[matches(r, spec) for _, r in g.iterrows()]]
        labels = list(dict.fromkeys(hits["label"].astype(str)))
        if len(labels) > 1:
            none = [lab for lab in labels if hits[hits["label"].astype(str) == lab]["kind"].iloc[0] == "none"]
            labels = none[:1] or labels[:1]
        out[ctx] = labels[0] if labels else None
    return out


ORACLE = "Best test accuracy (oracle: epoch picked on the test set; in no claim)"
SECONDS_PER_EPOCH = {True: "Compute: seconds per epoch (steady state, first epoch excluded)",
                     False: "Compute: seconds per epoch (first epoch included)"}


def steady_state(gs: pd.DataFrame) -> bool:
    """Whether every configuration's seconds per epoch are steady state (group_stats' steady_state)."""
    return bool(len(gs)) and bool(gs["steady_state"].all())


def comparison_table(gs: pd.DataFrame, base: dict) -> dict[str, pd.DataFrame]:
    """{context: the article's comparison table, measured} -- one column per configuration."""
    tables = {}
    for ctx, g in gs.groupby("context", sort=False):
        b = base.get(ctx)
        brow = gs[gs["configuration"].astype(str) == b].iloc[0] if b is not None and \
            (gs["configuration"].astype(str) == b).any() else None
        cols = {}
        targets = g["target_acc"].dropna().unique()
        tt = f"{targets[0] * 100:g}%" if len(targets) == 1 else "target"
        steady = steady_state(g)
        val = (g["val_selected_test_acc_n"] > 0).any()
        for _, r in g.iterrows():
            c = {
                "Purpose": purpose(r["kind"]),
                "Runs (completed / diverged / failed / unfinished)":
                    f"{r['completed']} / {r['diverged']} / {r['failed']} / {r['unfinished']}",
                f"Epochs to {tt} test acc. (runs that reached it)":
                    cell(r, "epochs_to_target") + f", reached {r['reached_target']}/{r['completed']}",
                "↳ epochs to target vs baseline (difference)": _rel(r, brow, "epochs_to_target", "diff", 1, "{:+.1f}"),
                f"Seconds to {tt} test acc.": cell(r, "seconds_to_target"),
                "↳ seconds to target vs baseline (ratio)": _rel(r, brow, "seconds_to_target", "ratio", 1, "×{:.2f}"),
                "Test acc. after epoch 1": cell(r, "first_epoch_test_acc"),
                "Final test accuracy": cell(r, "final_test_acc"),
                **({"Test acc. at the epoch picked on validation": cell(r, "val_selected_test_acc")} if val else {}),
                ORACLE: cell(r, "best_test_acc"),
                "↳ final test acc. vs baseline (pp)": _rel(r, brow, "final_test_acc", "diff", 100, "{:+.2f}"),
                "Overfitting: train − test accuracy (pp)": cell(r, "generalization_gap"),
                "Overfitting: test − train loss": cell(r, "loss_gap"),
                SECONDS_PER_EPOCH[steady]: cell(r, "seconds_per_epoch"),
                **({"Compute: first epoch (s)": cell(r, "first_epoch_seconds")} if steady else {}),
                "↳ seconds per epoch vs baseline (ratio)": _rel(r, brow, "seconds_per_epoch", "ratio", 1, "×{:.2f}"),
                "Compute: parameters": _params(r),
                "Stability: std of final test acc. across seeds (pp)": _std(r, "final_test_acc", 100),
            }
            cols[str(r["configuration"])] = c
        tables[ctx] = pd.DataFrame(cols)
    return tables


def _rel(r, brow, metric, how, scale, fmt) -> str:
    if brow is None:
        return "– (no baseline)"
    if r["configuration"] == brow["configuration"]:
        return "baseline"
    a, b = r[f"{metric}_mean"], brow[f"{metric}_mean"]
    if pd.isna(a) or pd.isna(b) or (how == "ratio" and b == 0):
        return "–"
    return fmt.format((a - b) * scale if how == "diff" else a / b)


def _params(r) -> str:
    v = r["params_mean"]
    return "–" if pd.isna(v) else f"{v:,.0f}"


def _std(r, metric, scale) -> str:
    v, n = r[f"{metric}_std"], int(r[f"{metric}_n"])
    return f"{v * scale:.2f} (n={n})" if not pd.isna(v) else f"– (n={n})"


# ---------------------------------------------------------------- optional sections

def chance_or_acc(runs: pd.DataFrame) -> pd.DataFrame:
    """Completed runs with their final test accuracy; diverged runs at chance (1 / classes)."""
    r = runs[runs["status"].isin(FINISHED) & ~((runs["status"] == "diverged")
                                                                & runs["num_classes"].isna())].copy()
    r["acc_for_plot"] = stats.intention_to_treat(r["final_test_acc"].astype(float), r["status"] == "diverged",
                                                 r["num_classes"].astype(float)).values
    return r


def sweep_table(df: pd.DataFrame, x: str, y: str, order, count_failed: bool = False) -> pd.DataFrame:
    """Rows = series (df['series']), columns = values of x: 'mean ± CI (n)' of y (in %), completed runs;
    with count_failed, each cell adds the runs that failed to train (measures.failed_to_train) out of
    the completed and diverged ones, and how they failed."""
    xs = sorted(df[x].dropna().unique())
    failed = failed_to_train(df)
    out = {}
    for s in order:
        g = df[df["series"] == s]
        row = {}
        for xv in xs:
            h = g[g[x] == xv]
            txt = stats.fmt_ci(stats.mean_ci(completed(h)[y]), 100, 2)
            h = h[h["status"].isin(FINISHED)]
            if count_failed and len(h):
                k, diverged = int(failed[h.index].sum()), int((h["status"] == "diverged").sum())
                how = [f"{diverged} diverged" if diverged else "", f"{k - diverged} at chance" if k > diverged else ""]
                txt += f"; failed to train {k}/{len(h)}" + (f" ({', '.join(w for w in how if w)})" if k else "")
            row[f"{xv:g}"] = txt
        out[s] = row
    return pd.DataFrame(out).T


# (Inference field, its name in the table, digits); one column per mode (as trained, BN folded)
INF_SHOWN = [("batch1_ms", "batch-1 latency, {} (ms)", 3), ("batch256_ms", "batch-256 latency, {} (ms)", 2),
             ("throughput", "throughput, {} (samples/s)", 0)]
MODE_NAMES = dict(zip(MODES, ("as trained", "BN folded")))


def inference_table(coll: Collection, base: dict) -> pd.DataFrame:
    runs = completed(with_context(coll))
    present = inf_column("throughput", "as_trained")
    if present not in runs:
        return pd.DataFrame()
    runs = runs[runs[present].notna()]
    latency = inf_column("batch256_ms", "as_trained")
    rows = []
    for label, g in runs.groupby("label", observed=True):
        folded = sorted(set(g[inf_column("bn_layers_folded")].dropna()))
        row = {"configuration": str(label), "BN layers folded": ", ".join(str(int(v)) for v in folded)}
        for key, name, dg in INF_SHOWN:
            for mode in MODES:
                row[name.format(MODE_NAMES[mode])] = stats.fmt_ci(stats.mean_ci(g[inf_column(key, mode)]), 1, dg)
        row["max |folded − as trained| output"] = f"{g[inf_column('fold_max_abs_diff')].max():.2e}"
        b = base.get(g["context"].iloc[0])
        bg = runs[runs["label"].astype(str) == b] if b else runs.iloc[:0]
        if len(bg) and b != str(label):
            ratio = g[latency].mean() / bg[latency].mean()
            row["batch-256 latency vs baseline (as trained)"] = f"{(ratio - 1) * 100:+.1f}%"
        else:
            row["batch-256 latency vs baseline (as trained)"] = "baseline" if b == str(label) else "–"
        rows.append(row)
    return pd.DataFrame(rows)


def placement_table(gs: pd.DataFrame, coll: Collection) -> pd.DataFrame:
    runs = coll.runs
    rows = []
    for _, r in gs.iterrows():
        first = runs[runs["label"].astype(str) == str(r["configuration"])].iloc[0]
        rows.append({"configuration": str(r["configuration"]), "norm": first.get("cfg.reg.norm"),
                     "order": first.get("cfg.reg.order"), "dropout_blocks": first.get("cfg.reg.dropout_blocks"),
                     "dropout": first.get("cfg.reg.dropout"),
                     "final test acc.": cell(r, "final_test_acc"),
                     "train − test acc. (pp)": cell(r, "generalization_gap"),
                     "diverged": r["diverged"]})
    return pd.DataFrame(rows)
