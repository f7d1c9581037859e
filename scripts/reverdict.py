"""Re-derive the claims of committed reports from their runs.csv under the current verdict rules, and
list the claims whose verdict changed.

    python scripts/reverdict.py [results] [--all] [--baseline reg=none]

Reads results/*/report/runs.csv (one row per run, written by `dropbn report`) and the same report's
tables/claims.csv (the verdicts it was made with), runs the current claims check (dropbn.report.claims)
on the runs, and prints Markdown: per report the family size m and the verdict counts, then one row
per claim whose verdict changed (old verdict, new verdict, p_holm, the new difference with its CI).
With --all every claim row is printed, changed or not.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

from dropbn.report.claims import claims
from dropbn.report.collect import read_runs_csv
from dropbn.report.markdown import fmt_p, num
from dropbn.report.tables import baselines, parse_baseline


def old_verdicts(report: Path) -> dict:
    """{(claim, context): verdict as the old report gave it, '(exact)' marked}; {} without a claims.csv."""
    path = report / "tables" / "claims.csv"
    if not path.is_file():
        return {}
    old = pd.read_csv(path, keep_default_na=False)
    exact = old["note"].astype(str).str.startswith("exact") if "note" in old else pd.Series(False, old.index)
    return {(str(c), str(x)): v + (" (exact)" if e else "")
            for c, x, v, e in zip(old["claim"], old["context"], old["verdict"], exact)}


def diff_cell(r) -> str:
    lo, hi = r["diff_ci_low"], r["diff_ci_high"]
    ci = f" [{num(lo)}, {num(hi)}]" if math.isfinite(lo) and math.isfinite(hi) else ""
    unit = {"pp": " pp", "epochs": " epochs", "failed": " pp"}.get(r["unit"], "")
    return ("×" if r["unit"] == "ratio" else "") + num(r["diff"], 3 if r["unit"] == "ratio" else 2) + ci + unit


def rederive(report: Path, baseline: str) -> tuple[pd.DataFrame, int, dict]:
    coll = read_runs_csv(report / "runs.csv")
    ct = claims(coll, baselines(coll, parse_baseline(baseline)))
    old = old_verdicts(report)
    df = ct.df.copy()
    df["old_verdict"] = [old.get((str(c), str(x)), "(new row)" if str(c).startswith("T") else "(not in old report)")
                         for c, x in zip(df["claim"], df["context"])]
    return df, ct.m, old


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", nargs="?", default="results")
    ap.add_argument("--all", action="store_true", help="print every claim row, not only changed verdicts")
    ap.add_argument("--baseline", default="reg=none")
    args = ap.parse_args(argv)
    reports = sorted(p.parent for p in Path(args.root).glob("*/report/runs.csv"))
    if not reports:
        raise SystemExit(f"no */report/runs.csv under {args.root}")
    summary, rows = [], []
    for rep in reports:
        df, m, old = rederive(rep, args.baseline)
        study = rep.parent.name
        before = [v.replace(" (exact)", "") for v in old.values()]
        summary.append(f"| {study} | {len(old)} → {len(df)} | {m} | " + " | ".join(
            f"{before.count(v)} → {int((df['verdict'] == v).sum())}" for v in ("supported", "not supported"))
            + " |")
        for _, r in df.iterrows():
            if args.all or r["old_verdict"] != r["verdict"]:
                ctx = "" if r["context"] == "all" else f" [{r['context']}]"
                rows.append(f"| {study} | {r['claim']}{ctx} | {r['a']} vs {r['b']} | {r['old_verdict']} | "
                            f"{r['verdict']} | {diff_cell(r)} | {fmt_p(r['p_value'])} | {fmt_p(r['p_holm'])} |")
    print("| report | claim rows, old → new | m (new rows with a p value) | supported, old → new "
          "| not supported, old → new |")
    print("|---|---|---|---|---|")
    print("\n".join(summary))
    print()
    print("| report | claim | a vs b | old verdict | new verdict | a − b [95% CI] | p | p_holm |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
