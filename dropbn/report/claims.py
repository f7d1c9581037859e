"""The claims check: each claim of a claims file (claim_file.py; by default the article's,
configs/claims/article.yaml), per context, as one row of one table with its test (arms.py: which
configurations; measures.py and forms.py: which runs and values enter, and how each quantity is
tested), effect size, raw and Holm-adjusted p and verdict; one trainability row per comparison with
failed runs; and for every inconclusive row the seeds per arm that would detect the claim's minimal
effect. With a registration (registration.py) the Holm family is the confirmatory rows only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from .. import stats
from ..stats import power
from . import arms as A
from . import forms as F
from . import image_sample as IS
from ..config import registration as R
from ..config.claims_file import ClaimSet, MinEffect, load as load_claims
from .collect import Collection
from .markdown import ci_text
from .measures import FAILED_RULE, TIMING, Result, arm, failed_to_train, trainability, unequal_conditions
from .tables import with_context


BN_KINDS = {"batchnorm", "both", "dropout_after_bn", "dropout_before_bn"}
COLUMNS = ["claim", "context", "text", "a", "b", "quantity", "unit", "statistic", "value_a", "value_b",
           "diff", "diff_ci_low", "diff_ci_high", "hedges_g", "test", "p_value", "p_holm", "verdict", "reason",
           "seeds_per_arm", "n_a", "n_b", "note"]
# appended (claims.csv keeps COLUMNS first, in their order)
EXTRA_COLUMNS = ["registration", "expect", "min_effect", "margin", *F.GAP_COLUMNS, *F.SECOND_COLUMNS, *IS.COLUMNS,
                 "conditions"]
TEXT_COLUMNS = ("second_interval", "images_holds", "images_note", "conditions")
UNEQUAL = "not measured under equal conditions"
EQUIVALENT = "equivalent"


@dataclass
class ClaimsTable:
    df: pd.DataFrame               # COLUMNS + EXTRA_COLUMNS, one row per test
    skipped: list                  # [(claim, why not checked)]
    m: int                         # Holm family size: rows of the family with a finite p_value
    unreachable: int = 0           # of those, rows whose test cannot reach p < ALPHA with their runs


# ---------------------------------------------------------------- the table

def _labels_by_kind(g: pd.DataFrame) -> dict:
    out = {}
    for lab, kind in zip(g["label"].astype(str), g["kind"]):
        out.setdefault(kind, lab)
    return out


def _row(cid, ctx, text, la, lb, quantity, unit, r: Result, expect, notes, sources=(), claim=None) -> dict:
    return {"claim": cid, "context": ctx, "text": text, "a": la, "b": lb, "quantity": quantity, "unit": unit,
            "statistic": r.statistic, "value_a": r.value_a, "value_b": r.value_b, "diff": r.diff,
            "diff_ci_low": r.ci_low, "diff_ci_high": r.ci_high, "hedges_g": r.hedges_g, "test": r.test,
            "p_value": r.p, "n_a": r.n_a, "n_b": r.n_b, "note": "; ".join(n for n in r.notes + notes if n),
            "_result": r, "_expect": expect, "_sources": tuple(sources), "_claim": claim}


def claim_rows(coll: Collection, base: dict, claim_set: ClaimSet) -> tuple[list[dict], list, dict]:
    """Claim rows of every context, the claims not checked, and {(kind a, kind b): {context: (la, lb, digests)}}."""
    runs = with_context(coll)
    specs = list(claim_set.claims)
    found, skipped = A.in_context(runs, coll.dims, base, specs)
    m_found, m_skipped = A.matched(runs, coll.varying, specs)
    kind = dict(zip(runs["label"].astype(str), runs["kind"]))
    rows, pairs, preds = [], {}, {}
    for p in found + m_found:
        c = p.claim
        column, unit = F.unit_of(c)
        tested = [(lb, *F.test_pair(c, runs, p.la, lb, p.notes)) for lb in p.lbs]
        if len(tested) > 1:
            lb, res = F.intersection_union([(lb, r) for lb, r, _ in tested], c.sign)
            notes = next(n for b, _, n in tested if b == lb)
        else:
            lb, res, notes = tested[0]
        if c.expect == EQUIVALENT:
            res = F.equivalence(res, unit, c.margin)
        row = _row(c.id, p.context, c.text, p.la, lb, column, unit, res, c.sign, notes, [c.digest], c)
        if c.quantity == "generalization_gap":
            gap = F.gap_components(runs, p.la, lb)
            row.update(gap)
            row["note"] = "; ".join(x for x in (row["note"], F.gap_note(gap)) if x)
        row.update(F.second_interval(res, unit, c.expect == EQUIVALENT))
        (ga, _), (gb, _) = arm(runs, p.la), arm(runs, lb)
        row.update(IS.interval(ga, gb, c.quantity, preds))
        row["conditions"] = unequal_conditions(ga, gb) if column in TIMING else ""
        rows.append(row)
        if not c.b.matched:  # the claims' own pairs of kinds, for the trainability rows
            for b in p.lbs:
                entry = pairs.setdefault((kind[p.la], kind[b]), {})
                la_lb, digests = entry.get(p.context, ((p.la, b), set()))
                entry[p.context] = (la_lb, digests | {c.digest})
    return rows, skipped + m_skipped, pairs


def trainability_rows(coll: Collection, pairs: dict, claim_set: ClaimSet) -> list[dict]:
    """One row per compared pair of kinds with failed runs, pooling the contexts as strata: the claims'
    pairs, then the claim set's trainability pairs."""
    runs = coll.runs.assign(_failed=failed_to_train(coll.runs))
    pairs = {k: dict(v) for k, v in pairs.items()}
    listed = {(t.a, t.b): t for t in claim_set.trainability}
    for ctx, g in with_context(coll).groupby("context", sort=False):
        by_kind = _labels_by_kind(g)
        for (ka, kb), t in listed.items():
            if ka in by_kind and kb in by_kind:
                entry = pairs.setdefault((ka, kb), {})
                la_lb, digests = entry.get(ctx, ((by_kind[ka], by_kind[kb]), set()))
                entry[ctx] = (la_lb, digests | {t.digest})
    rows = []
    for (ka, kb), per_ctx in pairs.items():
        strata = []
        for (la, lb), _ in per_ctx.values():
            (ga, _), (gb, _) = arm(runs, la), arm(runs, lb)
            strata.append((int(ga["_failed"].sum()), len(ga), int(gb["_failed"].sum()), len(gb)))
        if not sum(s[0] + s[2] for s in strata):
            continue
        expect = -1 if ka in BN_KINDS and kb not in BN_KINDS else +1
        text = (f"Batch norm stabilises training: fewer runs of {ka} than of {kb} fail to train" if expect < 0
                else f"{ka} fails to train more often than {kb}")
        text += f" ({FAILED_RULE})"
        if (ka, kb) in listed:
            text = f"{listed[ka, kb].text}: {text}"
        ctxs = list(per_ctx)
        single = len(ctxs) == 1
        la, lb = per_ctx[ctxs[0]][0] if single else (ka, kb)
        context = ctxs[0] if single else "pooled over " + ", ".join(ctxs)
        sources = set().union(*(d for _, d in per_ctx.values()))
        rows.append(_row(f"T{len(rows) + 1}", context, text, la, lb, "failed to train", "failed",
                         trainability(strata), expect, [], sources))
    return rows


