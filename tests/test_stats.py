"""dropbn.stats (summaries, comparisons), exact, power and the wording in markdown on known numbers: hand computations,
textbook values and scipy cross-checks."""
import itertools
import math

import numpy as np
import pytest
from scipy import stats as st

from dropbn import stats
from dropbn.stats import exact, power
from dropbn.report import markdown

NAN = float("nan")


# ---------------------------------------------------------------- one arm

def test_mean_ci_known_values():
    ci = stats.mean_ci([1, 2, 3])
    assert ci.n == 3 and ci.mean == 2 and ci.std == pytest.approx(1.0)
    assert ci.half == pytest.approx(st.t.ppf(0.975, 2) / math.sqrt(3))
    assert ci.half == pytest.approx(2.4841, abs=1e-4)
    assert (ci.lo, ci.hi) == pytest.approx((2 - 2.4841, 2 + 2.4841), abs=1e-4)


def test_mean_ci_small_and_dirty_samples():
    one = stats.mean_ci([0.5])
    assert one.n == 1 and one.mean == 0.5 and math.isnan(one.half)
    empty = stats.mean_ci([])
    assert empty.n == 0 and math.isnan(empty.mean)
    # None / NaN / inf are not data
    assert stats.mean_ci([1, None, float("nan"), 3, float("inf")]).mean == 2
    assert stats.mean_ci([None, None]).n == 0
    # equal floats have exactly zero spread (np.std gives ~1e-16 here)
    assert stats.mean_ci([0.97, 0.97, 0.97]).std == 0.0


def test_fmt_ci():
    assert stats.fmt_ci(stats.mean_ci([1, 2, 3])) == "2.00 ± 2.48 (n=3)"
    assert stats.fmt_ci(stats.mean_ci([0.9861]), 100, 2, "%") == "98.61% (n=1)"
    assert stats.fmt_ci(stats.mean_ci([])) == "–"


def test_robust_summary_and_geometric_mean():
    r = stats.robust_summary([1, 2, 4, 8, None])
    assert (r.n, r.median, r.q1, r.q3) == (4, 3.0, 1.75, 5.0)
    assert r.gmean == pytest.approx(64 ** 0.25)
    assert math.isnan(stats.geometric_mean([1, 0, 2]))      # a zero ratio has no log
    assert math.isnan(stats.geometric_mean([]))
    assert stats.geometric_mean([1, 10, 100]) == pytest.approx(10)
    assert markdown.fmt_robust(stats.robust_summary([1, 2, 4, 8])) == "3.000 [1.750–5.000] (n=4)"
    assert markdown.fmt_robust(stats.robust_summary([])) == "–"


def test_intention_to_treat_enters_diverged_runs_at_chance():
    itt = stats.intention_to_treat([0.97, NAN, 0.96, None], [False, True, False, True], 10)
    assert itt.values.tolist() == pytest.approx([0.97, 0.1, 0.96, 0.1])
    assert itt.substituted == 2
    mixed = stats.intention_to_treat([NAN, NAN], [True, True], [10, 100])
    assert mixed.values.tolist() == pytest.approx([0.1, 0.01]) and mixed.substituted == 2
    with pytest.raises(ValueError, match="no accuracy"):
        stats.intention_to_treat([NAN], [False], 10)
    with pytest.raises(ValueError, match="differ in length"):
        stats.intention_to_treat([0.9, 0.8], [False], 10)


# ---------------------------------------------------------------- difference of means

def test_mean_difference_matches_hand_welch():
    a, b = [10.0, 11.0, 12.0], [1.0, 2.0, 4.0]
    d = stats.mean_difference(a, b)
    va, vb = 1.0, st.tvar(b)
    se = math.sqrt(va / 3 + vb / 3)
    df = (va / 3 + vb / 3) ** 2 / ((va / 3) ** 2 / 2 + (vb / 3) ** 2 / 2)
    diff = 11 - 7 / 3
    half = st.t.ppf(0.975, df) * se
    assert d.diff == pytest.approx(diff) and d.df == pytest.approx(df)
    assert d.t == pytest.approx(diff / se)
    assert d.p == pytest.approx(2 * st.t.sf(diff / se, df))
    assert (d.ci_low, d.ci_high) == pytest.approx((diff - half, diff + half))
    assert d.reason == "" and d.note == "" and d.test == "Welch"


