"""Which configurations a claim compares: its arms (claim_file.Arm) matched against the runs.

A claim whose b is a set of settings, `baseline` or `each` is checked per context: the runs that
share every varying setting the claim does not name (the kind aside); in each, arm a is the first
configuration matching a's settings and b the one matching b's (or the context's baseline). A
`matched` claim pairs every configuration matching a with the configuration that differs from it
only in the changed settings, whatever its context. An arm no run matches is "not checked".
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ..config.claims_file import Arm, ClaimSpec, _text
from .collect import make_label
from .tables import matches


@dataclass
class Pair:
    claim: ClaimSpec
    context: str
    la: str
    lbs: list          # one label; several for an intersection-union claim (b: each)
    order: tuple       # where the row goes: (position of the context's first run, claim index)
    notes: list


def swap(text: str, x: str, y: str) -> str | None:
    """'[act,dropout,norm]' -> '[act,norm,dropout]' for x, y = dropout, norm; None when either is absent."""
    toks = str(text).strip("[]").split(",")
    if x not in toks or y not in toks:
        return None
    i, j = toks.index(x), toks.index(y)
    toks[i], toks[j] = toks[j], toks[i]
    return "[" + ",".join(toks) + "]"


def matches_settings(row, settings) -> bool:
    """Whether a run has every setting (one of each key's values); key 'reg' is the run's kind."""
    return all(any(matches(row, (k, _text(v))) for v in values) for k, values in settings)


def _kind_words(arm: Arm) -> str:
    return " or ".join(repr(k) for k in arm.kinds)


def _missing(arm: Arm) -> str:
    """How a skipped row names the arm no configuration matched."""
    return f"no {arm.describe()} configuration in these runs"  # 'no the baseline configuration ...' as before


def context_dims(claim: ClaimSpec, dims: list) -> list:
    """The label dimensions that define the claim's contexts: those it does not name."""
    arms = [claim.a, *(claim.b.each or [claim.b])]
    named = {k for arm in arms for k, _ in arm.settings} | {k for k, _ in claim.b.matched}
    return [d for d in dims if d not in named]


def _first(g: pd.DataFrame, arm: Arm) -> str | None:
    for _, r in g.iterrows():
        if matches_settings(r, arm.settings):
            return str(r["label"])
    return None


def in_context(runs: pd.DataFrame, dims: list, base: dict, claims: list) -> tuple[list[Pair], list]:
    """The per-context pairs of every claim that is not `matched`, and the (claim [context], why) not checked.
    `runs`: with the standard context (tables.with_context); `base`: {standard context: baseline label}."""
    pairs, skipped = [], []
    first_pos = {}
    for ci, c in enumerate(claims):
        if c.b.matched:
            continue
        own = context_dims(c, dims)
        r = runs[[matches_settings(row, c.context) for _, row in runs.iterrows()]] if c.context else runs
        ctx = r["context"] if own == dims else pd.Series([make_label(row, own, drop=("kind",))
                                                          for _, row in r.iterrows()], index=r.index, dtype=object)
        baselines = set(v for v in base.values() if v is not None)
        for name, g in r.groupby(ctx, sort=False):
            pos = first_pos.setdefault((tuple(own), name), int(g.index[0]))
            where = "" if name == "all" else f" [{name}]"
            la = _first(g, c.a)
            if c.b.baseline:
                if own == dims:
                    lbs = [base.get(name)]
                else:
                    lbs = [next((lab for lab in g["label"].astype(str) if lab in baselines), None)]
            else:
                lbs = [_first(g, arm) for arm in (c.b.each or [c.b])]
            if la is None or None in lbs or la in lbs:
                missing = c.a if la is None else c.b.each[lbs.index(None)] if c.b.each and None in lbs else c.b
                skipped.append(((pos, ci), f"{c.id}{where}", _missing(missing)))
                continue
            pairs.append(Pair(c, name, la, lbs, (pos, ci), []))
    skipped.sort(key=lambda s: s[0])
    return sorted(pairs, key=lambda p: p.order), [(label, why) for _, label, why in skipped]


def _settings_of(runs: pd.DataFrame, keys: list) -> dict:
    """{configuration label: (its values of `keys`, its context, its first row)}."""
    out = {}
    for _, r in runs.iterrows():
        out.setdefault(str(r["label"]), (tuple(str(r.get(f"cfg.{k}")) for k in keys), r["context"], r))
    return out


def _change(vals: tuple, keys: list, changes) -> tuple | None:
    out = list(vals)
    for key, v in changes:
        i = keys.index(key)
        new = swap(out[i], *v["swap"]) if isinstance(v, dict) else _text(v)
        if new is None or new == out[i]:
            return None
        out[i] = new
    return tuple(out)


def matched(runs: pd.DataFrame, varying: list, claims: list) -> tuple[list[Pair], list]:
    """The pairs of the `matched` claims: each configuration matching a with the configuration that
    differs from it only in the claim's changed settings (the runs' other varying settings all equal)."""
    pairs, skipped = [], []
    known = runs[runs["has_config"]] if "has_config" in runs else runs
    for ci, c in enumerate(claims):
        if not c.b.matched:
            continue
        changed = [k for k, _ in c.b.matched]
        keys = sorted(set(varying) | set(changed))
        settings = _settings_of(known[[matches_settings(r, c.context) for _, r in known.iterrows()]]
                                if c.context else known, keys)
        by_values = {vals: lab for lab, (vals, _, _) in settings.items()}
        partner = c.b.describe()
        kinds = [lab for lab, (_, _, row) in settings.items() if matches_settings(row, [s for s in c.a.settings
                                                                                      if s[0] == "reg"])]
        if not kinds:
            skipped.append((c.id, f"no {_kind_words(c.a) or c.a.describe()} configuration in these runs"))
            continue
        applied = False
        for la in kinds:
            vals, ctx, row = settings[la]
            target = _change(vals, keys, c.b.matched) if matches_settings(row, c.a.settings) else None
            if target is None:
                continue
            applied = True
            lb = by_values.get(target)
            where = "" if ctx == "all" else f" [{ctx}]"
            if lb is None:
                skipped.append((f"{c.id}{where}", f"no matched partner of {la}: {partner}"))
                continue
            pairs.append(Pair(c, ctx, la, [lb], (ci,), [f"matched: a and b differ only in {', '.join(changed)}"]))
        if not applied:
            skipped.append((c.id, f"no {_kind_words(c.a) or c.a.describe()} configuration with a matched "
                                  f"partner ({partner})"))
    return pairs, skipped
