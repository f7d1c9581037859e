"""Pure statistics for the report. Nothing here reads files, draws or imports torch;
every function takes plain numbers (lists, arrays, Series) and returns numbers,
small frozen dataclasses or text. Missing values (None / NaN / inf) are dropped
by `clean` unless a function says otherwise (the censored rank test reads them
as "did not reach the target").

API (the claims table wires these together; see VERDICT_RULE_HOLM)
------------------------------------------------------------------
Per-arm summaries
  clean(values) -> ndarray                       finite floats only
  mean_ci(values, conf=0.95) -> CI               mean ± t half-width (CI.n/.mean/.std/.half/.lo/.hi)
  fmt_ci(ci, scale, digits, unit, with_n) -> str '98.61 ± 0.12 (n=3)'
  robust_summary(values) -> Robust               n, median, q1, q3, geometric mean (ratio plots)
  geometric_mean(values) -> float                NaN unless every value is > 0
  geometric_ci(values, conf) -> (gm, lo, hi)     mean ± t CI on the log scale, exponentiated
  intention_to_treat(acc, diverged, num_classes) -> ITT   diverged runs enter at chance accuracy

Two-arm comparisons (each result carries a `reason` when its p is n/a or cannot reach alpha)
  mean_difference(a, b, conf) -> MeanDiff        diff = mean(a)-mean(b), Welch CI / t / df / p, Hedges' g
  hedges_g(a, b) -> float                        bias-corrected standardised difference, NaN when n/a
  fisher_failed(failed_a, n_a, failed_b, n_b) -> CountTest        Fisher's exact test on failed fractions
  stratified_exact(strata) -> CountTest          exact conditional test pooling 2x2 strata
  fisher_min_p(n_a, n_b) -> float                smallest two-sided Fisher p any outcome can give
  stratified_min_p(sizes) -> float               the same for several strata [(n_a, n_b), ...]
  rank_test(a, b, diverged_a, diverged_b) -> RankTest   censored times to a target (exact permutation)
  tost(a, b, margin) -> Equivalence              Welch TOST; a note, never a verdict

Family and verdict
  holm(pvalues) -> ndarray                       Holm step-down; NaN entries stay NaN, not counted in m
  family_size(pvalues) -> int                    m = number of finite p values
  verdict(diff, p_holm, expect, alpha, why_no_p, min_p) -> Verdict   (verdict, reason)

Power
  t_test_power(n_per_arm, d, alpha) -> float     exact power of the two-sided two-sample t-test
  seeds_per_arm(effect, sd, alpha, power, m) -> int | None   seeds per arm to detect `effect`
  pooled_sd(a, b) -> float                       pooled within-arm standard deviation

Wording
  signed(x, digits) -> str                       '+0.3', '-0.4', '0.0'
  ci_text(lo, hi, unit, digits) -> str           'between -0.4 and +0.2 pp'
  diff_text(diff, lo, hi, unit, digits) -> str   '-0.1 pp (95% CI between -0.4 and +0.2 pp)'

Legacy (the rule issue 10 replaces; tables.claims still calls it until the claims table is rewired):
  VERDICT_RULE, welch, levene, Test, decide, compare_means, compare_spread.
  compare_means keeps the sign-only "exact" verdict for zero spread; new code must use
  mean_difference + holm + verdict instead, which never decide a claim without a p value.
"""
from __future__ import annotations

import collections
import functools
import itertools
import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import special
from scipy import stats as st

ALPHA = 0.05
CONF = 0.95
POWER = 0.80
SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"

VERDICT_RULE_HOLM = (
    "Every claim row with a p value belongs to one family; its p values are adjusted with Holm's "
    f"step-down method (m = the number of rows with a p value). At alpha = {ALPHA}: "
    "**supported**: Holm-adjusted p < alpha and the difference has the sign the claim predicts; "
    "**not supported**: Holm-adjusted p < alpha and the difference has the opposite sign; "
    "**inconclusive**: otherwise, including rows whose test gives no p value (too few runs, no spread "
    "in either arm) or cannot reach p < alpha with the runs at hand. An inconclusive result is not "
    "evidence of no difference: its confidence interval says which differences remain possible."
)

# Legacy rule text, still rendered by the current report (issue 10 replaces it with VERDICT_RULE_HOLM).
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