def test_mean_difference_known_ci():
    d = stats.mean_difference([10, 11, 12], [1, 2, 3])    # se = sqrt(2/3), df = 4, t(.975, 4) = 2.7764
    assert (d.ci_low, d.ci_high) == pytest.approx((6.7330, 11.2670), abs=1e-4)
    assert stats.mean_difference([10, 11, 12], [1, 2, 3], conf=0.99).ci_low < d.ci_low


def test_hedges_g_hand_value():
    # sd 1 in both arms, d = 9, df = 4: J = Gamma(2) / (sqrt(2) Gamma(1.5)) = sqrt(2 / pi)
    assert stats.hedges_g([10, 11, 12], [1, 2, 3]) == pytest.approx(9 * math.sqrt(2 / math.pi))
    # unequal spreads: pooled sd sqrt((2*1 + 3*(5/3)) / 5) = sqrt(7/5), df = 5
    j = math.gamma(2.5) / (math.sqrt(2.5) * math.gamma(2))
    assert stats.hedges_g([1, 2, 3], [2, 3, 4, 5]) == pytest.approx(j * (2 - 3.5) / math.sqrt(7 / 5))
    assert stats.pooled_sd([1, 2, 3], [2, 3, 4, 5]) == pytest.approx(math.sqrt(7 / 5))
    assert math.isnan(stats.hedges_g([4, 4, 4], [6, 6, 6]))  # no spread in either arm
    assert math.isnan(stats.hedges_g([4], [6, 7, 8]))        # n too small
    assert stats.hedges_g([4, 4, 4], [6, 7, 8]) < 0           # one arm without spread is fine


def test_zero_spread_in_both_arms_is_inconclusive_with_reason():
    d = stats.mean_difference([0.97] * 3, [0.98] * 3)
    assert d.diff == pytest.approx(-0.01)
    assert math.isnan(d.p) and math.isnan(d.ci_low) and math.isnan(d.hedges_g)
    assert "no spread in either arm" in d.reason
    v = stats.verdict(d.diff, NAN, expect=-1, why_no_p=d.reason)
    assert v.verdict == "inconclusive" and "no spread in either arm" in v.reason


def test_zero_spread_in_one_arm_is_tested_with_a_note():
    d = stats.mean_difference([4, 4, 4], [6, 7, 8])
    t = -3 / math.sqrt(1 / 3)                                   # se from arm b only, df = n_b - 1
    assert d.t == pytest.approx(t) and d.df == pytest.approx(2)
    assert d.p == pytest.approx(2 * st.t.sf(abs(t), 2))
    assert d.reason == "" and "no spread in arm a" in d.note
    assert d.ci_low < d.diff < d.ci_high < 0


def test_too_few_runs():
    d = stats.mean_difference([1], [2, 3])
    assert math.isnan(d.p) and "fewer than 2 runs" in d.reason and (d.n_a, d.n_b) == (1, 2)
    assert math.isnan(stats.mean_difference([], []).diff)


def test_tost_matches_hand_computation():
    a, b, margin = [1.0, 2.0, 3.0, 4.0], [1.5, 2.5, 3.5, 4.5], 3.0
    e = stats.tost(a, b, margin)
    se = math.sqrt(st.tvar(a) / 4 + st.tvar(b) / 4)
    df = 6.0                                                  # equal n and variances: Welch df = 2n - 2
    p_lower = st.t.sf((-0.5 + margin) / se, df)
    p_upper = st.t.cdf((-0.5 - margin) / se, df)
    assert e.p == pytest.approx(max(p_lower, p_upper)) and e.equivalent
    narrow = stats.tost(a, b, 0.5)
    assert narrow.p > 0.05 and not narrow.equivalent
    none = stats.tost([4, 4], [4, 4], 1.0)
    assert math.isnan(none.p) and not none.equivalent and "no spread" in none.reason
    with pytest.raises(ValueError):
        stats.tost(a, b, 0)


