"""The report's opening verdicts: one short table (claim, verdict, a − b [95% CI], p_holm, confirmatory
or exploratory) and the forest plot figures/claims.png, from the same claims check as the detailed
table (sections.claims); and the paragraph saying which claims file(s) the check used and whether
they were registered before the runs.
"""
from __future__ import annotations

import pandas as pd

from ..config import registration as R
from .forest import forest
from .markdown import fmt_p, md_table


def sources_text(ctx) -> str:
    cs = ctx.claim_set
    if cs is None:
        from ..config.claims_file import load
        cs = load()
    return ", ".join(f"`{s}`" for s in cs.sources) + f" (sha256 `{cs.sha256()[:12]}…`)"


def family_text(ctx) -> str:
    ct = ctx.claims_table
    reg = ctx.registration
    if reg is None:
        return (f"**Claims** from {sources_text(ctx)}; **not pre-registered**: no registration was recorded "
                f"before these runs, so every row with a p value is one Holm family.\n")
    conf = int((ct.df["registration"] == R.CONFIRMATORY).sum())
    expl = int((ct.df["registration"] == R.EXPLORATORY).sum())
    return (f"**Claims** from {sources_text(ctx)}; **pre-registered**: {reg.describe()}. The {conf} confirmatory "
            f"row(s) (registered unchanged) are the Holm family; the {expl} exploratory row(s) (claims added or "
            "changed after the registration) show their raw p and no verdict.\n")


def _p_cell(r) -> str:
    if r["registration"] == R.EXPLORATORY:
        return f"raw p = {fmt_p(r['p_value'])}"
    return fmt_p(r["p_holm"])


def at_a_glance(ctx):
    from .sections import Section, _diff_cell  # sections imports this module for family_text
    ct = ctx.claims_table
    cl = ct.df
    s = Section(md=["## Verdicts at a glance\n"])
    if not len(cl):
        s.add("_No claim could be checked with these runs (see the claims check below)._\n")
        return s
    show = pd.DataFrame({
        "claim": [c + ("" if x == "all" else f" [{x}]") for c, x in zip(cl["claim"], cl["context"])],
        "verdict": [f"**{v}**" if v in ("supported", "not supported", "equivalent") else v for v in cl["verdict"]],
        "a − b [95% CI]": [_diff_cell(r) for _, r in cl.iterrows()],
        "p_holm": [_p_cell(r) for _, r in cl.iterrows()],
        "registration": cl["registration"],
    })
    s.add(md_table(show, index=False))
    path = s.figure("claims", forest(cl, ctx.title))
    s.add(f"![claims: differences with 95% CI, by verdict]({path})\n")
    s.add(family_text(ctx) + "\nWhat each claim says, its test, notes and power: [Claims check](#claims-check).\n")
    return s
