"""The numbers of the report as DataFrames: per-configuration statistics, the
article's comparison table, the claims check and the optional sections.

Accuracy statistics use completed runs only; diverged / failed / unfinished
runs are counted per configuration and listed by name elsewhere.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import DropbnError
from ..summary import MODES, inf_column, vs_column
from . import stats
from .collect import Collection, make_label, ordered_labels

PURPOSE = {
    "none": "baseline: neither regularisation nor normalisation",
    "dropout": "regularisation: prevents co-adaptation / overfitting",
    "batchnorm": "stabilise and speed up optimisation (normalise layer inputs)",
}
PURPOSE["both"] = PURPOSE["dropout"] + "; " + PURPOSE["batchnorm"]
PURPOSE["dropout_before_bn"] = PURPOSE["both"] + " (dropout placed before batch norm)"

# (column, scale for display, digits, unit) of the per-configuration statistics
METRICS = {
    "final_test_acc": (100, 2, "%"), "best_test_acc": (100, 2, "%"), "first_epoch_test_acc": (100, 2, "%"),
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
                "Best test accuracy": cell(r, "best_test_acc"),
                "↳ final test acc. vs baseline (pp)": _rel(r, brow, "final_test_acc", "diff", 100, "{:+.2f}"),
                "Overfitting: train − test accuracy (pp)": cell(r, "generalization_gap"),
                "Overfitting: test − train loss": cell(r, "loss_gap"),
                "Compute: seconds per epoch": cell(r, "seconds_per_epoch"),
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


# ---------------------------------------------------------------- claims

BASE = "BASE"                # b = the baseline configuration of the context
BEST_SINGLE = "BEST_SINGLE"  # b = the better of 'dropout' and 'batchnorm' (by mean of the metric)


@dataclass(frozen=True)
class Claim:
    id: str
    text: str        # what the article says
    a: str           # kind of configuration a
    b: str           # kind of configuration b, or BASE / BEST_SINGLE
    metric: str      # a runs.csv column, or epochs_to_target_censored
    expect: int      # expected sign of a - b if the claim holds
    test: str        # "mean" (Welch t-test) or "spread" (Levene test)


CLAIMS = [
    Claim("1", "Dropout slows training down (more epochs to the target accuracy)", "dropout", BASE,
          "epochs_to_target_censored", +1, "mean"),
    Claim("2a", "Batch norm speeds training up (fewer epochs to the target accuracy)", "batchnorm", BASE,
          "epochs_to_target_censored", -1, "mean"),
    Claim("2b", "Batch norm speeds training up (fewer seconds to the target accuracy)", "batchnorm", BASE,
          "seconds_to_target", -1, "mean"),
    Claim("3", "Dropout improves generalization (smaller train − test accuracy gap)", "dropout", BASE,
          "generalization_gap", -1, "mean"),
    Claim("4", "Batch norm improves accuracy (higher final test accuracy)", "batchnorm", BASE,
          "final_test_acc", +1, "mean"),
    Claim("5", "Batch norm improves stability (smaller spread of final test accuracy across seeds)",
          "batchnorm", BASE, "final_test_acc", -1, "spread"),
    Claim("6", "Batch norm adds compute overhead (more seconds per epoch)", "batchnorm", BASE,
          "seconds_per_epoch", +1, "mean"),
    Claim("7", "Dropout and batch norm combined give the best result (final test accuracy above the best "
          "single one)", "both", BEST_SINGLE, "final_test_acc", +1, "mean"),
    Claim("8", "Dropout placed before batch norm hurts (lower final test accuracy than dropout after it)",
          "dropout_before_bn", "both", "final_test_acc", -1, "mean"),
]
CLAIM_NOTES = (
    "Epochs to target: a completed run that never reached the target counts as epochs completed + 1 "
    "(a lower bound) in claims 1 and 2a. Seconds to target (2b) use only runs that reached it. "
    "Only completed runs enter a claim; diverged runs are counted in the tables above."
)
SCALE = {"final_test_acc": 100, "generalization_gap": 100}


def _values(runs, label, metric) -> pd.Series:
    done = completed(runs[runs["label"].astype(str) == label])
    if metric == "epochs_to_target_censored":
        return done["epochs_to_target"].fillna(done["epochs_completed"] + 1).astype(float)
    return done[metric].astype(float) if metric in done else pd.Series(dtype=float)


def claims(coll: Collection, base: dict) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """(one row per claim checked per context, [(claim, why skipped)])."""
    runs = with_context(coll)
    rows, skipped = [], []
    for ctx, g in runs.groupby("context", sort=False):
        by_kind = {}
        for lab, kind in zip(g["label"].astype(str), g["kind"]):
            by_kind.setdefault(kind, lab)
        b = base.get(ctx)
        where = "" if ctx == "all" else f" [{ctx}]"
        for c in CLAIMS:
            la = by_kind.get(c.a)
            if c.b == BASE:
                lb = b
            elif c.b == BEST_SINGLE:
                singles = [by_kind[k] for k in ("dropout", "batchnorm") if k in by_kind]
                means = {lab: _values(g, lab, c.metric).mean() for lab in singles}
                means = {k: v for k, v in means.items() if not pd.isna(v)}
                lb = max(means, key=means.get) if len(means) == 2 else None
            else:
                lb = by_kind.get(c.b)
            if la is None or lb is None or la == lb:
                need = {BASE: "the baseline", BEST_SINGLE: "both 'dropout' and 'batchnorm' (with results)"}
                miss = c.a if la is None else need.get(c.b, repr(c.b))
                skipped.append((f"{c.id}{where}", f"no {miss if miss.startswith(('the', 'both')) else repr(miss)} "
                                                  "configuration in these runs"))
                continue
            va, vb = _values(g, la, c.metric), _values(g, lb, c.metric)
            t = stats.compare_means(va, vb, c.expect) if c.test == "mean" else \
                stats.compare_spread(va, vb, c.expect)
            sc = SCALE.get(c.metric, 1)
            rows.append({"claim": c.id, "context": ctx, "text": c.text, "a": la, "b": lb,
                         "quantity": c.metric + (" (std)" if c.test == "spread" else ""),
                         "mean_a": t.mean_a * sc, "mean_b": t.mean_b * sc, "diff": t.diff * sc,
                         "test": "Levene" if c.test == "spread" else "Welch", "p": t.p,
                         "n_a": t.n_a, "n_b": t.n_b, "verdict": t.verdict, "note": t.note, "scale": sc})
    return pd.DataFrame(rows), skipped


# ---------------------------------------------------------------- optional sections

def chance_or_acc(runs: pd.DataFrame) -> pd.DataFrame:
    """Completed runs with their final test accuracy; diverged runs at chance (1 / classes)."""
    r = runs[runs["status"].isin(["completed", "diverged"])].copy()
    chance = 1.0 / r["num_classes"].astype(float)
    r["acc_for_plot"] = np.where(r["status"] == "diverged", chance, r["final_test_acc"].astype(float))
    return r


def sweep_table(df: pd.DataFrame, x: str, y: str, order, count_diverged: bool = False) -> pd.DataFrame:
    """Rows = series (df['series']), columns = values of x: 'mean ± CI (n)' of y (in %), completed runs."""
    xs = sorted(df[x].dropna().unique())
    out = {}
    for s in order:
        g = df[df["series"] == s]
        row = {}
        for xv in xs:
            h = g[g[x] == xv]
            txt = stats.fmt_ci(stats.mean_ci(completed(h)[y]), 100, 2)
            if count_diverged:
                txt += f"; {int((h['status'] == 'diverged').sum())} diverged"
            row[f"{xv:g}"] = txt
        out[s] = row
    return pd.DataFrame(out).T


def _vs_ci(g: pd.DataFrame, key: str, scale, digits) -> str:
    return stats.fmt_ci(stats.mean_ci(g[vs_column(key)]), scale, digits)


def variance_shift_table(coll: Collection) -> pd.DataFrame:
    runs = completed(coll.runs)
    ratio = vs_column("worst_mean_ratio")
    runs = runs[runs[ratio].notna()] if ratio in runs else runs.iloc[:0]
    rows = []
    for label, g in runs.groupby("label", observed=True):
        rows.append({
            "configuration": str(label),
            "worst layer": ", ".join(sorted(set(g[vs_column("worst_layer")].astype(str)))),
            "worst-layer mean variance ratio": _vs_ci(g, "worst_mean_ratio", 1, 3),
            "worst-layer max variance ratio": _vs_ci(g, "worst_max_ratio", 1, 3),
            "test acc. (running stats)": _vs_ci(g, "test_acc", 100, 2),
            "test acc. (BN statistics recalibrated)": _vs_ci(g, "test_acc_recalibrated", 100, 2),
        })
    return pd.DataFrame(rows)


def variance_layers(coll: Collection) -> pd.DataFrame:
    """Long table: configuration, run, layer, mean_ratio, max_ratio."""
    runs = completed(coll.runs)
    rows = []
    col = vs_column("layers")
    if col in runs:
        for _, r in runs.iterrows():
            for lay in r[col] if isinstance(r[col], list) else []:
                rows.append({"configuration": str(r["label"]), "run": r["run"], "layer": lay.get("name"),
                             "mean_ratio": lay.get("mean_ratio"), "max_ratio": lay.get("max_ratio")})
    return pd.DataFrame(rows, columns=["configuration", "run", "layer", "mean_ratio", "max_ratio"])


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