# ---------------------------------------------------------------- Holm and the verdict

def test_holm_known_example():
    adj = stats.holm([0.01, 0.04, 0.03, 0.005])
    assert adj.tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_excludes_nan_from_m_and_caps_at_one():
    adj = stats.holm([0.01, None, NAN, 0.02])
    assert adj[[0, 3]].tolist() == pytest.approx([0.02, 0.02])   # m = 2, not 4
    assert np.isnan(adj[[1, 2]]).all()
    assert stats.family_size([0.01, None, NAN, 0.02]) == 2
    assert stats.holm([0.5, 0.6]).tolist() == [1.0, 1.0]
    assert stats.holm([]).size == 0
    with pytest.raises(ValueError):
        stats.holm([1.5])


def test_holm_is_monotone_and_never_below_raw():
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 0.2, size=30)
    adj = stats.holm(p)
    order = np.argsort(p)
    assert (np.diff(adj[order]) >= 0).all()
    assert (adj >= p).all() and (adj <= 1).all()
    # the smallest p is multiplied by m, the largest never by more than 1 after the running max
    assert adj[order[0]] == pytest.approx(min(1, 30 * p[order[0]]))


def test_verdict_rule():
    assert stats.verdict(+1.0, 0.01, +1).verdict == "supported"
    assert stats.verdict(-1.0, 0.01, -1).verdict == "supported"
    assert stats.verdict(-1.0, 0.01, +1).verdict == "not supported"
    v = stats.verdict(+1.0, 0.05, +1)                               # p must be < alpha
    assert v.verdict == "inconclusive" and "p_holm = 0.05 >= 0.05" in v.reason
    assert stats.verdict(0.0, 0.001, +1).verdict == "inconclusive"
    assert stats.verdict(+1.0, NAN, +1).reason == "no p value"
    cannot = stats.verdict(+1.0, 0.1, +1, min_p=0.1)
    assert cannot.verdict == "inconclusive" and "cannot reach p < 0.05" in cannot.reason
    with pytest.raises(ValueError):
        stats.verdict(1.0, 0.01, 0)


def test_holm_changes_verdicts_on_a_family():
    """Raw p 0.01, 0.04, 0.03: all 'supported' at 0.05 alone; after Holm only the first survives."""
    diffs, raw = [1.0, 2.0, 3.0], [0.01, 0.04, 0.03]
    adj = stats.holm(raw + [NAN])[:3]
    got = [stats.verdict(d, p, +1).verdict for d, p in zip(diffs, adj)]
    assert got == ["supported", "inconclusive", "inconclusive"]


# ---------------------------------------------------------------- power

def test_power_textbook_values():
    # Cohen (1988) / G*Power, two-sided two-sample t-test, alpha 0.05, 80% power
    assert power.seeds_per_arm(1.0, 1.0) == 17
    assert power.seeds_per_arm(0.8, 1.0) == 26
    assert power.seeds_per_arm(0.5, 1.0) == 64
    assert power.t_test_power(17, 1.0) >= 0.8 > power.t_test_power(16, 1.0)
    assert power.t_test_power(17, 1.0) == pytest.approx(0.807, abs=1e-3)
    # report units: 0.2 pp to detect with 0.2 pp spread is d = 1
    assert power.seeds_per_arm(0.2, 0.2) == 17


def test_power_monotone_and_multiplicity():
    effects = [0.05, 0.1, 0.2, 0.5, 1.0, 2.0]
    n = [power.seeds_per_arm(e, 0.3) for e in effects]
    assert all(x >= y for x, y in zip(n, n[1:])) and n[0] > n[-1]
    assert power.seeds_per_arm(0.2, 0.3, m=8) > power.seeds_per_arm(0.2, 0.3, m=1)
    assert power.seeds_per_arm(0.2, 0.3, power=0.9) > power.seeds_per_arm(0.2, 0.3)
    assert power.seeds_per_arm(100, 1) == 2                  # never below 2 runs per arm
    assert power.seeds_per_arm(0.2, 0.0) is None             # no spread observed: no sample size
    assert power.seeds_per_arm(0.2, NAN) is None
    assert power.seeds_per_arm(0.0, 1.0) is None


