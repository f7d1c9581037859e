"""The report's sections that appear only when they apply: a learning-rate, training-set-size or
dropout-rate sweep, placement variants, diagnostics (variance shift, inference cost), and published
numbers (anchors) for the configurations they are about.

Each takes the report's Context and returns a Section, or None when the runs do not call for it.
"""
from __future__ import annotations

import pandas as pd

from . import anchors as A
from . import figures as F
from . import measures as M
from . import shift as SH
from . import tables as T
from .collect import NORM_NAMES, SHORT, Collection, make_label, ordered_labels
from .markdown import fmt_p, md_table, num
from .sections import Context, Section

GARBIN = ("Garbin, Zhu & Marques (2020) asked whether batch norm really slows inference: they measured "
          "networks with batch norm about 30% slower at test time. Folding each BN layer into the preceding "
          "Linear/Conv (possible in eval mode, where BN is a fixed affine map) removes that cost. "
          "The table measures it here: the same trained model as trained and with BN folded, "
          "and its latency relative to the baseline (no BN).")
PLACEMENT_KEYS = {"reg.order", "reg.dropout_blocks", "reg.norm"}


def series_frame(coll: Collection, drop: tuple) -> tuple[pd.DataFrame, list[str]]:
    """The runs with a 'series' column: their label without the swept keys `drop`; and the series order."""
    runs = coll.runs.copy()
    runs["series"] = [make_label(r, coll.dims, drop) for _, r in runs.iterrows()]
    return runs, ordered_labels(runs, coll.dims, drop, label_col="series")


def _chance_pct(runs: pd.DataFrame) -> float | None:
    """Chance accuracy in percent when every run has the same number of classes, else None."""
    classes = runs["num_classes"].dropna().unique()
    return 100.0 / float(classes[0]) if len(classes) == 1 else None


def learning_rate(ctx: Context) -> Section | None:
    if "optim.lr" not in ctx.coll.varying:
        return None
    s = Section(md=["## Learning-rate tolerance\n"])
    df, sorder = series_frame(ctx.coll, ("optim.lr",))
    df["lr"] = df["cfg.optim.lr"].astype(float)
    tab = T.sweep_table(df, "lr", "final_test_acc", sorder, count_failed=True)
    s.table("lr_tolerance", tab, latex=True)
    s.add(md_table(tab, index_name="configuration \\ learning rate"))
    fig = s.figure("lr_tolerance", F.sweep_figure(
        [("acc_for_plot", 100, "final test accuracy (%)")], T.chance_or_acc(df), "lr", sorder, F.colors(sorder),
        ctx.title, "learning rate (log scale)", True, chance=_chance_pct(df)))
    s.add("Table: final test accuracy over completed runs; per cell, the runs that failed to train "
          f"({M.FAILED_RULE}: the claims check's trainability rule) out of the completed and diverged ones. "
          "Figure: a diverged run counts as chance accuracy (1 / number of classes) so that a learning "
          f"rate that blows up shows as a drop; {int((df['status'] == 'diverged').sum())} run(s) diverged.\n")
    s.add(f"![learning-rate tolerance]({fig})\n")
    return s


def training_set_size(ctx: Context) -> Section | None:
    if "data.train_size" not in ctx.coll.varying:
        return None
    s = Section(md=["## Training-set size\n"])
    df, sorder = series_frame(ctx.coll, ("data.train_size",))
    df = df[df["train_size_used"].notna()]
    tab = T.sweep_table(df, "train_size_used", "generalization_gap", sorder)
    tab_acc = T.sweep_table(df, "train_size_used", "final_test_acc", sorder)
    s.table("datasize_gap", tab, latex=True)
    s.table("datasize_test_acc", tab_acc, latex=True)
    s.add("Train − test accuracy (pp) by training-set size (images actually used; `null` = full set):\n")
    s.add(md_table(tab, index_name="configuration \\ training images"))
    s.add("Final test accuracy (%):\n")
    s.add(md_table(tab_acc, index_name="configuration \\ training images"))
    fig = s.figure("datasize", F.sweep_figure(
        [("generalization_gap", 100, "train − test accuracy (pp)"), ("final_test_acc", 100, "test accuracy (%)")],
        T.completed(df), "train_size_used", sorder, F.colors(sorder), ctx.title, "training images (log scale)",
        True))
    s.add(f"![training-set size]({fig})\n")
    return s


def _norm_series(r, others) -> str:
    norm = r.get("cfg.reg.norm")
    with_norm = "without norm" if norm in ("none", None) else "with " + NORM_NAMES.get(norm, str(norm))
    return ", ".join([with_norm] + [f"{SHORT.get(k, k)}={r.get('cfg.' + k)}" for k in others])


