"""The claims check: each claim of the article, per context, as one row of one table with its test
(measures.py: which runs and values enter, and how each quantity is tested), effect size, raw and
Holm-adjusted p and verdict; one trainability row per comparison with failed runs; and for every
inconclusive row the seeds per arm that would detect a stated minimal effect (MIN_EFFECTS).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import pandas as pd

from .. import stats
from ..stats import power
from .collect import Collection
from .markdown import ci_text
from .measures import FAILED_RULE, MEASURES, TIMING, Result, arm, env_note, failed_to_train, itt_values, \
    measure, steady_note, trainability
from .tables import with_context


@dataclass(frozen=True)
class MinEffect:
    value: float     # in the analysis scale of the test (pp; epochs; fraction; ratio)
    text: str        # in report units


# The smallest effects the power statements are about, one per kind of quantity.
MIN_EFFECTS = {
    "pp": MinEffect(0.2, "0.2 pp of accuracy"),
    "epochs": MinEffect(1.0, "1 epoch"),
    "ratio": MinEffect(0.10, "10% of seconds"),
    "spread": MinEffect(2.0, "a 2x ratio of standard deviations"),
    "failed": MinEffect(0.5, "50 pp of runs failing (from the lower arm's observed fraction)"),
}

BASE = "BASE"                # b = the baseline configuration of the context
BEST_SINGLE = "BEST_SINGLE"  # b = the better of 'dropout' and 'batchnorm' (by mean final test accuracy, ITT)


@dataclass(frozen=True)
class Matched:
    """b = a's configuration with one setting changed and every other setting equal: a contrast that
    changes one thing, looked up among all the runs whatever their context (the changed setting
    usually puts b in another one)."""
    key: str                                 # the config key in which b differs from a
    change: Callable[[str], "str | None"]    # a's value (as collect.fmt_value prints it) -> b's; None: no b
    partner: str                             # b, in words


def swap_dropout_norm(order: str) -> str | None:
    """'[act,dropout,norm]' -> '[act,norm,dropout]': the block with dropout and the norm layer swapped."""
    toks = order.strip("[]").split(",")
    if "dropout" not in toks or "norm" not in toks:
        return None
    i, j = toks.index("dropout"), toks.index("norm")
    toks[i], toks[j] = toks[j], toks[i]
    return "[" + ",".join(toks) + "]"


@dataclass(frozen=True)
class Claim:
    id: str
    text: str        # what the article (or the literature) says
    a: "str | tuple" # kind(s) of configuration a
    b: "str | Matched"  # kind of configuration b, BASE / BEST_SINGLE, or a Matched partner of a
    measure: str     # key of MEASURES
    expect: int      # expected sign of a - b if the claim holds

    @property
    def kinds(self) -> tuple:
        return (self.a,) if isinstance(self.a, str) else tuple(self.a)


CLAIMS = [
    Claim("1", "Dropout slows training down (more epochs to the target accuracy)", "dropout", BASE,
          "epochs_to_target", +1),
    Claim("2a", "Batch norm speeds training up (fewer epochs to the target accuracy)", "batchnorm", BASE,
          "epochs_to_target", -1),
    Claim("2b", "Batch norm speeds training up (fewer seconds to the target accuracy)", "batchnorm", BASE,
          "seconds_to_target", -1),
    Claim("3", "Dropout improves generalization (smaller train − test accuracy gap)", "dropout", BASE,
          "generalization_gap", -1),
    Claim("4", "Batch norm improves accuracy (higher final test accuracy)", "batchnorm", BASE,
          "final_test_acc", +1),
    Claim("5", "Batch norm improves stability (smaller spread of final test accuracy across seeds)",
          "batchnorm", BASE, "final_test_acc_spread", -1),
    Claim("6", "Batch norm adds compute overhead (more seconds per epoch)", "batchnorm", BASE,
          "seconds_per_epoch", +1),
    Claim("7", "Dropout and batch norm combined give the best result (final test accuracy above the best "
          "single one)", "both", BEST_SINGLE, "final_test_acc", +1),
    # Li et al. 2019's variance shift, as contrasts that change one thing: dropout_before_bn
    # ([act,dropout,norm]) against the same block with dropout and batch norm swapped
    # ([act,norm,dropout], reg=dropout_after_bn) ...
    Claim("8", "Dropout placed before batch norm hurts (lower final test accuracy than the same block with "
          "dropout and batch norm swapped)", "dropout_before_bn",
          Matched("reg.order", swap_dropout_norm, "the same configuration with dropout and norm swapped in "
                  "reg.order (reg=dropout_after_bn for reg=dropout_before_bn)"), "final_test_acc", -1),
    # ... and dropout in the first block only (it feeds the next block's batch norm) against the last
    # block only (after every batch norm, Li et al.'s remedy): the same amount of dropout either way.
    Claim("9", "Dropout that feeds a batch norm layer hurts (dropout in the first block only, before the next "
          "block's batch norm, vs the last block only: the same amount of dropout)", ("both", "dropout_after_bn"),
          Matched("reg.dropout_blocks", lambda v: "last" if v == "first" else None,
                  "the same configuration with reg.dropout_blocks=last"), "final_test_acc", -1),
]
BN_KINDS = {"batchnorm", "both", "dropout_after_bn", "dropout_before_bn"}
# Trainability comparisons beyond the claims' own pairs, each with whose observation it tests: a row
# appears where a context has both kinds and some run failed to train, pooled over those contexts.
TRAINABILITY_PAIRS = {
    # their CNN results table (CIFAR-10, RMSprop, 50 epochs, one run per setting): at lr 0.001 the CNN with
    # dropout before its dense layer ended at 10.01%, with dropout in every layer at 32.26%, the standard
    # CNN at 32.26% / 57.17% (1024 / 512 dense units) and the CNN with batch norm at 84.47%
    ("dropout", "batchnorm"): "Garbin et al. 2020 (their CIFAR-10 CNN at RMSprop lr 0.001, one run each: "
                              "10.01% with dropout, 84.47% with batch norm): with dropout the network "
                              "collapses at learning rates where batch norm trains",
}
COLUMNS = ["claim", "context", "text", "a", "b", "quantity", "unit", "statistic", "value_a", "value_b",
           "diff", "diff_ci_low", "diff_ci_high", "hedges_g", "test", "p_value", "p_holm", "verdict", "reason",
           "seeds_per_arm", "n_a", "n_b", "note"]


@dataclass
class ClaimsTable:
    df: pd.DataFrame               # COLUMNS, one row per test
    skipped: list                  # [(claim, why not checked)]
    m: int                         # Holm family size: rows with a finite p_value
    unreachable: int = 0           # of those, rows whose test cannot reach p < ALPHA with their runs


# ---------------------------------------------------------------- the table

def _labels_by_kind(g: pd.DataFrame) -> dict:
    out = {}
    for lab, kind in zip(g["label"].astype(str), g["kind"]):
        out.setdefault(kind, lab)
    return out


def _best_single(g: pd.DataFrame, by_kind: dict) -> str | None:
    means = {}
    for k in ("dropout", "batchnorm"):
        if k in by_kind:
            v = itt_values(arm(g, by_kind[k])[0])[0]
            if len(stats.clean(v)):
                means[by_kind[k]] = float(stats.clean(v).mean())
    return max(means, key=means.get) if len(means) == 2 else None


def _row(cid, ctx, text, la, lb, quantity, unit, r: Result, expect, notes) -> dict:
    return {"claim": cid, "context": ctx, "text": text, "a": la, "b": lb, "quantity": quantity, "unit": unit,
            "statistic": r.statistic, "value_a": r.value_a, "value_b": r.value_b, "diff": r.diff,
            "diff_ci_low": r.ci_low, "diff_ci_high": r.ci_high, "hedges_g": r.hedges_g, "test": r.test,
            "p_value": r.p, "n_a": r.n_a, "n_b": r.n_b, "note": "; ".join(n for n in r.notes + notes if n),
            "_result": r, "_expect": expect}


def claim_rows(coll: Collection, base: dict) -> tuple[list[dict], list, dict]:
    """Claim rows of every context, the claims not checked, and {(kind a, kind b): {context: (la, lb)}}."""
    runs = with_context(coll)
    rows, skipped, pairs = [], [], {}
    for ctx, g in runs.groupby("context", sort=False):
        by_kind = _labels_by_kind(g)
        where = "" if ctx == "all" else f" [{ctx}]"
        for c in CLAIMS:
            if isinstance(c.b, Matched):
                continue  # matched_rows: across contexts
            la = by_kind.get(c.a)
            lb = base.get(ctx) if c.b == BASE else _best_single(g, by_kind) if c.b == BEST_SINGLE else by_kind.get(c.b)
            if la is None or lb is None or la == lb:
                need = {BASE: "the baseline", BEST_SINGLE: "both 'dropout' and 'batchnorm' (with results)"}
                miss = c.a if la is None else need.get(c.b, repr(c.b))
                skipped.append((f"{c.id}{where}", f"no {miss if miss.startswith(('the', 'both')) else repr(miss)} "
                                                  "configuration in these runs"))
                continue
            (ga, out_a), (gb, out_b) = arm(g, la), arm(g, lb)
            m = MEASURES[c.measure]
            res = measure(m, ga, gb)
            notes = [f"left out: {out_a or 'none'} vs {out_b or 'none'}" if out_a or out_b else ""]
            if m.column in TIMING:
                notes += [steady_note(ga, gb) if m.column == "seconds_per_epoch" else "", env_note(ga, gb)]
            rows.append(_row(c.id, ctx, c.text, la, lb, m.column, m.unit, res, c.expect, notes))
            kind = dict(zip(g["label"].astype(str), g["kind"]))
            pairs.setdefault((kind[la], kind[lb]), {})[ctx] = (la, lb)
    m_rows, m_skipped = matched_rows(runs, coll.varying)
    return rows + m_rows, skipped + m_skipped, pairs


def _settings(runs: pd.DataFrame, keys: list) -> dict:
    """{configuration label: (its values of `keys`, its context)}."""
    out = {}
    for _, r in runs.iterrows():
        out.setdefault(str(r["label"]), (tuple(str(r.get(f"cfg.{k}")) for k in keys), r["context"]))
    return out


def matched_rows(runs: pd.DataFrame, varying: list) -> tuple[list[dict], list]:
    """The rows of the Matched claims: each configuration of kind a paired with the configuration that
    differs from it only in the claim's key (the runs' other varying settings all equal)."""
    rows, skipped = [], []
    known = runs[runs["has_config"]] if "has_config" in runs else runs
    kinds = dict(zip(known["label"].astype(str), known["kind"]))
    for c in (c for c in CLAIMS if isinstance(c.b, Matched)):
        key = c.b.key
        keys = sorted(set(varying) | {key})
        settings = _settings(known, keys)
        by_values = {vals: lab for lab, (vals, _) in settings.items()}
        ki = keys.index(key)
        candidates = [lab for lab in settings if kinds[lab] in c.kinds]
        if not candidates:
            skipped.append((c.id, f"no {' or '.join(repr(k) for k in c.kinds)} configuration in these runs"))
            continue
        applied = False
        for la in candidates:
            vals, ctx = settings[la]
            target = c.b.change(vals[ki])
            if target is None:
                continue
            applied = True
            lb = by_values.get(vals[:ki] + (target,) + vals[ki + 1:])
            where = "" if ctx == "all" else f" [{ctx}]"
            if lb is None:
                skipped.append((f"{c.id}{where}", f"no matched partner of {la}: {c.b.partner}"))
                continue
            (ga, out_a), (gb, out_b) = arm(runs, la), arm(runs, lb)
            m = MEASURES[c.measure]
            notes = [f"left out: {out_a or 'none'} vs {out_b or 'none'}" if out_a or out_b else "",
                     f"matched: a and b differ only in {key}"]
            rows.append(_row(c.id, ctx, c.text, la, lb, m.column, m.unit, measure(m, ga, gb), c.expect, notes))
        if not applied:
            skipped.append((c.id, f"no {' or '.join(repr(k) for k in c.kinds)} configuration with a matched "
                                  f"partner ({c.b.partner})"))
    return rows, skipped


def trainability_rows(coll: Collection, pairs: dict) -> list[dict]:
    """One row per compared pair of kinds with failed runs, pooling the contexts as strata: the claims'
    pairs, then TRAINABILITY_PAIRS."""
    runs = coll.runs.assign(_failed=failed_to_train(coll.runs))
    pairs = {k: dict(v) for k, v in pairs.items()}
    for ctx, g in with_context(coll).groupby("context", sort=False):
        by_kind = _labels_by_kind(g)
        for ka, kb in TRAINABILITY_PAIRS:
            if ka in by_kind and kb in by_kind:
                pairs.setdefault((ka, kb), {}).setdefault(ctx, (by_kind[ka], by_kind[kb]))
    rows = []
    for (ka, kb), per_ctx in pairs.items():
        strata = []
        for la, lb in per_ctx.values():
            (ga, _), (gb, _) = arm(runs, la), arm(runs, lb)
            strata.append((int(ga["_failed"].sum()), len(ga), int(gb["_failed"].sum()), len(gb)))
        if not sum(s[0] + s[2] for s in strata):
            continue
        expect = -1 if ka in BN_KINDS and kb not in BN_KINDS else +1
        text = (f"Batch norm stabilises training: fewer runs of {ka} than of {kb} fail to train" if expect < 0
                else f"{ka} fails to train more often than {kb}")
        text += f" ({FAILED_RULE})"
        if (ka, kb) in TRAINABILITY_PAIRS:
            text = f"{TRAINABILITY_PAIRS[ka, kb]}: {text}"
        ctxs = list(per_ctx)
        single = len(ctxs) == 1
        la, lb = per_ctx[ctxs[0]] if single else (ka, kb)
        context = ctxs[0] if single else "pooled over " + ", ".join(ctxs)
        rows.append(_row(f"T{len(rows) + 1}", context, text, la, lb, "failed to train", "failed",
                         trainability(strata), expect, []))
    return rows


def seeds_needed(r: Result, unit: str, m: int) -> tuple[int | None, str]:
    """(seeds per arm that would detect MIN_EFFECTS[unit] at 80% power and alpha/m, or None when no
    such number follows; the sentence saying so)."""
    eff = MIN_EFFECTS[unit]
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


def tost_note(r: Result, unit: str, m: int) -> str:
    """Equivalence within the minimal effect by TOST at alpha/m, when it holds (a note, never a verdict)."""
    if unit not in ("pp", "ratio") or not r.test.startswith("Welch"):
        return ""
    margin = math.log1p(MIN_EFFECTS[unit].value) if unit == "ratio" else MIN_EFFECTS[unit].value
    e = stats.tost(r.a, r.b, margin)
    if not (math.isfinite(e.p) and e.p < stats.ALPHA / m):
        return ""
    return f"TOST: the difference lies within ±{MIN_EFFECTS[unit].text} (p = {e.p:.2g} < alpha/m)"


def claims(coll: Collection, base: dict) -> ClaimsTable:
    """Every claim row and trainability row, Holm-adjusted as one family, with verdicts and power."""
    rows, skipped, pairs = claim_rows(coll, base)
    rows += trainability_rows(coll, pairs)
    if not rows:
        return ClaimsTable(pd.DataFrame(columns=COLUMNS), skipped, 0)
    df = pd.DataFrame(rows)
    m = stats.family_size(df["p_value"])
    df["p_holm"] = stats.holm(df["p_value"])
    verdicts, reasons, seeds = [], [], []
    for _, row in df.iterrows():
        r: Result = row["_result"]
        v = stats.verdict(r.direction, row["p_holm"], row["_expect"], why_no_p=r.reason, min_p=r.min_p)
        why, n = v.reason, math.nan
        if v.verdict == stats.INCONCLUSIVE:
            k, sentence = seeds_needed(r, row["unit"], max(m, 1))
            why += f"; {sentence}"
            n = k if k else math.nan
            tn = tost_note(r, row["unit"], max(m, 1))
            why += f"; {tn}" if tn else ""
        verdicts.append(v.verdict)
        reasons.append(why)
        seeds.append(n)
    df["verdict"], df["reason"] = verdicts, reasons
    df["seeds_per_arm"] = pd.array([None if math.isnan(n) else int(n) for n in seeds], dtype="Int64")
    unreachable = sum(math.isfinite(p) and r.min_p >= stats.ALPHA for p, r in zip(df["p_value"], df["_result"]))
    return ClaimsTable(df[COLUMNS], skipped, m, int(unreachable))


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