# Two-sided exact tests count outcomes "no more likely than the observed one"; this relative
# tolerance keeps outcomes of equal probability (up to rounding) in, as scipy's fisher_exact does.
_REL_TOL = 1 + 1e-7


# ---------------------------------------------------------------- one arm

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


def _sd(a: np.ndarray) -> float:
    """Sample standard deviation (ddof=1); exactly 0.0 when all values are equal
    (np.std of equal floats can be 1e-17, which would make a t statistic explode); NaN when n < 2."""
    if len(a) < 2:
        return math.nan
    return 0.0 if np.ptp(a) == 0 else float(a.std(ddof=1))


def mean_ci(values, conf: float = CONF) -> CI:
    """Mean ± t(1-(1-conf)/2, n-1) * s / sqrt(n); half-width NaN when n < 2."""
    a = clean(values)
    n = len(a)
    if n == 0:
        return CI(0, math.nan, math.nan, math.nan)
    mean = float(a.mean())
    if n == 1:
        return CI(1, mean, math.nan, math.nan)
    std = _sd(a)
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


@dataclass(frozen=True)
class Robust:
    """Robust summary of positive ratios: median with its interquartile range, and the geometric mean."""

    n: int
    median: float
    q1: float
    q3: float
    gmean: float


def geometric_mean(values) -> float:
    """exp(mean(log x)) of the finite values; NaN when empty or when any value is <= 0."""
    a = clean(values)
    if len(a) == 0 or (a <= 0).any():
        return math.nan
    return float(np.exp(np.log(a).mean()))


def geometric_ci(values, conf: float = CONF) -> tuple[float, float, float]:
    """(geometric mean, lo, hi): the t confidence interval of mean(log x), exponentiated.
    NaNs when any value is <= 0; lo/hi NaN when n < 2. Suits ratios drawn on a log axis."""
    a = clean(values)
    if len(a) == 0 or (a <= 0).any():
        return math.nan, math.nan, math.nan
    ci = mean_ci(np.log(a), conf)
    return math.exp(ci.mean), math.exp(ci.lo), math.exp(ci.hi)


def robust_summary(values) -> Robust:
    """Median and quartiles (numpy's linear interpolation) and the geometric mean of the finite values."""
    a = clean(values)
    if len(a) == 0:
        return Robust(0, math.nan, math.nan, math.nan, math.nan)
    q1, med, q3 = (float(q) for q in np.percentile(a, [25, 50, 75]))
    return Robust(len(a), med, q1, q3, geometric_mean(a))


@dataclass(frozen=True)
class ITT:
    """Accuracies with diverged runs entered at chance accuracy (intention to treat)."""

    values: np.ndarray
    substituted: int      # how many diverged runs entered at chance accuracy


def intention_to_treat(acc, diverged, num_classes) -> ITT:
    """Final accuracies (fractions) of every run of an arm, diverged runs at 1 / num_classes.

    acc: one accuracy per run (NaN / None allowed where the run diverged); diverged: one bool per
    run; num_classes: one int, or one per run. A run that did not diverge must have an accuracy:
    runs that are still unfinished do not belong in the arm (ValueError otherwise)."""
    a = np.asarray([np.nan if v is None else v for v in acc], dtype=float)
    d = np.asarray(diverged, dtype=bool)
    k = np.broadcast_to(np.asarray(num_classes, dtype=float), a.shape)
    if d.shape != a.shape:
        raise ValueError(f"acc and diverged differ in length ({len(a)} vs {len(d)})")
    if (~np.isfinite(a) & ~d).any():
        raise ValueError("a run that did not diverge has no accuracy")
    return ITT(np.where(d, 1.0 / k, a), int(d.sum()))


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
    ss = sum((len(c) - 1) * _sd(c) ** 2 for c in (ca, cb) if len(c) > 1)
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
    sa, sb = _sd(ca), _sd(cb)
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


# ---------------------------------------------------------------- power

