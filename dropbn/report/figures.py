"""The report's figures (matplotlib, Agg backend), each returned as PNG bytes.

Two helpers do most of the drawing: `line_band` (mean line + 95% CI band across seeds, one line
per series; accuracy bands clipped to [0, 100]) and `bars_ci` (one bar per configuration with CI
whiskers). Legends go below the panels, never over data. With more than a handful of
configurations, curves are drawn as small multiples (collect.Facet): one panel per value of the
swept setting. Ratios are drawn on a log axis as median and interquartile range.
"""
from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

from .. import stats  # noqa: E402
from .collect import Facet  # noqa: E402
from .shift import symmetric  # noqa: E402

BAND = "band: 95% CI across seeds (t distribution)"
ACC_RANGE = (0.0, 100.0)   # accuracy in %: bands never leave it


def colors(labels) -> dict:
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    return {lab: cmap(i % cmap.N) for i, lab in enumerate(labels)}


def png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def grid(nrows=1, ncols=1, width=6.2, height=4.2):
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False,
                             layout="constrained")
    return fig, axes


def is_accuracy(column: str) -> bool:
    return column.endswith("_acc") or column == "acc_for_plot"


def line_band(ax, df: pd.DataFrame, x: str, y: str, series: str, order, cmap: dict, *,
              x_pos: str | None = None, scale: float = 1.0, style: str = "-", label_suffix: str = "",
              legend: bool = True, markers: bool = False, log: bool = False) -> None:
    """Per series: mean of y at each x (over runs = seeds) as a line, 95% CI as a band.

    x_pos, when given, is averaged per x and used as the plotted position (e.g. cumulative
    seconds at each epoch). log=True: statistics of log10(y) (geometric mean, CI of the log)
    on a log axis, so the band never crosses zero. Accuracy bands are clipped to ACC_RANGE."""
    clip = ACC_RANGE if is_accuracy(y) and scale == 100 else (-math.inf, math.inf)
    for s in order:
        g = df[df[series] == s]
        if g.empty:
            continue
        pts = []
        for xv, h in g.groupby(x, sort=True):
            vals = np.log10(h[y][h[y] > 0].astype(float)) if log else h[y]
            ci = stats.mean_ci(vals)
            if ci.n:
                pos = h[x_pos].mean() if x_pos else xv
                half = ci.half if ci.n > 1 else 0.0
                pts.append((pos, ci.mean - half, ci.mean, ci.mean + half))
        if not pts:
            continue
        xs, lo, ms, hi = (np.array(v, dtype=float) for v in zip(*pts))
        lo, ms, hi = ((10 ** v if log else v) * scale for v in (lo, ms, hi))
        lo, hi = np.clip(lo, *clip), np.clip(hi, *clip)
        ax.plot(xs, ms, style, color=cmap[s], label=(f"{s}{label_suffix}" if legend else None),
                marker="o" if markers else None, markersize=4)
        ax.fill_between(xs, lo, hi, color=cmap[s], alpha=0.18, linewidth=0)
    if log:
        ax.set_yscale("log")


def bars_ci(ax, gs: pd.DataFrame, metric: str, scale: float, cmap: dict) -> None:
    """One bar per configuration (mean), whiskers = 95% CI; n under each label."""
    labs = [str(c) for c in gs["configuration"]]
    means = (gs[f"{metric}_mean"] * scale).tolist()
    errs = (gs[f"{metric}_ci95"].fillna(0) * scale).tolist()
    ax.bar(range(len(labs)), [0 if pd.isna(m) else m for m in means], yerr=errs, capsize=4,
           color=[cmap[lab] for lab in labs], edgecolor="black", linewidth=0.5)
    ticks = [f"{lab}\n(n={int(n)})" for lab, n in zip(labs, gs[f"{metric}_n"])]
    ax.set_xticks(range(len(labs)), ticks, rotation=30 if len(labs) > 4 else 0,
                  ha="right" if len(labs) > 4 else "center", fontsize=8)


