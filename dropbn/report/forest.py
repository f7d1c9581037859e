"""The forest plot of the claims check (figures/claims.png): one row per claim row, its difference
a − b (a ratio for ratio and spread units) with the 95% CI, the no-difference line, the row's minimal
effect (or equivalence margin) marked on both sides of it, coloured by verdict; one panel per unit.
Rank-test rows have no CI of their median difference: where every run reached the target, the
Hodges-Lehmann shift's Moses CI (the second interval) is drawn dashed instead.
"""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from .figures import png  # noqa: E402

UNITS = {  # unit -> (panel x label, null value, log axis)
    "pp": ("a − b (percentage points)", 0.0, False),
    "epochs": ("a − b (epochs: median difference; dashed: Hodges-Lehmann shift)", 0.0, False),
    "ratio": ("a / b (log scale)", 1.0, True),
    "spread": ("sd a / sd b (log scale)", 1.0, True),
    "failed": ("failed-to-train fraction a − b (pp)", 0.0, False),
}
COLORS = {"supported": "#1a9850", "not supported": "#d73027", "equivalent": "#4575b4", "inconclusive": "#7f7f7f",
          "exploratory": "#fdae61"}


def verdict_key(verdict: str) -> str:
    v = str(verdict)
    return "exploratory" if v.startswith("exploratory") else v if v in COLORS else "inconclusive"


def marks(unit: str, value: float, null: float) -> tuple[float, float]:
    """The minimal effect (or margin) on both sides of the null line, in the panel's scale."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        return math.nan, math.nan
    if unit == "ratio":
        return 1 / (1 + value), 1 + value
    if unit == "spread":
        return 1 / value, value
    scale = 100.0 if unit == "failed" else 1.0
    return null - value * scale, null + value * scale


def row_label(r) -> str:
    ctx = "" if r["context"] == "all" else f" [{r['context']}]"
    text = f"{r['claim']}{ctx}: {r['a']} vs {r['b']}"
    return text if len(text) <= 70 else text[:67] + "…"


def forest(df: pd.DataFrame, title: str) -> bytes:
    units = [u for u in UNITS if (df["unit"] == u).any()] + sorted(set(df["unit"]) - set(UNITS))
    heights = [max(1.2, 0.32 * int((df["unit"] == u).sum()) + 0.9) for u in units]
    fig, axes = plt.subplots(len(units), 1, figsize=(9.0, sum(heights) + 0.8), squeeze=False,
                             gridspec_kw={"height_ratios": heights}, layout="constrained")
    for ax, unit in zip(axes[:, 0], units):
        label, null, log = UNITS.get(unit, (unit, 0.0, False))
        g = df[df["unit"] == unit].reset_index(drop=True)
        xs = []
        for i, r in g.iterrows():
            y = len(g) - 1 - i
            color = COLORS[verdict_key(r["verdict"])]
            d, lo, hi = (float(r[k]) if pd.notna(r[k]) else math.nan for k in ("diff", "diff_ci_low", "diff_ci_high"))
            dashed = False
            if not (math.isfinite(lo) and math.isfinite(hi)) and pd.notna(r.get("second_ci_low")):
                lo, hi, dashed = float(r["second_ci_low"]), float(r["second_ci_high"]), True
            if math.isfinite(lo) and math.isfinite(hi) and (not log or lo > 0):
                ax.plot([lo, hi], [y, y], "--" if dashed else "-", color=color, linewidth=2.2, solid_capstyle="butt")
                xs += [lo, hi]
            if math.isfinite(d) and (not log or d > 0):
                ax.plot([d], [y], "o", color=color, markersize=6, zorder=3)
                xs.append(d)
            eff = r.get("margin") if pd.notna(r.get("margin")) else r.get("min_effect")
            for x in marks(unit, eff, null):
                if math.isfinite(x):
                    ax.plot([x], [y], marker="|", color="black", markersize=11, alpha=0.6, zorder=2)
                    xs.append(x)
        ax.axvline(null, color="black", linewidth=0.8)
        ax.set_yticks(range(len(g)), [row_label(r) for _, r in g.iloc[::-1].iterrows()], fontsize=7.5)
        ax.set_ylim(-0.7, len(g) - 0.3)
        if log:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"×{v:g}"))
            ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"×{v:g}"))
            ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.set_xlabel(label, fontsize=8.5)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(axis="x", labelsize=8)
    handles = [Line2D([], [], color=c, marker="o", linewidth=2, label=k) for k, c in COLORS.items()
               if any(verdict_key(v) == k for v in df["verdict"])]
    handles.append(Line2D([], [], color="black", marker="|", linestyle="", markersize=11,
                          label="minimal effect / equivalence margin"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 3), fontsize=8, frameon=False)
    fig.suptitle(f"Claims: a − b with 95% CI, by verdict — {title}", fontsize=10)
    return png(fig)