def t_test_power(n_per_arm: int, d: float, alpha: float = ALPHA) -> float:
    """Power of the two-sided two-sample t-test with n runs per arm and standardised effect d:
    P(|T| > t_crit) with T ~ noncentral t(df = 2n - 2, nc = d sqrt(n/2)) (scipy.stats.nct; exact,
    no normal approximation). Welch's test has the same df when the spreads are equal."""
    n = int(n_per_arm)
    if n < 2:
        return math.nan
    df, nc = 2 * n - 2, abs(d) * math.sqrt(n / 2)
    tc = st.t.ppf(1 - alpha / 2, df)
    return float(st.nct.sf(tc, df, nc) + st.nct.cdf(-tc, df, nc))


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


# ---------------------------------------------------------------- failed runs (counts)

@dataclass(frozen=True)
class CountTest:
    """Failed fraction in arm a vs arm b (totals over strata for the stratified test)."""

    test: str
    failed_a: int
    n_a: int
    failed_b: int
    n_b: int
    p: float              # two-sided; NaN when an arm has no runs
    min_p: float          # smallest p any outcome with these arm sizes gives (NaN: not computed)
    reason: str = ""      # why no p, or that these runs cannot reach alpha

    @property
    def frac_a(self) -> float:
        return self.failed_a / self.n_a if self.n_a else math.nan

    @property
    def frac_b(self) -> float:
        return self.failed_b / self.n_b if self.n_b else math.nan

    @property
    def diff(self) -> float:
        """frac_a - frac_b: the sign the verdict reads."""
        return self.frac_a - self.frac_b


@functools.lru_cache(maxsize=4096)
def _hypergeom(n_a: int, n_b: int, k: int) -> tuple[int, np.ndarray]:
    """(lowest x, pmf) of the failures x in arm a given k failures in all, both margins fixed.
    Cached (the minimal-p enumerations ask for the same strata many times); the pmf is read-only."""
    lo, hi = max(0, k - n_b), min(k, n_a)
    pmf = st.hypergeom.pmf(np.arange(lo, hi + 1), n_a + n_b, n_a, k)
    pmf.flags.writeable = False
    return lo, pmf


def _two_sided(pmf: np.ndarray, i: int) -> float:
    """Sum of the probabilities no larger than that of outcome i (Fisher/Irwin two-sided rule)."""
    return float(min(1.0, pmf[pmf <= pmf[i] * _REL_TOL].sum()))


def _cannot_reach(min_p: float, alpha: float, sizes: str) -> str:
    """The reason text when no outcome with these runs can give p < alpha; '' otherwise."""
    if not min_p >= alpha:
        return ""
    return (f"{sizes} runs cannot reach p < {alpha:g} even at the most extreme outcome "
            f"(smallest possible p = {min_p:.2g})")


def fisher_min_p(n_a: int, n_b: int) -> float:
    """The smallest two-sided Fisher p that any outcome with n_a and n_b runs can give
    (e.g. 3 vs 3: 0.1, at 3/3 vs 0/3). 1.0 when an arm is empty."""
    best = 1.0
    for k in range(n_a + n_b + 1):
        _, pmf = _hypergeom(n_a, n_b, k)
        best = min(best, _two_sided(pmf, int(np.argmin(pmf))))
    return best


def fisher_failed(failed_a: int, n_a: int, failed_b: int, n_b: int, alpha: float = ALPHA) -> CountTest:
    """Fisher's exact test (scipy.stats.fisher_exact, two-sided) of the failed fractions
    failed_a/n_a vs failed_b/n_b, with the smallest p these arm sizes allow."""
    if not (0 <= failed_a <= n_a and 0 <= failed_b <= n_b):
        raise ValueError(f"failed counts out of range: {failed_a}/{n_a}, {failed_b}/{n_b}")
    if n_a == 0 or n_b == 0:
        return CountTest("Fisher", failed_a, n_a, failed_b, n_b, math.nan, math.nan, "an arm has no runs")
    p = float(st.fisher_exact([[failed_a, n_a - failed_a], [failed_b, n_b - failed_b]]).pvalue)
    mp = fisher_min_p(n_a, n_b)
    return CountTest("Fisher", failed_a, n_a, failed_b, n_b, p, mp, _cannot_reach(mp, alpha, f"{n_a} vs {n_b}"))


def _stratum_dist(strata_k) -> tuple[int, np.ndarray]:
    """(lowest total, pmf) of the sum of the failures in arm a over strata [(n_a, n_b, k), ...]."""
    lo, pmf = 0, np.ones(1)
    for n_a, n_b, k in strata_k:
        x0, p = _hypergeom(n_a, n_b, k)
        lo, pmf = lo + x0, np.convolve(pmf, p)
    return lo, pmf