def test_power_stays_finite_and_monotone_where_the_lower_tail_underflows():
    """A large noncentrality once made scipy's nct.cdf return NaN, and seeds_per_arm jump (8 seeds at
    m = 39, 16 at m = 40, 9 at m = 41 for 0.2 pp against sd 0.0801)."""
    d = 0.2 / 0.0801
    p = [power.t_test_power(n, d, 0.05 / 40) for n in range(2, 60)]
    assert all(math.isfinite(x) for x in p) and all(a <= b for a, b in zip(p, p[1:]))
    n = [power.seeds_per_arm(0.2, 0.0801, m=m) for m in range(30, 50)]
    assert n == sorted(n) and n[-1] - n[0] <= 2


# ---------------------------------------------------------------- failed runs

def test_fisher_three_vs_three_cannot_reach_alpha():
    r = exact.fisher_failed(3, 3, 0, 3)
    assert r.p == pytest.approx(0.1) and r.min_p == pytest.approx(0.1)   # 2 / C(6, 3)
    assert "3 vs 3 runs cannot reach p < 0.05" in r.reason
    assert (r.frac_a, r.frac_b, r.diff) == (1.0, 0.0, 1.0)
    assert exact.fisher_min_p(3, 3) == pytest.approx(0.1)
    four = exact.fisher_failed(0, 4, 4, 4)
    assert four.p == pytest.approx(2 / 70) and four.reason == "" and four.diff == -1.0
    assert exact.fisher_min_p(5, 2) == pytest.approx(1 / 21)   # 0/5 vs 2/2
    empty = exact.fisher_failed(0, 0, 1, 3)
    assert math.isnan(empty.p) and "no runs" in empty.reason
    with pytest.raises(ValueError):
        exact.fisher_failed(4, 3, 0, 3)


def test_stratified_exact_hand_example():
    # two strata of 2/2 vs 0/2: per stratum x ~ {0: 1/6, 1: 4/6, 2: 1/6}; the sum T of the two has
    # P(T) = (1, 8, 18, 8, 1) / 36. Observed T = 4: p = P(0) + P(4) = 2/36.
    r = exact.stratified_exact([(2, 2, 0, 2), (2, 2, 0, 2)])
    assert r.p == pytest.approx(2 / 36)
    assert (r.failed_a, r.n_a, r.failed_b, r.n_b) == (4, 4, 0, 4)
    assert exact.fisher_failed(2, 2, 0, 2).p == pytest.approx(1 / 3)   # one stratum alone
    assert r.min_p == pytest.approx(2 / 36) and "cannot reach" in r.reason
    # T = 3 (2/2 vs 0/2 and 1/2 vs 1/2): outcomes with P <= 8/36 are 0, 1, 3, 4 -> 18/36
    assert exact.stratified_exact([(2, 2, 0, 2), (1, 2, 1, 2)]).p == pytest.approx(0.5)
    # three strata of 3/3 vs 0/3 pool to 2 / 20^3 = 0.00025 < 0.05
    three = exact.stratified_exact([(3, 3, 0, 3)] * 3)
    assert three.p == pytest.approx(2 / 20 ** 3) and three.reason == ""


def test_stratified_exact_with_one_stratum_is_fisher():
    for fa, na, fb, nb in [(3, 3, 0, 3), (1, 4, 3, 5), (0, 6, 2, 2), (2, 5, 2, 5), (5, 7, 1, 9)]:
        fisher = st.fisher_exact([[fa, na - fa], [fb, nb - fb]]).pvalue
        assert exact.stratified_exact([(fa, na, fb, nb)]).p == pytest.approx(fisher)


def test_stratified_skips_empty_strata_and_limits_enumeration():
    r = exact.stratified_exact([(3, 3, 0, 3), (0, 0, 2, 2)])
    assert r.p == pytest.approx(0.1) and (r.n_a, r.n_b) == (3, 3)
    assert math.isnan(exact.stratified_exact([(0, 0, 1, 1)]).p)
    assert math.isnan(exact.stratified_min_p([(3, 3), (3, 3)], max_margins=10))
    assert exact.stratified_min_p([(3, 3), (3, 3)]) == pytest.approx(2 / 400)


