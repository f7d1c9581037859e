"""Pure statistics for the report: mean ± 95% CI over seeds, Welch's t-test,
a variance test, and the verdict rule used by the claims check.

Nothing here reads files or draws; every function takes plain numbers.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats as st

ALPHA = 0.05
CONF = 0.95

VERDICT_RULE = (
    "Each claim is tested with Welch's two-sample t-test (unequal variances, two-sided) "
    f"of the configuration against its comparison group, at alpha = {ALPHA}. "
    "**supported**: p < alpha and the difference has the sign the claim predicts; "
    "**not supported**: p < alpha and the difference has the opposite sign; "
    "**inconclusive**: p >= alpha, or fewer than 2 completed runs on either side. "
    "When both groups have zero spread (e.g. every seed reached the target at the same epoch) "
    "the t-test is undefined; then a difference in means that is identical across all seeds is "
    "decided by its sign and marked 'exact'. "
    "The stability claim uses Levene's test (median-centred, i.e. Brown-Forsythe) on the "
    "final test accuracy across seeds instead, with the same alpha and sign rule on the "
    "standard deviations; with a handful of seeds per configuration it has little power and is usually inconclusive."
)


@dataclass(frozen=True)
class CI:
    """Mean and 95% confidence half-width (t distribution) of a sample."""

    n: int
    mean: float
    std: float
    half: float

    @property
    def lo(self) -> float:
        return self.mean - self.half

    @property
    def hi(self) -> float:
        return self.mean + self.half


def clean(values) -> np.ndarray:
    """Finite floats only (None / NaN / inf dropped)."""
    a = np.asarray([np.nan if v is None else v for v in values], dtype=float)
    return a[np.isfinite(a)]


def mean_ci(values, conf: float = CONF) -> CI:
    """Mean ± t(1-(1-conf)/2, n-1) * s / sqrt(n); half-width NaN when n < 2."""
    a = clean(values)
    n = len(a)
    if n == 0:
        return CI(0, math.nan, math.nan, math.nan)
    mean = float(a.mean())
    if n == 1:
        return CI(1, mean, math.nan, math.nan)
    std = float(a.std(ddof=1))
    half = float(st.t.ppf(1 - (1 - conf) / 2, n - 1) * std / math.sqrt(n))
    return CI(n, mean, std, half)


def fmt_ci(ci: CI, scale: float = 1.0, digits: int = 2, unit: str = "", with_n: bool = True) -> str:
    """'98.61 ± 0.12 (n=3)'; '97.00 (n=1)' without a CI; '–' when empty."""
    if ci.n == 0 or not math.isfinite(ci.mean):
        return "–"
    s = f"{ci.mean * scale:.{digits}f}"
    if math.isfinite(ci.half):
        s += f" ± {ci.half * scale:.{digits}f}"
    s += unit
    return s + (f" (n={ci.n})" if with_n else "")


def welch(a, b) -> tuple[float, float]:
    """(t, two-sided p) of Welch's test of a vs b; NaNs when undefined."""
    a, b = clean(a), clean(b)
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan
    if a.std(ddof=1) == 0 and b.std(ddof=1) == 0:
        return math.nan, math.nan
    with warnings.catch_warnings():  # near-identical samples: scipy warns, the p-value stands
        warnings.simplefilter("ignore", RuntimeWarning)
        r = st.ttest_ind(a, b, equal_var=False)
    return float(r.statistic), float(r.pvalue)


def levene(a, b) -> tuple[float, float]:
    """(W, p) of the Brown-Forsythe variant of Levene's test; NaNs when undefined."""
    a, b = clean(a), clean(b)
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = st.levene(a, b, center="median")
    w, p = float(r.statistic), float(r.pvalue)
    return (w, p) if math.isfinite(p) else (math.nan, math.nan)


@dataclass(frozen=True)
class Test:
    """One comparison behind a claim verdict: a vs b on one quantity."""

    verdict: str          # supported | not supported | inconclusive
    mean_a: float
    mean_b: float
    diff: float           # mean_a - mean_b (or std_a - std_b for the variance test)
    p: float
    n_a: int
    n_b: int
    note: str = ""


def decide(diff: float, p: float, expect: int, alpha: float = ALPHA) -> str:
    """The verdict rule: expect=+1 claims a > b, expect=-1 claims a < b."""
    if not (math.isfinite(diff) and math.isfinite(p)) or p >= alpha or diff == 0:
        return "inconclusive"
    return "supported" if (diff > 0) == (expect > 0) else "not supported"


def compare_means(a, b, expect: int, alpha: float = ALPHA) -> Test:
    """Welch's t-test of a vs b and the verdict for the claim 'a {>,<} b' (expect=+1/-1)."""
    ca, cb = clean(a), clean(b)
    ma = float(ca.mean()) if len(ca) else math.nan
    mb = float(cb.mean()) if len(cb) else math.nan
    diff = ma - mb
    if len(ca) < 2 or len(cb) < 2:
        return Test("inconclusive", ma, mb, diff, math.nan, len(ca), len(cb), "fewer than 2 runs on a side")
    _, p = welch(ca, cb)
    if not math.isfinite(p):  # both groups without spread
        if diff == 0:
            return Test("inconclusive", ma, mb, diff, math.nan, len(ca), len(cb), "identical values")
        v = "supported" if (diff > 0) == (expect > 0) else "not supported"
        return Test(v, ma, mb, diff, math.nan, len(ca), len(cb), "exact: no spread within either group")
    return Test(decide(diff, p, expect, alpha), ma, mb, diff, p, len(ca), len(cb))


def compare_spread(a, b, expect: int, alpha: float = ALPHA) -> Test:
    """Levene's test; the claim 'std(a) {>,<} std(b)'. mean_a/mean_b hold the stds."""
    ca, cb = clean(a), clean(b)
    sa = float(ca.std(ddof=1)) if len(ca) > 1 else math.nan
    sb = float(cb.std(ddof=1)) if len(cb) > 1 else math.nan
    diff = sa - sb
    if len(ca) < 2 or len(cb) < 2:
        return Test("inconclusive", sa, sb, diff, math.nan, len(ca), len(cb), "fewer than 2 runs on a side")
    _, p = levene(ca, cb)
    note = "" if math.isfinite(p) else "test undefined (no spread)"
    return Test(decide(diff, p, expect, alpha), sa, sb, diff, p, len(ca), len(cb), note)