def dropout_rate(ctx: Context) -> Section | None:
    if "reg.dropout" not in ctx.coll.dims:
        return None
    s = Section(md=["## Dropout rate\n"])
    df = ctx.runs.copy()
    others = [k for k in ctx.coll.dims if k not in ("reg.dropout", "reg.norm", "reg.order")]
    df["series"] = [_norm_series(r, others) for _, r in df.iterrows()]
    df["rate"] = df["cfg.reg.dropout"].astype(float)
    sorder = sorted(df["series"].unique(), key=lambda x: (not x.startswith("without"), x))
    tab = T.sweep_table(df, "rate", "final_test_acc", sorder, count_failed=True)
    s.table("dropout_rate", tab, latex=True)
    s.add(md_table(tab, index_name="configuration \\ dropout rate"))
    s.add(f"Final test accuracy over completed runs; per cell, the runs that failed to train ({M.FAILED_RULE}) "
          "out of the completed and diverged ones.\n")
    fig = s.figure("dropout_rate", F.sweep_figure(
        [("final_test_acc", 100, "final test accuracy (%)"), ("generalization_gap", 100, "train − test accuracy (pp)")],
        T.completed(df), "rate", sorder, F.colors(sorder), ctx.title, "dropout rate p", False))
    s.add(f"![dropout rate]({fig})\n")
    return s


def placement(ctx: Context) -> Section | None:
    if not (PLACEMENT_KEYS & set(ctx.coll.dims) or ctx.runs["kind"].astype(str).str.startswith("dropout_before").any()):
        return None
    s = Section(md=["## Placement of dropout and the norm layer\n"])
    tab = T.placement_table(ctx.gs, ctx.coll)
    s.table("placement", tab, index=False, latex=True)
    s.add(md_table(tab, index=False))
    s.add("`order` lists the layers after each Linear/Conv; `dropout_blocks=last` keeps dropout only "
          "in the last hidden block (after every norm layer), `first` only in the first one (the same "
          "amount of dropout, feeding the next block's norm layer).\n")
    return s


VARIANCE_SHIFT = (
    "Per BN layer and channel, r = the running variance it learned in training / the variance of its input in "
    "eval mode (dropout off) -- Li et al.'s moving/real ratio, on test data and, where the runs measured it, on "
    "training data as Li et al. do. r = 1: no shift; r > 1: training fed the layer more variance than it sees "
    "in eval mode (dropout placed before BN does this), so BN divides by too large a standard deviation. Per "
    "layer the mean, median and max over channels are kept; 'worst' is the layer furthest from 1. Across runs "
    "the table gives the median [interquartile range], because a few near-dead channels can make means huge.\n\n"
    "'BN statistics re-estimated' recomputes the running mean and variance with dropout off (one pass over "
    "the training set) before testing: BN statistics re-estimation in the style of Hendrycks & Gimpel, not one "
    "of Li et al.'s remedies. Li et al.'s remedies are to place dropout after all BN layers, and Uout, a "
    "variance-stable form of dropout; the placement study measures the first.\n"
)


def variance_shift(ctx: Context) -> Section | None:
    vs = SH.summary_table(ctx.coll)
    if not len(vs):
        return None
    s = Section(md=["## Variance shift (Li et al. 2019)\n", VARIANCE_SHIFT])
    s.table("variance_shift", vs, index=False, latex=True)
    s.add(md_table(vs, index=False))
    corr = SH.correlations(ctx.coll)
    if len(corr):
        s.table("variance_shift_correlation", corr, index=False)
        s.add("Across runs: does a larger shift go with a larger accuracy change when the BN statistics are "
              "re-estimated? (Spearman's rank correlation; descriptive, not part of the claims family.)\n")
        s.add(md_table(corr.assign(**{"Spearman rho": [num(v, 2) for v in corr["Spearman rho"]],
                                      "p": [fmt_p(v) for v in corr["p"]]}), index=False))
    layers = SH.layers(ctx.coll)
    s.table("variance_shift_layers", layers, index=False)
    if len(layers):
        fig = s.figure("variance_shift_layers", F.variance_layers(layers, ctx.order, ctx.cmap, ctx.title))
        s.add(f"![variance shift per layer]({fig})\n")
    return s


def inference(ctx: Context) -> Section | None:
    inf = T.inference_table(ctx.coll, ctx.base)
    if not len(inf):
        return None
    s = Section(md=["## Inference cost\n", GARBIN + "\n"])
    s.table("inference", inf, index=False, latex=True)
    s.add(md_table(inf, index=False))
    s.add("Latency in milliseconds per batch, eval mode; throughput in samples per second at batch 256.\n")
    return s


def anchors(ctx: Context) -> Section | None:
    tab = A.anchor_table(ctx.runs, ctx.gs)
    if not len(tab):
        return None
    s = Section(md=["## Published numbers next to ours\n"])
    s.table("anchors", tab, index=False, latex=True)
    s.add(md_table(tab, index=False))
    s.add("Ours: mean ± 95% CI over the configuration's completed runs (runs that did not complete are "
          "counted in n and listed below), at the epoch picked on validation where the runs hold out a "
          "validation split, else at the last epoch. A published number is one figure without an interval; "
          "'ours − published' carries only our CI. The two setting columns give the difference of settings. "
          "The anchors are defined in `dropbn/report/anchors.py`.\n")
    return s
