"""Write the report: report.md, tables/*.csv|.tex, runs.csv, figures/*.png -- all atomically, all under OUT."""
from __future__ import annotations

import datetime as _dt
import json
import math
import re
from pathlib import Path

import pandas as pd

from ..runs import atomic_write_bytes, atomic_write_text
from . import figures as F
from . import stats, tables as T
from .collect import NORM_NAMES, SHORT, Collection, make_label, ordered_labels

ARTICLE_NOTES = """\
The article this study re-measures gets three things wrong in its code; dropbn does them the standard way:

- Its "dropout" formula is a plain ReLU layer: nothing is dropped at random, so it measures no dropout at all.
  dropbn uses `torch.nn.Dropout` (inverted dropout: units zeroed with probability p during training, the rest scaled by 1/(1−p)).
- Its BatchNorm forgets running statistics: it normalises with the current batch's mean and variance even at test time.
  dropbn uses `torch.nn.BatchNorm1d/2d`, which keeps running estimates during training and uses them in evaluation.
- Its dropout stays on at test time. dropbn evaluates every epoch in eval mode: dropout off, batch norm with running statistics.
"""

GARBIN = ("Garbin, Zhu & Marques (2020) asked whether batch norm really slows inference: they measured "
          "networks with batch norm about 30% slower at test time. Folding each BN layer into the preceding "
          "Linear/Conv (possible in eval mode, where BN is a fixed affine map) removes that cost. "
          "The table measures it here: the same trained model as trained and with BN folded, "
          "and its latency relative to the baseline (no BN).")


# ---------------------------------------------------------------- small formatting helpers