STRATIFIED_TEST = "exact stratified (conditional on each stratum's margins)"


def stratified_min_p(sizes, max_margins: int = 200_000) -> float:
    """Smallest two-sided p of stratified_exact over every outcome with these arm sizes
    [(n_a, n_b) per stratum], found by enumerating each stratum's total failures (strata of equal
    sizes are exchangeable, so their totals are enumerated as multisets).
    NaN when there are more than max_margins combinations to enumerate."""
    groups = collections.Counter((int(a), int(b)) for a, b in sizes)
    if math.prod(math.comb(a + b + c, c) for (a, b), c in groups.items()) > max_margins:
        return math.nan
    per_group = [[[(a, b, k) for k in ks] for ks in itertools.combinations_with_replacement(range(a + b + 1), c)]
                 for (a, b), c in groups.items()]
    best = 1.0
    for choice in itertools.product(*per_group):
        _, pmf = _stratum_dist(itertools.chain.from_iterable(choice))
        best = min(best, _two_sided(pmf, int(np.argmin(pmf))))
    return best


def stratified_exact(strata, alpha: float = ALPHA) -> CountTest:
    """Exact conditional test of equal failure odds in arm a and arm b across strata (e.g. learning
    rates), strata = [(failed_a, n_a, failed_b, n_b), ...]: given every stratum's margins, the failures
    in arm a are hypergeometric per stratum; their sum T has the convolution of those distributions,
    and the two-sided p sums P(T = t) over the totals no more likely than the observed one (the exact
    conditional test behind the Mantel-Haenszel / Cochran test; one stratum gives Fisher's test).
    Strata where an arm has no runs carry no information and are skipped."""
    strata = [tuple(int(v) for v in s) for s in strata]
    for fa, na, fb, nb in strata:
        if not (0 <= fa <= na and 0 <= fb <= nb):
            raise ValueError(f"failed counts out of range: {fa}/{na}, {fb}/{nb}")
    used = [s for s in strata if s[1] > 0 and s[3] > 0]
    tot = [sum(s[i] for s in used) for i in range(4)]
    if not used:
        return CountTest(STRATIFIED_TEST, *tot, math.nan, math.nan, "no stratum has runs in both arms")
    lo, pmf = _stratum_dist((na, nb, fa + fb) for fa, na, fb, nb in used)
    p = _two_sided(pmf, tot[0] - lo)
    mp = stratified_min_p([(na, nb) for _, na, _, nb in used])
    sizes = " + ".join(f"{na} vs {nb}" for _, na, _, nb in used)
    return CountTest(STRATIFIED_TEST, *tot, p, mp, _cannot_reach(mp, alpha, sizes))


# ---------------------------------------------------------------- censored times to a target

@dataclass(frozen=True)
class RankTest:
    """Exact (or Monte Carlo) permutation test of the ranks of two arms' times to a target."""

    test: str
    method: str           # 'exact' or 'Monte Carlo (N resamples, seed S)'
    p: float              # two-sided; NaN when an arm is empty
    min_p: float          # smallest p this test can give with these runs and ties
    n_a: int              # runs, diverged included
    n_b: int
    reached_a: int
    reached_b: int
    diverged_a: int
    diverged_b: int
    mean_rank_a: float
    mean_rank_b: float
    diff: float           # mean_rank_a - mean_rank_b: > 0 means a takes longer (the verdict reads its sign)
    median_a: float       # inf when the median run did not reach the target
    median_b: float
    hodges_lehmann: float  # median of a_i - b_j; NaN unless every run of both arms reached the target
    reason: str = ""

    @property
    def censored_a(self) -> int:
        return self.n_a - self.reached_a - self.diverged_a

    @property
    def censored_b(self) -> int:
        return self.n_b - self.reached_b - self.diverged_b


RANK_TEST = ("permutation test on ranks (Mann-Whitney U with midranks for ties; runs that never "
             "reached the target tie after every run that did, diverged runs tie below them)")


