"""The report's figures (matplotlib, Agg backend), each returned as PNG bytes.

Two helpers do all the drawing: `line_band` (mean line + 95% CI band across
seeds, one line per series) and `bars_ci` (one bar per configuration with CI
whiskers).  The figure functions only choose what to feed them.
"""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import pandas as pd  # noqa: E402

from . import stats  # noqa: E402

BAND = "band: 95% CI across seeds (t distribution)"


def colors(labels) -> dict:
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    return {lab: cmap(i % cmap.N) for i, lab in enumerate(labels)}


def png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def new(ncols=1, width=7.0, height=4.4):
    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols if ncols > 1 else width, height), squeeze=False)
    return fig, list(axes[0])


def line_band(ax, df: pd.DataFrame, x: str, y: str, series: str, order, cmap: dict, *,
              x_pos: str | None = None, scale: float = 1.0, style: str = "-", label_suffix: str = "",
              legend: bool = True, markers: bool = False, log: bool = False) -> None:
    """Per series: mean of y at each x (over runs = seeds) as a line, 95% CI as a band.

    x_pos, when given, is averaged per x and used as the plotted position (e.g. cumulative
    seconds at each epoch).  log=True: statistics of log10(y) (geometric mean, CI of the log)
    on a log axis, so the band never crosses zero."""
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


def finish(ax, title: str, xlabel: str, ylabel: str, legend: bool = True, note: str = BAND) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(f"{xlabel}\n[{note}]" if note else xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")


# ---------------------------------------------------------------- figures

def learning_curves(curves: pd.DataFrame, order, cmap, title: str) -> bytes:
    fig, (a1, a2) = new(2, width=6.2)
    line_band(a1, curves, "epoch", "test_acc", "configuration", order, cmap, scale=100, markers=True)
    finish(a1, f"Test accuracy — {title}", "epoch", "test accuracy (%)")
    line_band(a2, curves, "epoch", "test_loss", "configuration", order, cmap, label_suffix=" (test)", log=True)
    line_band(a2, curves, "epoch", "train_loss", "configuration", order, cmap, style="--", legend=False, log=True)
    a2.plot([], [], "k--", label="train loss (dashed)")
    for a in (a1, a2):
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    finish(a2, f"Loss (solid: test, dashed: train) — {title}", "epoch", "cross-entropy loss (log scale)",
           note=BAND + "; loss: geometric mean, CI of log10(loss)")
    return png(fig)


def acc_vs_time(curves: pd.DataFrame, order, cmap, title: str, target=None) -> bytes:
    fig, (ax,) = new()
    line_band(ax, curves, "epoch", "test_acc", "configuration", order, cmap, x_pos="train_seconds",
              scale=100, markers=True)
    if target is not None:
        ax.axhline(target * 100, color="gray", linestyle=":", label=f"target {target * 100:g}%")
    finish(ax, f"Test accuracy vs. training time — {title}", "cumulative training time (s, wall-clock; mean over seeds at each epoch)",
           "test accuracy (%)")
    return png(fig)


def bar_figure(gs: pd.DataFrame, metric: str, scale: float, cmap, title: str, ylabel: str,
               zoom: bool = False) -> bytes:
    fig, (ax,) = new(width=max(6.0, 1.1 * len(gs) + 2))
    bars_ci(ax, gs, metric, scale, cmap)
    if zoom:  # accuracies sit close together: zoom the y axis on them
        lo = ((gs[f"{metric}_mean"] - gs[f"{metric}_ci95"].fillna(0)) * scale).min()
        hi = ((gs[f"{metric}_mean"] + gs[f"{metric}_ci95"].fillna(0)) * scale).max()
        if pd.notna(lo) and pd.notna(hi):
            pad = max(0.5, (hi - lo) * 0.3)
            ax.set_ylim(max(0, lo - pad), min(100, hi + pad))
    finish(ax, f"{ylabel} — {title}", "configuration", ylabel, legend=False,
           note="whiskers: 95% CI across seeds (t distribution); completed runs only"
           + ("; y axis zoomed" if zoom else ""))
    return png(fig)


def sweep_figure(panels, df: pd.DataFrame, x: str, order, cmap, title: str, xlabel: str,
                 logx: bool, note: str = BAND) -> bytes:
    """panels: [(y column, scale, ylabel)] -> one subplot each, one line per series."""
    fig, axes = new(len(panels), width=6.2 if len(panels) > 1 else 7.0)
    for ax, (y, scale, ylabel) in zip(axes, panels):
        line_band(ax, df, x, y, "series", order, cmap, scale=scale, markers=True)
        if logx:
            ax.set_xscale("log")
        finish(ax, f"{ylabel} vs. {xlabel} — {title}", xlabel, ylabel, note=note)
    return png(fig)


def variance_layers(layers: pd.DataFrame, order, cmap, title: str) -> bytes:
    names = list(dict.fromkeys(layers["layer"]))
    confs = [c for c in order if c in set(layers["configuration"])]
    fig, (ax,) = new(width=max(6.0, 1.5 * len(names) + 3))
    w = 0.8 / max(1, len(confs))
    for j, c in enumerate(confs):
        g = layers[layers["configuration"] == c]
        cis = [stats.mean_ci(g[g["layer"] == n]["mean_ratio"]) for n in names]
        ax.bar([i + (j - (len(confs) - 1) / 2) * w for i in range(len(names))], [ci.mean for ci in cis], w,
               yerr=[0 if ci.n < 2 else ci.half for ci in cis], capsize=3, color=cmap[c], label=c,
               edgecolor="black", linewidth=0.5)
    ax.axhline(1.0, color="gray", linestyle=":", label="no shift (ratio 1)")
    ax.set_xticks(range(len(names)), names)
    finish(ax, f"Variance shift per BN layer — {title}", "batch-norm layer",
           "running variance / test-time input variance\n(mean over channels)",
           note="whiskers: 95% CI across seeds")
    return png(fig)
