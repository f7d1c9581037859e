"""Pure statistics comparing two arms: the difference of two means, equivalence (TOST), spread and
rank correlation tests, Holm's adjustment and the verdict rule. Like summaries.py, plain numbers in,
numbers or small frozen dataclasses out.

Exact tests on counts and censored ranks are in exact.py, sample sizes in power.py, and the
wording of numbers in dropbn/report/markdown.py; dropbn/report/claims.py wires them into the claims table.

  mean_difference(a, b) -> MeanDiff     Welch difference with CI and p, Hedges' g (hedges_g, pooled_sd)
  tost(a, b, margin) -> Equivalence     Welch TOST: a note next to a verdict, never a verdict
  spread_test(a, b) -> Spread           Brown-Forsythe (Levene, median-centred) test of two spreads,
                                        with the normal-theory (F) interval of the ratio of their sds
  spearman(x, y) -> Correlation         rank correlation with its p value
  holm(pvalues), family_size(pvalues)   Holm's step-down adjustment; m = number of finite p values
  verdict(diff, p_holm, expect, ...) -> Verdict    supported / not supported / inconclusive, with why
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import special
from scipy import stats as st

from .summaries import ALPHA, CONF, clean, sample_sd, sd_ratio_ci

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"


# ---------------------------------------------------------------- difference of means

@dataclass(frozen=True)
class MeanDiff:
    """Welch comparison of the means of a and b (diff = mean_a - mean_b)."""

    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    sd_a: float
    sd_b: float
    diff: float
    ci_low: float         # confidence interval of diff (Welch); NaN when the test is undefined
    ci_high: float
    t: float
    df: float             # Welch-Satterthwaite degrees of freedom
    p: float              # two-sided; NaN when undefined (see reason)
    hedges_g: float       # NaN when n/a
    reason: str = ""      # why p / CI are n/a; "" when defined
    note: str = ""        # caveat on a defined test (e.g. one arm without spread)
    test: str = "Welch"


def pooled_sd(a, b) -> float:
    """sqrt(((n_a-1) s_a^2 + (n_b-1) s_b^2) / (n_a + n_b - 2)); NaN when n_a + n_b < 3."""
    ca, cb = clean(a), clean(b)
    dof = len(ca) + len(cb) - 2
    if dof < 1:
        return math.nan
    ss = sum((len(c) - 1) * sample_sd(c) ** 2 for c in (ca, cb) if len(c) > 1)
    return math.sqrt(ss / dof)


def hedges_g(a, b) -> float:
    """Hedges' g = J * (mean_a - mean_b) / pooled sd, with the exact small-sample correction
    J = Gamma(df/2) / (sqrt(df/2) Gamma((df-1)/2)), df = n_a + n_b - 2 (Hedges 1981).
    NaN when either arm has fewer than 2 runs or neither arm has any spread."""
    ca, cb = clean(a), clean(b)
    if len(ca) < 2 or len(cb) < 2:
        return math.nan
    s = pooled_sd(ca, cb)
    if not s > 0:
        return math.nan
    df = len(ca) + len(cb) - 2
    j = math.exp(special.gammaln(df / 2) - special.gammaln((df - 1) / 2)) / math.sqrt(df / 2)
    return float(j * (ca.mean() - cb.mean()) / s)


def mean_difference(a, b, conf: float = CONF) -> MeanDiff:
    """Difference of means with Welch's t-test (scipy.stats.ttest_ind, equal_var=False, two-sided)
    and its confidence interval (the result's confidence_interval), plus Hedges' g.

    No p value (NaN, with the reason) when an arm has fewer than 2 runs or neither arm has any
    spread: then the data cannot tell a real difference from seed noise, and no verdict follows.
    One arm without spread is tested (its variance is estimated as 0; the note says so)."""
    ca, cb = clean(a), clean(b)
    na, nb = len(ca), len(cb)
    ma = float(ca.mean()) if na else math.nan
    mb = float(cb.mean()) if nb else math.nan
    sa, sb = sample_sd(ca), sample_sd(cb)
    g = hedges_g(ca, cb)
    nan = math.nan
    if na < 2 or nb < 2:
        why = f"fewer than 2 runs in an arm (n = {na} vs {nb}): Welch's t-test is undefined"
        return MeanDiff(na, nb, ma, mb, sa, sb, ma - mb, nan, nan, nan, nan, nan, g, why)
    if sa == 0 and sb == 0:
        why = "no spread in either arm (every run gave the same value): Welch's t-test is undefined"
        return MeanDiff(na, nb, ma, mb, sa, sb, ma - mb, nan, nan, nan, nan, nan, g, why)
    with warnings.catch_warnings():  # near-identical samples: scipy warns, the result stands
        warnings.simplefilter("ignore", RuntimeWarning)
        r = st.ttest_ind(ca, cb, equal_var=False)
        lo, hi = r.confidence_interval(conf)
    note = " and ".join(f"no spread in arm {k}" for k, s in (("a", sa), ("b", sb)) if s == 0)
    note = f"{note}: its variance is estimated as 0" if note else ""
    return MeanDiff(na, nb, ma, mb, sa, sb, ma - mb, float(lo), float(hi), float(r.statistic), float(r.df),
                    float(r.pvalue), g, "", note)


@dataclass(frozen=True)
class Equivalence:
    """Two one-sided Welch tests (TOST) of |mean_a - mean_b| < margin."""

    margin: float
    diff: float
    p: float              # max of the two one-sided p values; NaN when undefined
    equivalent: bool      # p < alpha
    reason: str = ""


def tost(a, b, margin: float, alpha: float = ALPHA) -> Equivalence:
    """Equivalence within ±margin (report units of a and b) by two one-sided Welch tests
    (scipy.stats.ttest_ind on a ± margin, alternative 'greater' / 'less'). Equivalent when both
    reject, i.e. p = max(p_lower, p_upper) < alpha (the 1 - 2 alpha CI lies inside ±margin).
    Use as a note next to a verdict, never as a verdict of its own."""
    if not margin > 0:
        raise ValueError(f"the equivalence margin must be > 0, not {margin}")
    d = mean_difference(a, b)
    if not math.isfinite(d.p):
        return Equivalence(margin, d.diff, math.nan, False, d.reason)
    ca, cb = clean(a), clean(b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p_lower = st.ttest_ind(ca + margin, cb, equal_var=False, alternative="greater").pvalue
        p_upper = st.ttest_ind(ca - margin, cb, equal_var=False, alternative="less").pvalue
    p = float(max(p_lower, p_upper))
    return Equivalence(margin, d.diff, p, p < alpha)


# ---------------------------------------------------------------- spread and correlation

@dataclass(frozen=True)
class Spread:
    """Brown-Forsythe test of equal spread (diff = sd_a - sd_b), and the 95% CI of sd_a / sd_b."""

    n_a: int
    n_b: int
    sd_a: float
    sd_b: float
    p: float              # two-sided; NaN when undefined (see reason)
    reason: str = ""
    ratio_low: float = math.nan   # 95% CI of sd_a / sd_b (sd_ratio_ci); NaN when undefined
    ratio_high: float = math.nan

    @property
    def diff(self) -> float:
        return self.sd_a - self.sd_b

    @property
    def ratio(self) -> float:
        return self.sd_a / self.sd_b if self.sd_b > 0 else math.nan



def spread_test(a, b) -> Spread:
    """Levene's test with median centring (Brown-Forsythe; scipy.stats.levene, center='median') of
    the spreads of a and b. No p (NaN, with the reason) when an arm has fewer than 3 runs, or the
    absolute deviations from the median are constant within both arms (then the test's F statistic
    divides by zero: e.g. two runs per arm, or no spread at all). The interval of sd_a / sd_b
    (sd_ratio_ci) assumes normal values, the test does not: near alpha the two can disagree."""
    ca, cb = clean(a), clean(b)
    sa, sb = sample_sd(ca), sample_sd(cb)
    ci = sd_ratio_ci(sa, len(ca), sb, len(cb))
    if len(ca) < 3 or len(cb) < 3:
        return Spread(len(ca), len(cb), sa, sb, math.nan,
                      f"fewer than 3 runs in an arm (n = {len(ca)} vs {len(cb)}): with 2 the deviations from "
                      "the median are equal within an arm and the spread test is degenerate", *ci)
    if all(np.ptp(np.abs(c - np.median(c))) == 0 for c in (ca, cb)):
        return Spread(len(ca), len(cb), sa, sb, math.nan,
                      "the deviations from the median do not vary within either arm: the spread test is degenerate",
                      *ci)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(st.levene(ca, cb, center="median").pvalue)
    if not math.isfinite(p):
        return Spread(len(ca), len(cb), sa, sb, math.nan, "no spread in either arm: the spread test is undefined",
                      *ci)
    return Spread(len(ca), len(cb), sa, sb, p, "", *ci)


@dataclass(frozen=True)
class Correlation:
    rho: float            # Spearman's rank correlation; NaN when undefined
    p: float              # two-sided (scipy.stats.spearmanr: t approximation)
    n: int


def spearman(x, y) -> Correlation:
    """Spearman's rho of the pairs where both x and y are finite; NaNs with fewer than 3 pairs or
    when either variable is constant."""
    x = np.asarray([np.nan if v is None else v for v in x], dtype=float)
    y = np.asarray([np.nan if v is None else v for v in y], dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    n = int(ok.sum())
    if n < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return Correlation(math.nan, math.nan, n)
    r = st.spearmanr(x[ok], y[ok])
    return Correlation(float(r.statistic), float(r.pvalue), n)


# ---------------------------------------------------------------- multiplicity and verdict

def family_size(pvalues) -> int:
    """m of Holm's adjustment: the number of finite p values."""
    return int(np.isfinite(np.asarray([np.nan if p is None else p for p in pvalues], dtype=float)).sum())


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p values, in the input order.

    With the m finite p values sorted ascending, p_(i) -> max_{j<=i} min(1, (m - j + 1) p_(j)).
    NaN / None entries are not counted in m and stay NaN. Ties keep input order (the adjusted
    values of tied p values are equal anyway)."""
    p = np.asarray([np.nan if v is None else v for v in pvalues], dtype=float)
    fin = np.isfinite(p)
    if ((p[fin] < 0) | (p[fin] > 1)).any():
        raise ValueError("p values must lie in [0, 1]")
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(fin)
    m = len(idx)
    order = idx[np.argsort(p[idx], kind="stable")]
    out[order] = np.minimum(np.maximum.accumulate((m - np.arange(m)) * p[order]), 1.0)
    return out


@dataclass(frozen=True)
class Verdict:
    verdict: str          # supported | not supported | inconclusive
    reason: str           # why, in words (always set for inconclusive)


def verdict(diff: float, p_holm: float, expect: int, alpha: float = ALPHA,
            why_no_p: str = "", min_p: float = 0.0) -> Verdict:
    """supported: p_holm < alpha and diff has the claimed sign (expect=+1: a > b, -1: a < b);
    not supported: p_holm < alpha and the opposite sign; inconclusive otherwise.

    why_no_p: the test's reason when it gave no p (MeanDiff.reason, ...); min_p: the smallest p
    the test could give with these runs (CountTest.min_p, RankTest.min_p): when it is >= alpha the
    reason says the runs at hand cannot reach alpha."""
    if expect not in (1, -1):
        raise ValueError(f"expect must be +1 or -1, not {expect}")
    if not math.isfinite(p_holm):
        return Verdict(INCONCLUSIVE, why_no_p or "no p value")
    if not math.isfinite(diff) or diff == 0:
        return Verdict(INCONCLUSIVE, "no difference in the direction of either claim")
    if p_holm >= alpha:
        if min_p >= alpha:
            return Verdict(INCONCLUSIVE, f"the test cannot reach p < {alpha:g} with these runs "
                                         f"(smallest possible p = {min_p:.2g})")
        return Verdict(INCONCLUSIVE, f"p_holm = {p_holm:.2g} >= {alpha:g}")
    if (diff > 0) == (expect > 0):
        return Verdict(SUPPORTED, f"p_holm = {p_holm:.2g} < {alpha:g}, difference in the claimed direction")
    return Verdict(NOT_SUPPORTED, f"p_holm = {p_holm:.2g} < {alpha:g}, difference opposite to the claim")