def _rank_sum_dist(r2: np.ndarray, k: int) -> np.ndarray:
    """Number of size-k subsets of the integer scores r2 with each sum (index = sum), by dynamic
    programming over the items (0/1 knapsack); the exact permutation distribution with ties."""
    total = int(r2.sum())
    ways = np.zeros((k + 1, total + 1))
    ways[0, 0] = 1.0
    for x in r2:
        x = int(x)
        ways[1:, x:] = ways[1:, x:] + ways[:-1, : total + 1 - x]
    return ways[k]


def rank_test(a, b, diverged_a: int = 0, diverged_b: int = 0, alpha: float = ALPHA,
              exact_max_n: int = 100, n_resamples: int = 20_000, seed: int = 0) -> RankTest:
    """Compare times to a target (epochs or seconds; lower is better) when some runs never reach it.

    a, b: one value per run that did not diverge: the time to the target, or None / NaN / inf when
    the run finished without reaching it. diverged_a / diverged_b: runs that diverged (no value).
    Scores: reached runs by their time; every non-reaching run ties after them (valid when all runs
    had the same budget, so a run that did not reach the target is slower than any that did);
    diverged runs tie below those. The statistic is the rank sum of a (midranks, i.e. Mann-Whitney U);
    two-sided p = P(|W - E W| >= |w - E W|) under random assignment of the pooled scores to arms:
    exact (all C(n, n_a) assignments, by dynamic programming) when n_a + n_b <= exact_max_n, else
    Monte Carlo with a fixed seed, p = (1 + hits) / (1 + n_resamples)."""
    va = np.asarray([np.nan if v is None else v for v in a], dtype=float)
    vb = np.asarray([np.nan if v is None else v for v in b], dtype=float)
    da, db = int(diverged_a), int(diverged_b)
    na, nb = len(va) + da, len(vb) + db
    ra, rb = int(np.isfinite(va).sum()), int(np.isfinite(vb).sum())
    reached = np.concatenate([va, vb])
    reached = reached[np.isfinite(reached)]
    top = float(reached.max()) if len(reached) else 0.0
    never, dead = top + 1 + abs(top), top + 2 + 2 * abs(top)   # above every reached time, in order

    def scores(v, d):
        return np.concatenate([np.where(np.isfinite(v), v, never), np.full(d, dead)])

    sa, sb = scores(va, da), scores(vb, db)
    med = [float(np.median(np.where(s < never, s, np.inf))) if len(s) else math.nan for s in (sa, sb)]
    hl = (float(np.median(np.subtract.outer(va, vb)))
          if ra == na and rb == nb and na and nb else math.nan)
    method, nan = "exact", math.nan
    if na == 0 or nb == 0:
        return RankTest(RANK_TEST, method, nan, nan, na, nb, ra, rb, da, db, nan, nan, nan, *med, hl,
                        "an arm has no runs")
    r2 = np.rint(2 * st.rankdata(np.concatenate([sa, sb]))).astype(np.int64)  # doubled midranks
    w2, e2 = int(r2[:na].sum()), na * (na + nb + 1)       # rank sum of a and its mean, doubled
    mean_a, mean_b = r2[:na].mean() / 2, r2[na:].mean() / 2
    if na + nb <= exact_max_n:
        counts = _rank_sum_dist(r2, na)
        sums = np.flatnonzero(counts)
        dev = np.abs(sums - e2)
        prob = counts[sums] / counts[sums].sum()
        p = float(prob[dev >= abs(w2 - e2)].sum())
        min_p = float(prob[dev == dev.max()].sum())
    else:
        rng = np.random.default_rng(seed)
        sims = np.array([rng.permutation(r2)[:na].sum() for _ in range(n_resamples)])
        hits = int((np.abs(sims - e2) >= abs(w2 - e2)).sum())
        p, min_p = (1 + hits) / (1 + n_resamples), 1 / (1 + n_resamples)
        method = f"Monte Carlo ({n_resamples} resamples, seed {seed})"
    return RankTest(RANK_TEST, method, min(p, 1.0), min_p, na, nb, ra, rb, da, db, float(mean_a), float(mean_b),
                    float(mean_a - mean_b), *med, hl, _cannot_reach(min_p, alpha, f"{na} vs {nb}"))


# ---------------------------------------------------------------- wording

def signed(x: float, digits: int = 1) -> str:
    """'+0.3', '-0.4'; a value that rounds to zero is '0.0' (no sign)."""
    s = f"{x:+.{digits}f}"
    return f"{0:.{digits}f}" if float(s) == 0 else s