def test_stratified_min_p_equals_brute_force():
    """Every outcome of every stratum enumerated: the smallest p of stratified_exact itself."""
    sizes = [(2, 1), (1, 2), (2, 1)]
    tables = [[(fa, na, fb, nb) for fa in range(na + 1) for fb in range(nb + 1)] for na, nb in sizes]
    brute = min(exact.stratified_exact(list(t)).p for t in itertools.product(*tables))
    assert exact.stratified_min_p(sizes) == pytest.approx(brute)
    assert brute < 0.5


# ---------------------------------------------------------------- censored times to a target

def test_rank_test_censored_hand_value():
    # a reaches at 1..4; b reaches once (5), three runs never: ranks a = 1..4, b = 5, 7, 7, 7.
    # W_a = 10 is the smallest possible sum, W = 26 the largest; each from one of C(8, 4) = 70 splits.
    r = exact.rank_test([1, 2, 3, 4], [5, None, NAN, float("inf")])
    assert r.p == pytest.approx(2 / 70) and r.min_p == pytest.approx(2 / 70)
    assert (r.reached_a, r.reached_b, r.censored_b, r.diverged_b) == (4, 1, 3, 0)
    assert (r.mean_rank_a, r.mean_rank_b) == (2.5, 6.5) and r.diff < 0
    assert r.median_a == 2.5 and r.median_b == math.inf
    assert math.isnan(r.hodges_lehmann) and r.method == "exact" and r.reason == ""


def test_rank_test_diverged_rank_below_never_reaching():
    r = exact.rank_test([None, None, None], [], diverged_b=3)
    assert r.p == pytest.approx(0.1) and r.diff == -3.0          # a never reached, b diverged: a better
    assert "3 vs 3 runs cannot reach p < 0.05" in r.reason
    tie = exact.rank_test([None, None, None], [None, None, None])
    assert tie.p == pytest.approx(1.0) and tie.diff == 0


def test_rank_test_all_diverged_arm():
    r = exact.rank_test([], [2, 3, 4], diverged_a=3)
    assert (r.n_a, r.reached_a, r.diverged_a, r.censored_a) == (3, 0, 3, 0)
    assert r.p == pytest.approx(0.1) and r.diff > 0 and r.median_a == math.inf
    v = stats.verdict(r.diff, r.p, expect=-1, min_p=r.min_p)
    assert v.verdict == "inconclusive" and "cannot reach" in v.reason
    empty = exact.rank_test([], [2, 3])
    assert math.isnan(empty.p) and "no runs" in empty.reason


def test_rank_test_matches_scipy_without_ties():
    a, b = [1.0, 2.5, 3.1, 7.0, 8.0], [4.0, 5.0, 6.0, 9.0, 10.0, 11.0]
    r = exact.rank_test(a, b)
    assert r.p == pytest.approx(st.mannwhitneyu(a, b, method="exact").pvalue)


def test_rank_test_matches_scipy_permutation_with_ties():
    a, b = [1, 2, 2, None], [2, 3, None, None]
    r = exact.rank_test(a, b, diverged_b=1)
    ranks = st.rankdata([1, 2, 2, 6, 2, 3, 6, 6, 9])            # never = 6, diverged = 9 (scores in order)
    ra, rb = ranks[:4], ranks[4:]
    e = len(ra) * (len(ranks) + 1) / 2
    ref = st.permutation_test((ra, rb), lambda x, y: abs(x.sum() - e), permutation_type="independent",
                              alternative="greater", n_resamples=np.inf, vectorized=False)
    assert r.p == pytest.approx(ref.pvalue)
    # hand check of the two-sided rule by enumerating all C(9, 4) splits
    pooled = np.concatenate([ra, rb])
    sums = [pooled[list(c)].sum() for c in itertools.combinations(range(9), 4)]
    assert r.p == pytest.approx(np.mean([abs(s - e) >= abs(ra.sum() - e) - 1e-9 for s in sums]))


