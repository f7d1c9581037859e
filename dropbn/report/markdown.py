"""Text formatting of the report: markdown tables, LaTeX tables, numbers and p-values, differences
with what their confidence interval allows, file-name slugs."""
from __future__ import annotations

import math
import re

import pandas as pd

LATEX_SUBS = {"±": r"$\pm$", "↳": r"$\hookrightarrow$", "−": "--", "×": r"$\times$", "–": "--"}


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


def to_latex(df: pd.DataFrame, index: bool = True) -> str:
    tex = df.astype(str).to_latex(index=index, escape=True)
    for a, b in LATEX_SUBS.items():
        tex = tex.replace(a, b)
    return tex


def slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=_-]+", "_", str(s)).strip("_") or "all"


def fmt_p(p) -> str:
    if p is None or not math.isfinite(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def num(v, digits=2) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def fmt_robust(r, digits: int = 3) -> str:
    """'1.13 [1.05–1.20] (n=5)': median [interquartile range] of a stats.Robust; '–' when empty."""
    if not r.n:
        return "–"
    return f"{r.median:.{digits}f} [{r.q1:.{digits}f}–{r.q3:.{digits}f}] (n={r.n})"


def signed(x: float, digits: int = 1) -> str:
    """'+0.3', '-0.4'; a value that rounds to zero is '0.0' (no sign)."""
    s = f"{x:+.{digits}f}"
    return f"{0:.{digits}f}" if float(s) == 0 else s


def ci_text(lo: float, hi: float, unit: str = "pp", digits: int = 1) -> str:
    """'between -0.4 and +0.2 pp' ('between -19 and +23%'): what a confidence interval allows, in report units."""
    u = unit if unit in ("", "%") else f" {unit}"
    return f"between {signed(lo, digits)} and {signed(hi, digits)}{u}"