def seeds_needed(r: Result, unit: str, m: int, eff: MinEffect) -> tuple[int | None, str]:
    """(seeds per arm that would detect the minimal effect `eff` at 80% power and alpha/m, or None when no
    such number follows; the sentence saying so)."""
    limit = power.FISHER_N_MAX if unit == "failed" else power.N_MAX
    if unit == "failed":
        low = float(min(r.a[0], r.b[0]))
        n, how = power.fisher_seeds(low, min(1.0, low + eff.value), m=m), "Fisher's test, exact"
    elif unit == "spread":
        n, how = power.spread_seeds(eff.value, m=m), "F test of two variances"
    else:
        effect = math.log1p(eff.value) if unit == "ratio" else eff.value
        sd = stats.pooled_sd(r.a, r.b)
        if not (math.isfinite(sd) and sd > 0):
            if r.test.startswith("rank"):
                return None, (f"no spread among the runs that reached the target, so no power calculation; the "
                              f"rank test needs at least {power.separation_seeds(m=m)} seeds per arm to reach "
                              "alpha/m at all")
            return None, f"no spread observed, so no sample size follows for {eff.text}"
        if r.test.startswith("rank"):
            n, how = power.rank_seeds(effect, sd, m=m), "t test on the runs that reached the target / 3/pi"
        else:
            n, how = power.seeds_per_arm(effect, sd, m=m), "two-sample t test, pooled observed spread"
    if n is None or n > limit:
        return None, f"more than {limit} seeds per arm would be needed to detect {eff.text} ({how})"
    return n, f"{n} seeds per arm would detect {eff.text} at 80% power and alpha/m ({how})"