def test_shift_ci_inverts_the_exact_mann_whitney_test():
    """A shift just inside the interval is not rejected by scipy's exact two-sided Mann-Whitney test at
    0.05, one just outside is; too few runs give an unbounded interval."""
    rng = np.random.default_rng(5)
    for _ in range(40):
        a, b = rng.normal(1.0, 1.0, rng.integers(4, 9)), rng.normal(0.0, 1.0, rng.integers(4, 9))
        hl, lo, hi = exact.shift_ci(a, b)
        assert lo <= hl <= hi and hl == np.median(np.subtract.outer(a, b))
        for delta, inside in ((lo + 1e-7, True), (hi - 1e-7, True), (lo - 1e-7, False), (hi + 1e-7, False)):
            assert (st.mannwhitneyu(a - delta, b, method="exact").pvalue >= 0.05) == inside
    assert exact.shift_ci([1, 2, 3, 4], [5, 6, 7, 8]) == (-4.0, -7.0, -1.0)   # 4 vs 4: the extreme differences
    assert exact.shift_ci([1, 2, 3], [4, 5, 6]) == (-3.0, -math.inf, math.inf)  # 3 vs 3: 1/20 > 0.025 each way
    assert all(math.isnan(v) for v in exact.shift_ci([1, 2, math.inf], [4, 5, 6]))  # a run without a time


def test_rank_test_hodges_lehmann_and_monte_carlo():
    r = exact.rank_test([1, 2, 3], [2, 3, 4])
    assert r.hodges_lehmann == -1.0                              # median of the 9 differences a_i - b_j
    assert r.p == pytest.approx(0.5)
    a, b = [1, 2, 3, 4, 6], [5, 7, 8, None, None]
    full = exact.rank_test(a, b)
    mc = exact.rank_test(a, b, exact_max_n=0, n_resamples=20000, seed=3)
    assert mc.method.startswith("Monte Carlo") and abs(mc.p - full.p) < 0.01
    assert exact.rank_test(a, b, exact_max_n=0, n_resamples=2000, seed=3).p == \
        exact.rank_test(a, b, exact_max_n=0, n_resamples=2000, seed=3).p   # fixed seed: reproducible


# ---------------------------------------------------------------- wording

def test_wording():
    assert markdown.ci_text(-0.44, 0.16) == "between -0.4 and +0.2 pp"
    assert markdown.ci_text(-19, 23, "%", 0) == "between -19 and +23%"
    assert markdown.signed(-0.04) == "0.0" and markdown.signed(0.06) == "+0.1"
    assert markdown.ci_text(-1, 2, unit="") == "between -1.0 and +2.0"


# ---------------------------------------------------------------- spread and correlation

def test_spread_test():
    tight = [1.0, 1.01, 0.99, 1.0, 1.005, 0.995, 1.0, 1.01, 0.99, 1.0]
    wide = [1.0, 2.0, 0.0, 1.5, 0.5, 1.8, 0.2, 1.3, 0.7, 1.0]
    s = stats.spread_test(tight, wide)
    assert s.p == pytest.approx(st.levene(tight, wide, center="median").pvalue) and s.p < 0.05
    assert s.diff == pytest.approx(np.std(tight, ddof=1) - np.std(wide, ddof=1)) and s.diff < 0
    assert stats.spread_test([1, 2, 3], [1, 2.5, 3.2]).p > 0.5
    none = stats.spread_test([4, 4, 4], [5, 5, 5])
    assert math.isnan(none.p) and "degenerate" in none.reason and none.diff == 0
    # two runs per arm: |x - median| is the same for both runs, scipy would give p ~ 1e-26
    two = stats.spread_test([0.85, 0.855], [0.88, 0.8835])
    assert math.isnan(two.p) and "fewer than 3 runs" in two.reason
    # symmetric arms of three: deviations (d, 0, d) still vary, so the test runs
    assert 0 < stats.spread_test([1, 2, 3], [1, 3, 5]).p <= 1