def md_table(df: pd.DataFrame, index: bool = True, index_name: str = "") -> str:
    def esc(v) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "–"
        return str(v).replace("|", "\\|").replace("\n", " ")
    cols = ([index_name or " "] if index else []) + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(esc(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    for idx, row in df.iterrows():
        cells = ([esc(idx)] if index else []) + [esc(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=_-]+", "_", str(s)).strip("_") or "all"


def fmt_p(p) -> str:
    if p is None or not math.isfinite(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def num(v, digits=2) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


LATEX_SUBS = {"±": r"$\pm$", "↳": r"$\hookrightarrow$", "−": "--", "×": r"$\times$", "–": "--"}


def to_latex(df: pd.DataFrame, index: bool = True) -> str:
    tex = df.astype(str).to_latex(index=index, escape=True)
    for a, b in LATEX_SUBS.items():
        tex = tex.replace(a, b)
    return tex


class Writer:
    """Collects the files of one report; everything goes under `out`."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.files: list[str] = []

    def text(self, rel: str, text: str) -> str:
        atomic_write_text(text, self.out / rel)
        self.files.append(rel)
        return rel

    def table(self, name: str, df: pd.DataFrame, index: bool = True, latex: bool = False) -> str:
        rel = self.text(f"tables/{name}.csv", df.to_csv(index=index))
        if latex:
            self.text(f"tables/{name}.tex", to_latex(df, index=index))
        return rel

    def figure(self, name: str, data: bytes) -> str:
        rel = f"figures/{name}.png"
        atomic_write_bytes(data, self.out / rel)
        self.files.append(rel)
        return rel


# ---------------------------------------------------------------- the report

def title_of(runs: pd.DataFrame) -> str:
    data = ", ".join(dict.fromkeys(str(d) for d in runs.get("data", pd.Series(dtype=object)).dropna())) \
        or ", ".join(dict.fromkeys(runs.get("cfg.data.name", pd.Series(dtype=object)).dropna().astype(str)))
    models = []
    for _, r in runs.drop_duplicates([c for c in ("cfg.model.name", "cfg.model.hidden", "cfg.model.channels",
                                                    "cfg.model.fc") if c in runs]).iterrows():
        name = str(r.get("cfg.model.name", "model"))
        if name == "mlp":
            models.append("MLP " + str(r.get("cfg.model.hidden", "")).strip("[]").replace(",", "-"))
        elif name == "cnn":
            models.append(f"CNN conv {r.get('cfg.model.channels')} fc {r.get('cfg.model.fc')}")
        elif name != "nan":
            models.append(name)
    return f"{data or 'unknown data'} · {', '.join(dict.fromkeys(models)) or 'unknown model'}"


SETUP_KEYS = [("data.train_size", "training images"), ("data.val_size", "validation images"),
              ("data.augment", "augmentation"), ("model.hidden", "MLP widths"), ("model.channels", "conv channels"),
              ("model.fc", "dense widths"), ("optim.name", "optimizer"), ("optim.lr", "lr"),
              ("optim.momentum", "momentum"), ("optim.weight_decay", "weight decay"),
              ("train.epochs", "epochs"), ("train.batch_size", "batch size"), ("train.schedule", "lr schedule")]


def _setup_line(runs: pd.DataFrame, varying: set) -> str:
    """The settings every run shares (data size, model widths, optimizer, epochs, ...), as prose."""
    parts = []
    for key, name in SETUP_KEYS:
        col = f"cfg.{key}"
        if key in varying or col not in runs:
            continue
        vals = {str(v) for v in runs[col] if not (isinstance(v, float) and math.isnan(v))}
        if len(vals) != 1:
            continue
        v = vals.pop()
        if v in ("None", "null", "nan", "<NA>"):
            if key != "data.train_size":
                continue
            v = "all"
        parts.append(f"{name} {v}")
    return ", ".join(parts)


def build(coll: Collection, out: Path, baseline: str = "reg=none", sources=(), preamble: str = "",
          sections=()) -> Path:
    """`preamble`: Markdown after the header; `sections`: callables (writer, add) run before
    '## Files' (a study's tuned-hyperparameters section, dropbn/report/study.py)."""
    w = Writer(out)
    runs = coll.runs
    spec = T.parse_baseline(baseline)
    title = title_of(runs)
    order = [str(c) for c in runs["label"].cat.categories]
    cmap = F.colors(order)
    gs = T.group_stats(coll)
    base = T.baselines(coll, spec)
    md: list[str] = []
    add = md.append

    # header
    add(f"# dropout vs. batch norm, measured — {title}\n")
    counts = runs["status"].value_counts()
    add(f"Generated {_dt.datetime.now().isoformat(timespec='seconds')} by `dropbn report` from "
        + ", ".join(f"`{s}`" for s in sources) + ".\n")
    add(f"**{len(runs)} runs** in {len(order)} configuration(s): "
        + ", ".join(f"{int(counts.get(s, 0))} {s}" for s in T.STATUSES) + ".")
    varying = [k for k in coll.varying]
    add("Settings that vary (besides the seed): " + (", ".join(f"`{k}`" for k in varying) if varying else "none")
        + ". Every number is mean ± 95% confidence half-width over seeds (t distribution) with the number "
          "of runs n; accuracy statistics use completed runs only.")
    add(f"Baseline: `{baseline}` (compared with configurations sharing every other varying setting).\n")
    setup = _setup_line(runs, set(varying))
    if setup:
        add(f"Setup (the same for every run): {setup}.\n")
    commits = sorted({str(c) for c in runs.get("git_commit", pd.Series(dtype=object)).dropna()})
    devices = sorted({str(c) for c in runs.get("device_used", pd.Series(dtype=object)).dropna()})
    if commits or devices:
        add("Code versions (git): " + (", ".join(f"`{c}`" for c in commits) or "unknown")
            + "; devices: " + (", ".join(devices) or "unknown") + ".\n")

    if preamble:
        add(preamble)

    add("## About the article's code\n")
    add(ARTICLE_NOTES)

    # comparison table
    add("## The article's comparison table, measured\n")
    for ctx, tab in T.comparison_table(gs, base).items():
        name = "comparison" if ctx == "all" else f"comparison_{slug(ctx)}"
        w.table(name, tab, latex=True)
        if ctx != "all":
            add(f"### {ctx}\n")
        if base.get(ctx) is None:
            add(f"_No baseline (`{baseline}`) among these configurations: relative rows left empty._\n")
        add(md_table(tab, index_name="measured"))
        add(f"Table: `tables/{name}.csv`, `tables/{name}.tex`.\n")

    # claims
    add("## Claims check\n")
    add("**Rule.** " + stats.VERDICT_RULE + " " + T.CLAIM_NOTES + "\n")
    cl, skipped_claims = T.claims(coll, base)
    if len(cl):
        w.table("claims", cl.drop(columns=["scale"]), index=False, latex=True)
        show = pd.DataFrame({
            "claim": [c + ("" if x == "all" else f" [{x}]") for c, x in zip(cl["claim"], cl["context"])],
            "the article says": cl["text"],
            "compared (a vs b)": cl["a"] + " vs " + cl["b"],
            "quantity": cl["quantity"].str.replace("_", " "),
            "mean a": [num(v) for v in cl["mean_a"]], "mean b": [num(v) for v in cl["mean_b"]],
            "a − b": [num(v) for v in cl["diff"]],
            "test, p": [f"{t}, p={fmt_p(p)}" for t, p in zip(cl["test"], cl["p"])],
            "n (a, b)": [f"{a}, {b}" for a, b in zip(cl["n_a"], cl["n_b"])],
            "verdict": [f"**{v}**" + (f" ({n})" if n else "") for v, n in zip(cl["verdict"], cl["note"])],
        })
        add(md_table(show, index=False))
        add("Accuracies and gaps in percentage points, times in seconds, epochs in epochs. "
            "Table: `tables/claims.csv`, `tables/claims.tex`.\n")
    else:
        add("_No claim could be checked with these runs._\n")
    if skipped_claims:
        add("Claims not checked:\n")
        add("\n".join(f"- claim {c}: {why}" for c, why in skipped_claims) + "\n")

    # per configuration
    add("## Per-configuration summary\n")
    w.table("per_configuration", gs, index=False)
    summ = pd.DataFrame({
        "runs": gs["runs"], "completed": gs["completed"], "diverged": gs["diverged"],
        "failed": gs["failed"], "unfinished": gs["unfinished"],
        "final test acc.": [T.cell(r, "final_test_acc") for _, r in gs.iterrows()],
        "best test acc.": [T.cell(r, "best_test_acc") for _, r in gs.iterrows()],
        "train − test acc. (pp)": [T.cell(r, "generalization_gap") for _, r in gs.iterrows()],
        "s / epoch": [T.cell(r, "seconds_per_epoch") for _, r in gs.iterrows()],
    })
    summ.index = gs["configuration"].astype(str)
    w.table("per_configuration_formatted", summ, latex=True)
    add(md_table(summ, index_name="configuration"))
    add("Full statistics (mean, CI half-width, std, n for every metric): `tables/per_configuration.csv`; "
        "one row per run: `runs.csv`.\n")

    # problems
    add("## Runs that did not complete, and skipped folders\n")
    bad = runs[runs["status"] != "completed"]
    if len(bad):
        add(md_table(pd.DataFrame({"run": bad["run"], "configuration": bad["label"].astype(str),
                                   "status": bad["status"], "detail": bad["detail"]}), index=False))
    else:
        add("All runs completed.\n")
    if coll.skipped:
        add("Skipped folders (not read as runs):\n")
        add("\n".join(f"- `{p}`: {why}" for p, why in coll.skipped) + "\n")

    # figures
    curves = coll.curves.merge(runs[runs["status"] == "completed"][["run", "label"]], on="run")
    curves["configuration"] = curves["label"].astype(str)
    target = gs["target_acc"].dropna().unique()
    target = float(target[0]) if len(target) == 1 else None
    add("## Figures\n")
    if len(curves):
        f1 = w.figure("learning_curves", F.learning_curves(curves, order, cmap, title))
        add(f"![learning curves]({f1})\n")
    f2 = w.figure("final_test_acc", F.bar_figure(gs, "final_test_acc", 100, cmap, title, "final test accuracy (%)",
                                                zoom=True))
    f3 = w.figure("generalization_gap", F.bar_figure(gs, "generalization_gap", 100, cmap, title,
                                                     "train − test accuracy (pp)"))
    f4 = w.figure("seconds_per_epoch", F.bar_figure(gs, "seconds_per_epoch", 1, cmap, title, "seconds per epoch (s)"))
    add(f"![final test accuracy]({f2})\n\n![generalization gap]({f3})\n\n![seconds per epoch]({f4})\n")

    # convergence
    add("## Convergence\n")
    conv = pd.DataFrame({
        "target": [f"{t * 100:g}%" if pd.notna(t) else "–" for t in gs["target_acc"]],
        "reached": [f"{r['reached_target']}/{r['completed']}" for _, r in gs.iterrows()],
        "epochs to target": [T.cell(r, "epochs_to_target") for _, r in gs.iterrows()],
        "seconds to target": [T.cell(r, "seconds_to_target") for _, r in gs.iterrows()],
        "test acc. after epoch 1": [T.cell(r, "first_epoch_test_acc") for _, r in gs.iterrows()],
    }, index=gs["configuration"].astype(str))
    w.table("convergence", conv, latex=True)
    add(md_table(conv, index_name="configuration"))
    add("Epochs / seconds to target: over the completed runs that reached it.\n")
    if len(curves):
        f5 = w.figure("test_acc_vs_time", F.acc_vs_time(curves, order, cmap, title, target))
        add(f"![test accuracy vs. wall-clock time]({f5})\n")

    _optional_sections(coll, gs, base, w, add, title, order, cmap)
    for section in sections:
        section(w, add)

    add("## Files\n")
    add("\n".join(f"- `{f}`" for f in sorted(set(w.files + ["runs.csv"]))) + "\n")
    w.text("runs.csv", runs_csv(runs))
    w.text("report.md", "\n".join(md))
    return w.out / "report.md"


def runs_csv(runs: pd.DataFrame) -> str:
    r = runs.copy()
    r["label"] = r["label"].astype(str)
    for c in r.columns:
        if r[c].map(lambda v: isinstance(v, (dict, list))).any():
            r[c] = r[c].map(lambda v: json.dumps(v) if isinstance(v, (dict, list)) else v)
    return r.to_csv(index=False)


def series_frame(coll: Collection, drop: tuple) -> tuple[pd.DataFrame, list[str]]:
    runs = coll.runs.copy()
    runs["series"] = [make_label(r, coll.dims, drop) for _, r in runs.iterrows()]
    return runs, ordered_labels(runs, coll.dims, drop, label_col="series")


def _optional_sections(coll, gs, base, w, add, title, order, cmap) -> None:
    runs = coll.runs
    # learning rate
    if "optim.lr" in coll.varying:
        df, sorder = series_frame(coll, ("optim.lr",))
        df["lr"] = df["cfg.optim.lr"].astype(float)
        add("## Learning-rate tolerance\n")
        tab = T.sweep_table(df, "lr", "final_test_acc", sorder, count_diverged=True)
        w.table("lr_tolerance", tab, latex=True)
        add(md_table(tab, index_name="configuration \\ learning rate"))
        plot = T.chance_or_acc(df)
        fig = w.figure("lr_tolerance", F.sweep_figure(
            [("acc_for_plot", 100, "final test accuracy (%)")], plot, "lr", sorder, F.colors(sorder), title,
            "learning rate (log scale)", True))
        add("Table: final test accuracy over completed runs, and the number of diverged runs per cell. "
            "Figure: a diverged run counts as chance accuracy (1 / number of classes) so that a learning "
            f"rate that blows up shows as a drop; {int((df['status'] == 'diverged').sum())} run(s) diverged.\n")
        add(f"![learning-rate tolerance]({fig})\n")
    # data size
    if "data.train_size" in coll.varying:
        df, sorder = series_frame(coll, ("data.train_size",))
        df = df[df["train_size_used"].notna()]
        add("## Training-set size\n")
        tab = T.sweep_table(df, "train_size_used", "generalization_gap", sorder)
        tab_acc = T.sweep_table(df, "train_size_used", "final_test_acc", sorder)
        w.table("datasize_gap", tab, latex=True)
        w.table("datasize_test_acc", tab_acc, latex=True)
        add("Train − test accuracy (pp) by training-set size (images actually used; `null` = full set):\n")
        add(md_table(tab, index_name="configuration \\ training images"))
        add("Final test accuracy (%):\n")
        add(md_table(tab_acc, index_name="configuration \\ training images"))
        fig = w.figure("datasize", F.sweep_figure(
            [("generalization_gap", 100, "train − test accuracy (pp)"), ("final_test_acc", 100, "test accuracy (%)")],
            T.completed(df), "train_size_used", sorder, F.colors(sorder), title, "training images (log scale)", True))
        add(f"![training-set size]({fig})\n")
    # dropout rate
    if "reg.dropout" in coll.dims:
        df = runs.copy()
        others = [k for k in coll.dims if k not in ("reg.dropout", "reg.norm", "reg.order")]
        df["series"] = [", ".join([("without norm" if r.get("cfg.reg.norm") in ("none", None)
                                    else "with " + NORM_NAMES.get(r.get("cfg.reg.norm"), str(r.get("cfg.reg.norm"))))]
                                  + [f"{SHORT.get(k, k)}={r.get('cfg.' + k)}" for k in others])
                        for _, r in df.iterrows()]
        df["rate"] = df["cfg.reg.dropout"].astype(float)
        sorder = sorted(df["series"].unique(), key=lambda s: (not s.startswith("without"), s))
        add("## Dropout rate\n")
        tab = T.sweep_table(df, "rate", "final_test_acc", sorder, count_diverged=True)
        w.table("dropout_rate", tab, latex=True)
        add(md_table(tab, index_name="configuration \\ dropout rate"))
        fig = w.figure("dropout_rate", F.sweep_figure(
            [("final_test_acc", 100, "final test accuracy (%)"), ("generalization_gap", 100, "train − test accuracy (pp)")],
            T.completed(df), "rate", sorder, F.colors(sorder), title, "dropout rate p", False))
        add(f"![dropout rate]({fig})\n")
    # placement
    placement_keys = {"reg.order", "reg.dropout_blocks", "reg.norm"}
    if placement_keys & set(coll.dims) or runs["kind"].astype(str).str.startswith("dropout_before").any():
        add("## Placement of dropout and the norm layer\n")
        tab = T.placement_table(gs, coll)
        w.table("placement", tab, index=False, latex=True)
        add(md_table(tab, index=False))
        add("`order` lists the layers after each Linear/Conv; `dropout_blocks=last` keeps dropout only "
            "in the last hidden block.\n")
    # variance shift
    vs = T.variance_shift_table(coll)
    if len(vs):
        add("## Variance shift (Li et al. 2019)\n")
        add("Per BN layer and channel: the running variance it learned in training divided by the variance of "
            "its input at test time (eval mode, dropout off) -- Li et al.'s moving/real ratio. 1 = no shift; "
            "> 1 means training fed the layer more variance than it sees at test time (dropout placed before "
            "BN does this), so BN divides test activations by too large a standard deviation. Mean and max over "
            "channels; 'worst' is the layer furthest from 1. 'Recalibrated' re-estimates the BN statistics with "
            "dropout off (one pass over the training set) before testing, Li et al.'s remedy.\n")
        w.table("variance_shift", vs, index=False, latex=True)
        add(md_table(vs, index=False))
        layers = T.variance_layers(coll)
        w.table("variance_shift_layers", layers, index=False)
        if len(layers):
            fig = w.figure("variance_shift_layers", F.variance_layers(layers, order, cmap, title))
            add(f"![variance shift per layer]({fig})\n")
    # inference
    inf = T.inference_table(coll, base)
    if len(inf):
        add("## Inference cost\n")
        add(GARBIN + "\n")
        w.table("inference", inf, index=False, latex=True)
        add(md_table(inf, index=False))
        add("Latency in milliseconds per batch, eval mode; throughput in samples per second at batch 256.\n")