def tost_note(r: Result, unit: str, m: int, eff: MinEffect) -> str:
    """Equivalence within the minimal effect by TOST at alpha/m, when it holds (a note, never a verdict)."""
    if unit not in ("pp", "ratio") or not r.test.startswith("Welch"):
        return ""
    e = stats.tost(r.a, r.b, F.analysis_margin(eff.value, unit))
    if not (math.isfinite(e.p) and e.p < stats.ALPHA / m):
        return ""
    return f"TOST: the difference lies within ±{eff.text} (p = {e.p:.2g} < alpha/m)"


def _registration(row, registered) -> str:
    if registered is None:
        return R.NOT_REGISTERED
    return R.CONFIRMATORY if set(row["_sources"]) & set(registered) else R.EXPLORATORY


def _exploratory(r: Result, expect: int, equivalent: bool) -> tuple[str, str]:
    """(verdict, reason) of a row outside the registered family: raw p only, no verdict."""
    if not math.isfinite(r.p):
        return f"{R.EXPLORATORY}: no p value", r.reason or "no p value"
    if equivalent:
        how = f"TOST raw p = {r.p:.2g}"
    elif not math.isfinite(r.direction) or r.direction == 0:
        how = f"no difference, raw p = {r.p:.2g}"
    else:
        side = "in the claimed direction" if (r.direction > 0) == (expect > 0) else "opposite to the claim"
        how = f"difference {side}, raw p = {r.p:.2g}"
    return f"{R.EXPLORATORY}: {how}", ("added or changed after the claims were registered: not in the Holm "
                                       "family, raw p only, never a verdict")


def _verdict(row, r: Result, m: int, min_effects: dict) -> tuple[str, str, float]:
    """(verdict, reason, seeds per arm or NaN) of a row in the family."""
    claim = row["_claim"]
    eff = claim.min_effect if claim is not None else min_effects.get(row["unit"])
    if claim is not None and claim.expect == EQUIVALENT:
        if math.isfinite(row["p_holm"]) and row["p_holm"] < stats.ALPHA:
            return EQUIVALENT, f"p_holm = {row['p_holm']:.2g} < {stats.ALPHA:g}: a − b lies within the margin", math.nan
        why = r.reason or ("no p value" if not math.isfinite(row["p_holm"]) else
                           f"p_holm = {row['p_holm']:.2g} >= {stats.ALPHA:g}: the data do not place a − b within "
                           "the margin")
        return stats.INCONCLUSIVE, why, math.nan
    v = stats.verdict(r.direction, row["p_holm"], row["_expect"], why_no_p=r.reason, min_p=r.min_p)
    why, n = v.reason, math.nan
    if v.verdict == stats.INCONCLUSIVE and eff is not None:
        k, sentence = seeds_needed(r, row["unit"], m, eff)
        why += f"; {sentence}"
        n = k if k else math.nan
        tn = tost_note(r, row["unit"], m, eff)
        why += f"; {tn}" if tn else ""
    return v.verdict, why, n


