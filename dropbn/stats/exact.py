"""Exact tests for small samples: failed-run counts (Fisher's exact test, an exact stratified test
pooling 2x2 strata, the smallest p each can give) and times to a target with censored runs (a
permutation test on ranks). Pure functions on counts and numbers, like summaries.py.

  fisher_failed(failed_a, n_a, failed_b, n_b) -> CountTest    two-sided Fisher, with its min_p
  stratified_exact([(failed_a, n_a, failed_b, n_b), ...]) -> CountTest
  fisher_p_outcomes(n_a, n_b, k) -> array      p of every outcome with k failures in all
  fisher_min_p(n_a, n_b), stratified_min_p([(n_a, n_b), ...])  smallest p any outcome gives
  rank_test(a, b, diverged_a, diverged_b) -> RankTest         censored times to a target
  rank_min_p(n_a, n_b)                                        smallest p of the rank test (no ties)
  shift_ci(a, b) -> (shift, low, high)      Hodges-Lehmann shift with its Moses confidence interval
"""
from __future__ import annotations

import collections
import functools
import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as st

from .summaries import ALPHA

# Two-sided exact tests count outcomes "no more likely than the observed one"; this relative
# tolerance keeps outcomes of equal probability (up to rounding) in, as scipy's fisher_exact does.
_REL_TOL = 1 + 1e-7


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


def fisher_p_outcomes(n_a: int, n_b: int, k: int) -> np.ndarray:
    """Two-sided Fisher p of every outcome with k failures in all: index i = (lowest possible
    failures in arm a) + i."""
    _, pmf = _hypergeom(n_a, n_b, k)
    return np.array([min(1.0, pmf[pmf <= q * _REL_TOL].sum()) for q in pmf])


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


def shift_ci(a, b, conf: float = 0.95) -> tuple[float, float, float]:
    """(Hodges-Lehmann shift, low, high): the median of the differences a_i - b_j and the distribution-free
    confidence interval of the shift that inverts the two-sided Mann-Whitney test (Moses 1965; Lehmann
    1975, ch. 2): [D_(c), D_(mn+1-c)] of the sorted differences, c - 1 the largest count with
    P(U <= c - 1) <= (1 - conf) / 2 under the null (exact, no ties). Every run must have a time: with
    censored or diverged runs the shift model has no value for them, so the caller leaves it out.
    The interval is unbounded (-inf, inf) when the arms are too small for conf (3 vs 3 at 95%: the
    most extreme outcome alone has probability 0.05 each way). With ties in the data (whole epochs)
    its coverage is approximate."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    m, n = len(a), len(b)
    if not m or not n or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return math.nan, math.nan, math.nan
    d = np.sort(np.subtract.outer(a, b).ravel())
    counts = _rank_sum_dist(2 * np.arange(1, m + n + 1), m)   # rank sums of a (doubled), no ties
    w2 = np.flatnonzero(counts)
    cdf = np.cumsum(counts[w2]) / counts[w2].sum()              # P(W <= w), w = w2 / 2 ascending
    below = np.flatnonzero(cdf <= (1 - conf) / 2 + 1e-12)
    hl = float(np.median(d))
    if not len(below):
        return hl, -math.inf, math.inf
    c = int(w2[below[-1]] // 2 - m * (m + 1) // 2) + 1           # U = W - m(m+1)/2
    return hl, float(d[c - 1]), float(d[m * n - c])


def rank_min_p(n_a: int, n_b: int) -> float:
    """Smallest two-sided p of rank_test with n_a and n_b runs and no ties: a complete separation,
    2 / C(n_a + n_b, n_a) (e.g. 3 vs 3: 0.1; 4 vs 4: 0.029)."""
    return min(1.0, 2 / math.comb(n_a + n_b, n_a)) if n_a and n_b else math.nan
