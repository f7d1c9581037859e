"""Seeds per arm that would detect a stated minimal effect at 80% power, for each test the claims
table uses, at the level alpha / m of Holm's first step (m = the claims family's size). Pure
functions like summaries.py.

  seeds_per_arm(effect, sd, alpha, power, m)      two-sample t-test (Welch rows), from the observed spread
  rank_seeds(effect, sd, alpha, power, m)         rank test: t-test seeds / its efficiency 3/pi
  separation_seeds(alpha, m)                      fewest runs per arm at which a rank test can reach alpha/m
  spread_seeds(ratio, alpha, power, m)            spread test, as the F test of two variances
  fisher_seeds(frac_low, frac_high, alpha, power, m)   Fisher's exact test, exact enumeration
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats as st

from .exact import fisher_p_outcomes, rank_min_p
from .summaries import ALPHA

POWER = 0.80
RANK_EFFICIENCY = 3 / math.pi   # asymptotic relative efficiency of Mann-Whitney vs the t-test, normal data
N_MAX = 1000                    # searches stop here (None: more runs than any study would do)
FISHER_N_MAX = 200              # the exact Fisher search costs O(n^3) per n: it stops earlier


# ---------------------------------------------------------------- t-test (Welch rows)

def t_test_power(n_per_arm: int, d: float, alpha: float = ALPHA) -> float:
    """Power of the two-sided two-sample t-test with n runs per arm and standardised effect d:
    P(|T| > t_crit) with T ~ noncentral t(df = 2n - 2, nc = d sqrt(n/2)) (scipy.stats.nct; exact,
    no normal approximation). Welch's test has the same df when the spreads are equal."""
    n = int(n_per_arm)
    if n < 2:
        return math.nan
    df, nc = 2 * n - 2, abs(d) * math.sqrt(n / 2)
    tc = st.t.ppf(1 - alpha / 2, df)
    # P(T < -tc) as the upper tail of -T ~ nct(df, -nc): scipy's nct.cdf(-tc, df, nc) returns NaN
    # where that tail underflows (large nc), which made the search below skip over such n
    return float(st.nct.sf(tc, df, nc) + st.nct.sf(tc, df, -nc))


def seeds_per_arm(effect: float, sd: float, alpha: float = ALPHA, power: float = POWER,
                  m: int = 1) -> int | None:
    """Smallest n per arm (>= 2) at which the two-sided t-test at level alpha/m detects a difference
    of `effect` (same units as sd, e.g. pp) with the given power, for a common spread sd (e.g.
    pooled_sd of the observed arms): t_test_power searched over n (doubling, then bisection).

    None when sd is not a positive finite number (no spread observed: no sample size follows)
    or effect is not > 0."""
    if not (math.isfinite(sd) and sd > 0 and math.isfinite(effect) and effect > 0):
        return None
    if not 0 < power < 1 or m < 1:
        raise ValueError(f"need 0 < power < 1 and m >= 1 (got power={power}, m={m})")
    d, a = effect / sd, alpha / m
    lo, hi = 1, 2            # invariant: power(lo) < target <= power(hi); power(1) is 0 (no test)
    while t_test_power(hi, d, a) < power:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if t_test_power(mid, d, a) >= power else (mid, hi)
    return hi


# ---------------------------------------------------------------- rank test (censored times)

def rank_seeds(effect: float, sd: float, alpha: float = ALPHA, power: float = POWER, m: int = 1) -> int | None:
    """Seeds per arm for the rank test: the t-test's n for the same effect and spread divided by
    the rank test's asymptotic efficiency 3/pi, and never fewer than separation_seeds.
    None when sd is not a positive finite number."""
    n = seeds_per_arm(effect, sd, alpha, power, m)
    if n is None:
        return None
    return max(math.ceil(n / RANK_EFFICIENCY), separation_seeds(alpha, m))


def separation_seeds(alpha: float = ALPHA, m: int = 1) -> int:
    """The fewest runs per arm at which the rank test can give p < alpha/m at all (a complete
    separation of equal arms: 2 / C(2n, n) < alpha/m); e.g. 4 at alpha = 0.05, m = 1."""
    n = 2
    while rank_min_p(n, n) >= alpha / m:
        n += 1
    return n


# ---------------------------------------------------------------- spread test

def spread_power(n_per_arm: int, ratio: float, alpha: float = ALPHA) -> float:
    """Power of the two-sided F test of equal variances with n runs per arm when the standard
    deviations differ by `ratio` (s_a^2 / s_b^2 ~ ratio^2 F(n-1, n-1)); the spread test's
    sample size is read from this (Levene's test has somewhat less power for normal data)."""
    n = int(n_per_arm)
    if n < 2:
        return math.nan
    df = n - 1
    lo, hi = st.f.ppf(alpha / 2, df, df), st.f.ppf(1 - alpha / 2, df, df)
    r2 = ratio ** 2
    return float(st.f.sf(hi / r2, df, df) + st.f.cdf(lo / r2, df, df))


def spread_seeds(ratio: float, alpha: float = ALPHA, power: float = POWER, m: int = 1) -> int | None:
    """Smallest n per arm at which spread_power at alpha/m reaches `power`; None past N_MAX."""
    if not ratio > 1:
        raise ValueError(f"the spread ratio must be > 1, not {ratio}")
    return _first_n(lambda n: spread_power(n, ratio, alpha / m) >= power)


# ---------------------------------------------------------------- Fisher (failed runs)

def fisher_power(n_per_arm: int, frac_a: float, frac_b: float, alpha: float = ALPHA) -> float:
    """Exact power of the two-sided Fisher test with n runs per arm when the true failed
    fractions are frac_a and frac_b: the binomial probability of the outcomes with p < alpha."""
    n = int(n_per_arm)
    pa, pb = st.binom.pmf(np.arange(n + 1), n, frac_a), st.binom.pmf(np.arange(n + 1), n, frac_b)
    total = 0.0
    for k in range(2 * n + 1):
        lo = max(0, k - n)
        xs = np.arange(lo, min(k, n) + 1)
        reject = fisher_p_outcomes(n, n, k) < alpha
        total += float((pa[xs] * pb[k - xs])[reject].sum())
    return total


def fisher_seeds(frac_low: float, frac_high: float, alpha: float = ALPHA, power: float = POWER,
                 m: int = 1) -> int | None:
    """Smallest n per arm at which Fisher's test at alpha/m detects failed fractions frac_low vs
    frac_high with the given power (a linear search: the power of an exact test is not monotone
    in n). None past FISHER_N_MAX."""
    if not 0 <= frac_low < frac_high <= 1:
        raise ValueError(f"need 0 <= frac_low < frac_high <= 1 (got {frac_low}, {frac_high})")
    return _first_n(lambda n: fisher_power(n, frac_low, frac_high, alpha / m) >= power, n_max=FISHER_N_MAX)


def _first_n(ok, n_max: int = N_MAX) -> int | None:
    """The smallest n in 2..n_max with ok(n); None when there is none."""
    return next((n for n in range(2, n_max + 1) if ok(n)), None)