def test_sd_ratio_ci_inverts_the_f_test_and_covers():
    # the interval excludes 1 exactly when the two-sided F test of equal variances rejects at 5%
    rng = np.random.default_rng(0)
    for _ in range(200):
        a, b = rng.normal(0, 1, 6), rng.normal(0, rng.uniform(0.3, 3), 9)
        sa, sb = np.std(a, ddof=1), np.std(b, ddof=1)
        lo, hi = stats.sd_ratio_ci(sa, 6, sb, 9)
        assert lo < sa / sb < hi
        cdf = st.f.cdf((sa / sb) ** 2, 5, 8)
        assert (not lo <= 1 <= hi) == (2 * min(cdf, 1 - cdf) < 0.05)
    # coverage of the true ratio 2 for normal samples of 5 vs 7
    hits = 0
    for _ in range(2000):
        a, b = rng.normal(0, 2, 5), rng.normal(0, 1, 7)
        lo, hi = stats.sd_ratio_ci(np.std(a, ddof=1), 5, np.std(b, ddof=1), 7)
        hits += lo <= 2 <= hi
    assert 0.93 < hits / 2000 < 0.97
    assert all(math.isnan(v) for v in stats.sd_ratio_ci(0.0, 5, 1.0, 5) + stats.sd_ratio_ci(1.0, 1, 1.0, 5))
    s = stats.spread_test([1.0, 2.0, 4.0, 3.5], [1.0, 1.1, 1.2, 1.05])
    assert s.ratio_low < s.ratio < s.ratio_high and s.ratio == pytest.approx(s.sd_a / s.sd_b)


def test_spearman():
    c = stats.spearman([1, 2, 3, 4, 5], [2, 4, 6, 8, 11])
    assert c.rho == pytest.approx(1.0) and c.n == 5 and c.p < 0.05
    c = stats.spearman([1, 2, 3, None, 5], [5, 4, 3, 2, NAN])     # pairs with a gap are dropped
    assert c.n == 3 and c.rho == pytest.approx(-1.0)
    ref = st.spearmanr([0.1, 0.5, 0.3, 0.9], [1, 3, 2, 2])
    got = stats.spearman([0.1, 0.5, 0.3, 0.9], [1, 3, 2, 2])
    assert (got.rho, got.p) == pytest.approx((ref.statistic, ref.pvalue))
    assert math.isnan(stats.spearman([1, 2], [1, 2]).rho)
    assert math.isnan(stats.spearman([1, 1, 1], [1, 2, 3]).rho)


# ---------------------------------------------------------------- exact helpers and power of the other tests

def test_fisher_p_outcomes_match_scipy():
    for fa, na, fb, nb in [(3, 3, 0, 3), (1, 4, 3, 5), (0, 6, 2, 2), (2, 5, 2, 5), (5, 7, 1, 9)]:
        ref = st.fisher_exact([[fa, na - fa], [fb, nb - fb]]).pvalue
        ps = exact.fisher_p_outcomes(na, nb, fa + fb)
        assert ps[fa - max(0, fa + fb - nb)] == pytest.approx(ref)
    ps = exact.fisher_p_outcomes(3, 3, 3)          # x = 0..3 failures in arm a, 3 in all
    assert ps.tolist() == pytest.approx([0.1, 1.0, 1.0, 0.1])


def test_rank_min_p_and_separation_seeds():
    assert exact.rank_min_p(3, 3) == pytest.approx(0.1)
    assert exact.rank_min_p(4, 4) == pytest.approx(2 / 70)
    assert exact.rank_min_p(3, 3) == pytest.approx(exact.rank_test([1, 2, 3], [4, 5, 6]).p)
    assert power.separation_seeds() == 4                       # 2 / 70 < 0.05 <= 2 / 20
    assert power.separation_seeds(m=10) == 6                   # 2 / 924 < 0.005 <= 2 / 252
    assert power.rank_seeds(1.0, 1.0) == math.ceil(17 / (3 / math.pi))
    assert power.rank_seeds(1.0, 0.0) is None