def finish(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def close(fig, axes, title: str, note: str = BAND) -> bytes:
    """The figure's title on top; below the panels its note and one legend (every label once), never over data."""
    fig.suptitle(title, fontsize=11)
    seen = {}
    for ax in np.ravel(axes):
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    if seen:
        fig.legend(list(seen.values()), list(seen), loc="outside lower center", ncol=min(4, len(seen)),
                   fontsize=8, frameon=False, title=f"[{note}]" if note else None, title_fontsize=8)
    elif note:
        fig.supxlabel(f"[{note}]", fontsize=8)
    return png(fig)


def _panels(curves: pd.DataFrame, order, cmap, facet: Facet | None):
    """[(panel title, its curves, series column, series order, colours)]: one entry, or one per facet value."""
    if facet is None:
        return [("", curves, "configuration", order, cmap)]
    c = curves.assign(panel=curves["configuration"].map(lambda lab: facet.of.get(lab, ("?", lab))[0]),
                      series=curves["configuration"].map(lambda lab: facet.of.get(lab, ("?", lab))[1]))
    scmap = colors(facet.series)
    return [(p, c[c["panel"] == p], "series", facet.series, scmap) for p in facet.panels]


# ---------------------------------------------------------------- figures

def learning_curves(curves: pd.DataFrame, order, cmap, title: str, facet: Facet | None = None) -> bytes:
    """Test accuracy (top row) and loss (bottom row) per epoch; one column per facet panel."""
    panels = _panels(curves, order, cmap, facet)
    fig, axes = grid(2, len(panels), width=6.2 if len(panels) == 1 else 4.2)
    for j, (name, c, ser, sorder, scmap) in enumerate(panels):
        a1, a2 = axes[0][j], axes[1][j]
        line_band(a1, c, "epoch", "test_acc", ser, sorder, scmap, scale=100, markers=True)
        where = f" — {name}" if name else ""
        finish(a1, f"Test accuracy{where}", "epoch", "test accuracy (%)")
        line_band(a2, c, "epoch", "test_loss", ser, sorder, scmap, log=True, legend=False)
        line_band(a2, c, "epoch", "train_loss", ser, sorder, scmap, style="--", legend=False, log=True)
        finish(a2, f"Loss (solid: test, dashed: train){where}", "epoch", "cross-entropy loss (log scale)")
        for a in (a1, a2):
            a.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(panels) > 1:
        _share_y(axes[0]), _share_y(axes[1])
    return close(fig, axes, title, BAND + "; loss: geometric mean, CI of log10(loss)")


def _share_y(axes) -> None:
    lo = min(a.get_ylim()[0] for a in axes)
    hi = max(a.get_ylim()[1] for a in axes)
    for a in axes:
        a.set_ylim(lo, hi)


def acc_vs_time(curves: pd.DataFrame, order, cmap, title: str, target=None, facet: Facet | None = None) -> bytes:
    """Test accuracy against cumulative training time; facet panels wrap into rows of three."""
    panels = _panels(curves, order, cmap, facet)
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = grid(nrows, ncols, width=7.0 if len(panels) == 1 else 4.6, height=4.2 if nrows == 1 else 3.6)
    flat = list(np.ravel(axes))
    for ax, (name, c, ser, sorder, scmap) in zip(flat, panels):
        line_band(ax, c, "epoch", "test_acc", ser, sorder, scmap, x_pos="train_seconds", scale=100, markers=True)
        if target is not None:
            ax.axhline(target * 100, color="gray", linestyle=":", label=f"target {target * 100:g}%")
        finish(ax, f"Test accuracy vs. training time{f' — {name}' if name else ''}", "training time (s)",
               "test accuracy (%)")
    for ax in flat[len(panels):]:
        ax.set_visible(False)
    if len(panels) > 1:
        _share_y(flat[:len(panels)])
    return close(fig, axes, title, BAND + "; x: cumulative wall-clock training time, mean over seeds at each epoch")


def bar_figure(gs: pd.DataFrame, metric: str, scale: float, cmap, title: str, ylabel: str,
               zoom: bool = False) -> bytes:
    fig, axes = grid(width=max(6.0, 1.1 * len(gs) + 2), height=4.4)
    ax = axes[0][0]
    bars_ci(ax, gs, metric, scale, cmap)
    if zoom:  # accuracies sit close together: zoom the y axis on them
        lo = ((gs[f"{metric}_mean"] - gs[f"{metric}_ci95"].fillna(0)) * scale).min()
        hi = ((gs[f"{metric}_mean"] + gs[f"{metric}_ci95"].fillna(0)) * scale).max()
        if pd.notna(lo) and pd.notna(hi):
            pad = max(0.5, (hi - lo) * 0.3)
            ax.set_ylim(max(ACC_RANGE[0], lo - pad), min(ACC_RANGE[1], hi + pad))
    finish(ax, ylabel, "configuration", ylabel)
    return close(fig, axes, title, "whiskers: 95% CI across seeds (t distribution); completed runs only"
                 + ("; y axis zoomed" if zoom else ""))


def sweep_figure(panels, df: pd.DataFrame, x: str, order, cmap, title: str, xlabel: str,
                 logx: bool, note: str = BAND, chance: float | None = None) -> bytes:
    """panels: [(y column, scale, ylabel)] -> one subplot each, one line per series; `chance`: a dotted
    line at chance accuracy in percent (the panels plot accuracy in percent)."""
    fig, axes = grid(1, len(panels), width=6.2 if len(panels) > 1 else 7.0)
    for ax, (y, scale, ylabel) in zip(axes[0], panels):
        line_band(ax, df, x, y, "series", order, cmap, scale=scale, markers=True)
        if chance is not None:
            ax.axhline(chance, color="gray", linestyle=":", label=f"chance ({chance:g}%)")
        if logx:
            ax.set_xscale("log")
        finish(ax, f"{ylabel} vs. {xlabel}", xlabel, ylabel)
    return close(fig, axes, title, note)


def variance_layers(layers: pd.DataFrame, order, cmap, title: str) -> bytes:
    """Per BN layer and configuration: median and interquartile range across runs of max(r, 1/r)
    (r = the layer's ratio over its channels: median where recorded, else mean), log axis; one panel
    per data set the ratio was measured on (test, training)."""
    datas = list(dict.fromkeys(layers["data"]))
    stat = "median_ratio" if layers["median_ratio"].notna().any() else "mean_ratio"
    fig, axes = grid(1, len(datas), width=max(5.5, 1.4 * layers["layer"].nunique() + 3))
    for ax, data in zip(axes[0], datas):
        d = layers[layers["data"] == data]
        names = list(dict.fromkeys(d["layer"]))
        confs = [c for c in order if c in set(d["configuration"])]
        w = 0.8 / max(1, len(confs))
        for j, c in enumerate(confs):
            g = d[d["configuration"] == c]
            rob = [stats.robust_summary(symmetric(g[g["layer"] == n][stat].astype(float))) for n in names]
            xs = [i + (j - (len(confs) - 1) / 2) * w for i in range(len(names))]
            med = np.array([r.median for r in rob])
            err = np.array([[r.median - r.q1 for r in rob], [r.q3 - r.median for r in rob]])
            ax.errorbar(xs, med, yerr=err, fmt="o", color=cmap[c], label=c, capsize=3, markersize=5)
        ax.axhline(1.0, color="gray", linestyle=":", label="no shift (1)")
        ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
        ax.set_xticks(range(len(names)), names, fontsize=8)
        ax.set_xlim(-0.5, len(names) - 0.5)
        finish(ax, f"Variance shift per BN layer, {data} data", "batch-norm layer",
               f"max(r, 1/r), r = running / eval-time variance\n({stat.split('_')[0]} over channels; log scale)")
    return close(fig, axes, title, "points: median across runs; whiskers: interquartile range")
