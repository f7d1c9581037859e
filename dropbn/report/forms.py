"""How one claim's pair of configurations is tested, beyond `measures.measure`: failed-to-train as a
quantity, the intersection-union test (a against each of several arms: every comparison must hold, so
its p is the largest), equivalence by TOST, and what a row adds in appended columns: the train and
test accuracy components of a gap, and a second interval (the Hodges-Lehmann shift with its Moses CI
for rank tests; the 90% CI that TOST reads for equivalence).
"""
from __future__ import annotations

import dataclasses
import math

import pandas as pd

from .. import stats
from ..stats import exact
from ..config.claims_file import ClaimSpec
from .markdown import fmt_p
from .measures import MEASURES, TIMING, Result, arm, env_note, failed_to_train, measure, steady_note, trainability

GAP_COLUMNS = ["train_diff", "train_diff_ci_low", "train_diff_ci_high", "test_diff", "test_diff_ci_low",
               "test_diff_ci_high"]
SECOND_COLUMNS = ["second_estimate", "second_ci_low", "second_ci_high", "second_interval"]


def unit_of(c: ClaimSpec) -> tuple[str, str]:
    """(runs column or quantity, unit) of a claim's quantity."""
    if c.quantity == "failed_to_train":
        return "failed to train", "failed"
    m = MEASURES[c.quantity]
    return m.column, m.unit


def test_pair(c: ClaimSpec, runs: pd.DataFrame, la: str, lb: str, extra_notes=()) -> tuple[Result, list]:
    """The test of a against b on one quantity, and the row's notes (runs left out, timing caveats)."""
    (ga, out_a), (gb, out_b) = arm(runs, la), arm(runs, lb)
    notes = [f"left out: {out_a or 'none'} vs {out_b or 'none'}" if out_a or out_b else "", *extra_notes]
    if c.quantity == "failed_to_train":
        fa, fb = (failed_to_train(g) for g in (ga, gb))
        return trainability([(int(fa.sum()), len(ga), int(fb.sum()), len(gb))]), notes
    m = MEASURES[c.quantity]
    res = measure(m, ga, gb)
    if m.column in TIMING:
        notes += [steady_note(ga, gb) if m.column == "seconds_per_epoch" else "", env_note(ga, gb)]
    return res, notes


def _diff_words(lab: str, r: Result) -> str:
    ci = f" [{r.ci_low:+.2f}, {r.ci_high:+.2f}]" if math.isfinite(r.ci_low) and math.isfinite(r.ci_high) else ""
    return f"a − {lab} {r.diff:+.2f}{ci} (p = {fmt_p(r.p)})"


def intersection_union(parts: list, sign: int) -> tuple[str, Result]:
    """parts: [(label b_i, Result a vs b_i)] -> (the label shown as b, the row's Result). The claim holds
    only if a beats every b_i, so its p is the largest of theirs; the row shows the comparison that
    decides: one in the wrong direction when there is one, else the one with the largest p."""
    wrong = [(lab, r) for lab, r in parts if not (math.isfinite(r.direction) and r.direction * sign > 0)]
    pool = wrong or parts
    lab, shown = max(pool, key=lambda t: t[1].p if math.isfinite(t[1].p) else math.inf)
    ps = [r.p for _, r in parts]
    p = max(ps) if all(math.isfinite(x) for x in ps) else math.nan
    reason = next((r.reason for _, r in parts if not math.isfinite(r.p)), "")
    note = ("intersection-union test, a must beat each: " + "; ".join(_diff_words(lb, r) for lb, r in parts)
            + "; p = the larger")
    return lab, dataclasses.replace(shown, p=p, min_p=max(r.min_p for _, r in parts), reason=reason,
                                    test=f"{shown.test}, intersection-union", notes=[*shown.notes, note])


def analysis_margin(margin: float, unit: str) -> float:
    return math.log1p(margin) if unit == "ratio" else margin


def equivalence(r: Result, unit: str, margin: float) -> Result:
    """TOST within ±margin (report units; for a ratio, a fraction: 0.1 = ±10%) on the row's Welch arms."""
    e = stats.tost(r.a, r.b, analysis_margin(margin, unit))
    shown = f"×(1 ± {margin:g})" if unit == "ratio" else f"±{margin:g} {unit}"
    return dataclasses.replace(r, p=e.p, min_p=0.0, reason=e.reason or r.reason,
                               test=f"TOST, two one-sided Welch tests ({shown})")


def gap_components(runs: pd.DataFrame, la: str, lb: str) -> dict:
    """Train and test accuracy differences a − b (pp, completed runs, Welch 95% CI): the gap's parts."""
    (ga, _), (gb, _) = arm(runs, la), arm(runs, lb)
    ga, gb = (g[g["status"] == "completed"] for g in (ga, gb))
    out = {}
    for name, col in (("train_diff", "final_train_acc"), ("test_diff", "final_test_acc")):
        d = stats.mean_difference(ga[col].astype(float) * 100, gb[col].astype(float) * 100)
        out.update({name: d.diff, f"{name}_ci_low": d.ci_low, f"{name}_ci_high": d.ci_high})
    return out


def gap_note(g: dict) -> str:
    def part(name):
        lo, hi = g[f"{name}_ci_low"], g[f"{name}_ci_high"]
        if not math.isfinite(g[name]):
            return "n/a (an arm without completed runs)"
        ci = f" [{lo:+.2f}, {hi:+.2f}]" if math.isfinite(lo) and math.isfinite(hi) else " (no CI: no spread)"
        return f"{g[name]:+.2f}{ci} pp"
    return f"gap components (a − b, 95% CI): train accuracy {part('train_diff')}, test accuracy {part('test_diff')}"


def second_interval(r: Result, unit: str, equivalent: bool) -> dict:
    """The appended second interval: the 90% CI that TOST reads (equivalence rows); the Hodges-Lehmann
    shift with its Moses 95% CI (rank-test rows whose runs all reached the target); else n/a."""
    nan = {"second_estimate": math.nan, "second_ci_low": math.nan, "second_ci_high": math.nan,
           "second_interval": ""}
    if equivalent:
        d = stats.mean_difference(r.a, r.b, conf=1 - 2 * stats.ALPHA)
        vals = (d.diff, d.ci_low, d.ci_high)
        what = f"{100 - 200 * stats.ALPHA:g}% CI of a − b (TOST's)"
    elif r.test.startswith("rank") and len(r.a) == r.n_a and len(r.b) == r.n_b:
        vals = exact.shift_ci(r.a, r.b)
        what = "Hodges-Lehmann shift, Moses 95% CI"
    else:
        return nan
    if unit == "ratio":
        vals = tuple(math.exp(v) if math.isfinite(v) else math.nan for v in vals)
        what = what.replace("shift", "ratio a / b").replace("a − b", "a / b")
    if not math.isfinite(vals[0]):
        return nan
    return dict(zip(SECOND_COLUMNS, (*vals, what)))