def claims(coll: Collection, base: dict, claim_set: ClaimSet | None = None, registered=None) -> ClaimsTable:
    """Every claim row and trainability row with verdicts and power. `registered`: the claim digests
    registered before the final runs (registration.py), or None: then every row is one Holm family
    ('not pre-registered'); else the confirmatory rows are the family and the others exploratory."""
    claim_set = claim_set or load_claims()
    rows, skipped, pairs = claim_rows(coll, base, claim_set)
    rows += trainability_rows(coll, pairs, claim_set)
    if not rows:
        return ClaimsTable(pd.DataFrame(columns=COLUMNS + EXTRA_COLUMNS), skipped, 0)
    df = pd.DataFrame(rows)
    for col in EXTRA_COLUMNS:
        if col not in df:
            df[col] = "" if col in TEXT_COLUMNS else math.nan
    for col in TEXT_COLUMNS:
        df[col] = df[col].fillna("")
    df["registration"] = [_registration(row, registered) for _, row in df.iterrows()]
    df["conditions"] = df["conditions"].fillna("")
    unequal = (df["conditions"] != "").to_numpy()  # timing rows whose arms shared a device: no test
    family = ((df["registration"] != R.EXPLORATORY).to_numpy()) & ~unequal
    m = stats.family_size(df.loc[family, "p_value"])
    df["p_holm"] = math.nan
    df.loc[family, "p_holm"] = stats.holm(df.loc[family, "p_value"])
    verdicts, reasons, seeds = [], [], []
    for fam, (_, row) in zip(family, df.iterrows()):
        r: Result = row["_result"]
        claim = row["_claim"]
        if row["conditions"]:
            v, why, n = UNEQUAL, f"{row['conditions']}: left out of the Holm family", math.nan
        elif fam:
            v, why, n = _verdict(row, r, max(m, 1), claim_set.min_effects)
        else:
            (v, why), n = _exploratory(r, row["_expect"], claim is not None and claim.expect == EQUIVALENT), math.nan
        verdicts.append(v)
        reasons.append(why)
        seeds.append(n)
    df["verdict"], df["reason"] = verdicts, reasons
    df["seeds_per_arm"] = pd.array([None if math.isnan(n) else int(n) for n in seeds], dtype="Int64")
    df["expect"] = [c.expect if c is not None else ("greater" if e > 0 else "less")
                    for c, e in zip(df["_claim"], df["_expect"])]
    df["min_effect"] = [c.min_effect.value if c is not None else claim_set.min_effects["failed"].value
                        for c in df["_claim"]]
    df["margin"] = [c.margin if c is not None and c.margin is not None else math.nan for c in df["_claim"]]
    IS.adjust(df, family)
    unreachable = sum(fam and math.isfinite(p) and r.min_p >= stats.ALPHA
                      for fam, p, r in zip(family, df["p_value"], df["_result"]))
    return ClaimsTable(df[COLUMNS + EXTRA_COLUMNS], skipped, m, int(unreachable))


def skipped_lines(skipped: list) -> list[str]:
    """The claims not checked as Markdown list lines, one per reason: '- claims 1, 3 [ctx a; ctx b]: why'
    rather than one line per claim and context."""
    groups: dict = {}  # reason -> {claim id: [contexts]}
    for label, why in skipped:
        cid, _, ctx = str(label).partition(" [")
        groups.setdefault(why, {}).setdefault(cid, []).append(ctx[:-1] if ctx.endswith("]") else ctx)
    lines = []
    for why, ids in groups.items():
        by_ctxs: dict = {}
        for cid, ctxs in ids.items():
            by_ctxs.setdefault(tuple(c for c in ctxs if c), []).append(cid)
        for ctxs, cids in by_ctxs.items():
            where = f" [{'; '.join(ctxs)}]" if ctxs else ""
            lines.append(f"- claim{'s' if len(cids) > 1 else ''} {', '.join(cids)}{where}: {why}")
    return lines


def verdict_text(row) -> str:
    """'**inconclusive**: a − b between -0.4 and +0.2 pp; ...': the verdict with what the data allow."""
    out = f"**{row['verdict']}**"
    lo, hi = row["diff_ci_low"], row["diff_ci_high"]
    if row["verdict"] == stats.INCONCLUSIVE and math.isfinite(lo) and math.isfinite(hi):
        if row["unit"] == "ratio":
            out += f": a / b {ci_text((lo - 1) * 100, (hi - 1) * 100, '%', 0)} (95% CI)"
        elif row["unit"] == "spread":
            out += f": sd a / sd b between ×{lo:.2f} and ×{hi:.2f} (95% CI)"
        else:
            unit = "pp" if row["unit"] in ("pp", "failed") else row["unit"]  # failed: runs failing, in pp
            out += f": a − b {ci_text(lo, hi, unit, 2)} (95% CI)"
    return out + f" — {row['reason']}"