def ci_text(lo: float, hi: float, unit: str = "pp", digits: int = 1) -> str:
    """'between -0.4 and +0.2 pp': what a confidence interval allows, in report units."""
    u = f" {unit}" if unit else ""
    return f"between {signed(lo, digits)} and {signed(hi, digits)}{u}"


def diff_text(diff: float, lo: float, hi: float, unit: str = "pp", digits: int = 1, conf: float = CONF) -> str:
    """'-0.1 pp (95% CI between -0.4 and +0.2 pp)'; '-0.1 pp (no confidence interval)' when lo/hi are NaN.
    Describes the data only: never 'no effect' or 'equivalent' (a non-significant test shows neither)."""
    u = f" {unit}" if unit else ""
    if not math.isfinite(diff):
        return "n/a"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{signed(diff, digits)}{u} (no confidence interval)"
    return f"{signed(diff, digits)}{u} ({conf:.0%} CI {ci_text(lo, hi, unit, digits)})"


# ---------------------------------------------------------------- legacy rule (replaced by issue 10)

def welch(a, b) -> tuple[float, float]:
    """(t, two-sided p) of Welch's test of a vs b; NaNs when undefined."""
    d = mean_difference(a, b)
    return d.t, d.p


def levene(a, b) -> tuple[float, float]:
    """(W, p) of the Brown-Forsythe variant of Levene's test (scipy.stats.levene, center='median');
    NaNs when undefined."""
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
    """One comparison behind a claim verdict: a vs b on one quantity (legacy)."""

    verdict: str          # supported | not supported | inconclusive
    mean_a: float
    mean_b: float
    diff: float           # mean_a - mean_b (or std_a - std_b for the variance test)
    p: float
    n_a: int
    n_b: int
    note: str = ""


def decide(diff: float, p: float, expect: int, alpha: float = ALPHA) -> str:
    """Legacy verdict on a raw p: expect=+1 claims a > b, expect=-1 claims a < b. Use verdict() on p_holm."""
    if not (math.isfinite(diff) and math.isfinite(p)) or p >= alpha or diff == 0:
        return INCONCLUSIVE
    return SUPPORTED if (diff > 0) == (expect > 0) else NOT_SUPPORTED


def compare_means(a, b, expect: int, alpha: float = ALPHA) -> Test:
    """Legacy: Welch's t-test of a vs b and the verdict for 'a {>,<} b' on the raw p, with the
    sign-only 'exact' rule for zero spread that issue 10 removes. Use mean_difference + holm + verdict."""
    d = mean_difference(a, b)
    if d.n_a < 2 or d.n_b < 2:
        return Test(INCONCLUSIVE, d.mean_a, d.mean_b, d.diff, math.nan, d.n_a, d.n_b, "fewer than 2 runs on a side")
    if not math.isfinite(d.p):  # both groups without spread
        if d.diff == 0:
            return Test(INCONCLUSIVE, d.mean_a, d.mean_b, d.diff, math.nan, d.n_a, d.n_b, "identical values")
        v = SUPPORTED if (d.diff > 0) == (expect > 0) else NOT_SUPPORTED
        return Test(v, d.mean_a, d.mean_b, d.diff, math.nan, d.n_a, d.n_b, "exact: no spread within either group")
    return Test(decide(d.diff, d.p, expect, alpha), d.mean_a, d.mean_b, d.diff, d.p, d.n_a, d.n_b)


def compare_spread(a, b, expect: int, alpha: float = ALPHA) -> Test:
    """Levene's test; the claim 'std(a) {>,<} std(b)'. mean_a/mean_b hold the stds."""
    ca, cb = clean(a), clean(b)
    sa, sb = _sd(ca), _sd(cb)
    diff = sa - sb
    if len(ca) < 2 or len(cb) < 2:
        return Test(INCONCLUSIVE, sa, sb, diff, math.nan, len(ca), len(cb), "fewer than 2 runs on a side")
    _, p = levene(ca, cb)
    note = "" if math.isfinite(p) else "test undefined (no spread)"
    return Test(decide(diff, p, expect, alpha), sa, sb, diff, p, len(ca), len(cb), note)