def test_spread_power_is_the_f_test():
    # with ratio 1 the F test rejects exactly alpha of the time
    assert power.spread_power(10, 1.0) == pytest.approx(0.05)
    rng = np.random.default_rng(0)
    n, hits = 8, 0
    lo, hi = st.f.ppf(0.025, n - 1, n - 1), st.f.ppf(0.975, n - 1, n - 1)
    for _ in range(4000):
        f = np.var(rng.normal(0, 2, n), ddof=1) / np.var(rng.normal(0, 1, n), ddof=1)
        hits += not lo <= f <= hi
    assert power.spread_power(n, 2.0) == pytest.approx(hits / 4000, abs=0.03)
    n2 = power.spread_seeds(2.0)
    assert power.spread_power(n2, 2.0) >= 0.8 > power.spread_power(n2 - 1, 2.0)
    assert power.spread_seeds(2.0, m=10) > n2


def test_fisher_power_exact_enumeration():
    # 0% vs 100% failing with 3 per arm: every draw is 0/3 vs 3/3, p = 0.1 >= 0.05: power 0
    assert power.fisher_power(3, 0.0, 1.0) == 0.0
    assert power.fisher_power(4, 0.0, 1.0) == pytest.approx(1.0)   # 0/4 vs 4/4: p = 2/70
    # brute force for 5 per arm, 10% vs 60%
    n, pa, pb = 5, 0.1, 0.6
    brute = sum(st.binom.pmf(x, n, pa) * st.binom.pmf(y, n, pb) for x in range(n + 1) for y in range(n + 1)
                if st.fisher_exact([[x, n - x], [y, n - y]]).pvalue < 0.05)
    assert power.fisher_power(n, pa, pb) == pytest.approx(brute)
    k = power.fisher_seeds(0.0, 0.5)
    assert power.fisher_power(k, 0.0, 0.5) >= 0.8 and all(power.fisher_power(j, 0.0, 0.5) < 0.8 for j in range(2, k))
    with pytest.raises(ValueError):
        power.fisher_seeds(0.5, 0.5)


@pytest.mark.parametrize("counts, published", [
    # Newcombe 1998, Stat. Med. 17:873, Table II, method 11 (score interval with continuity correction)
    ((56, 70, 48, 80), (0.0428, 0.3422)),
    ((9, 10, 3, 10), (0.1013, 0.8387)),
    ((6, 7, 2, 7), (-0.0290, 0.8423)),
    ((10, 10, 0, 20), (0.6014, 1.0)),
])
def test_proportion_difference_ci_matches_newcombes_published_intervals(counts, published):
    lo, hi = stats.proportion_difference_ci(*counts)
    assert (round(lo, 4), round(hi, 4)) == published


def test_wilson_interval_published_values_and_edges():
    # Newcombe 1998, Stat. Med. 17:857, Table I, method 4 (Wilson with continuity correction)
    assert tuple(round(v, 4) for v in stats.wilson(81, 263)) == (0.2535, 0.3682)
    assert tuple(round(v, 4) for v in stats.wilson(15, 148)) == (0.0598, 0.1644)
    lo, hi = stats.wilson(0, 20)
    assert lo == 0.0 and 0.15 < hi < 0.25           # none failed: not the point [0, 0]
    assert stats.wilson(20, 20)[1] == 1.0 and all(math.isnan(v) for v in stats.wilson(0, 0))


def test_failed_fraction_interval_mostly_agrees_with_fishers_test():
    """The interval and Fisher's exact test are different procedures: on the 1,764 tables of two arms
    with 2 to 8 runs each they agree (p >= 0.05 exactly when the interval holds 0) on all but 24, and
    those are borderline, with p between 0.04 and 0.10 (3/3 vs 0/3 failed: p = 0.1, interval
    +2.4 to +100 pp)."""
    disagree = []
    for na, nb in itertools.product(range(2, 9), repeat=2):
        for xa, xb in itertools.product(range(na + 1), range(nb + 1)):
            p = st.fisher_exact([[xa, na - xa], [xb, nb - xb]]).pvalue
            lo, hi = stats.proportion_difference_ci(xa, na, xb, nb)
            assert -1 <= lo <= xa / na - xb / nb <= hi <= 1
            if (p >= 0.05) != (lo <= 0 <= hi):
                disagree.append(p)
    assert len(disagree) == 24 and all(0.04 < p < 0.1 + 1e-9 for p in disagree)
