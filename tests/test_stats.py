"""dropbn.report.stats: mean ± CI maths and the claim verdict rule, on known numbers."""
import math

import pytest
from scipy import stats as st

from dropbn.report import stats


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


def test_fmt_ci():
    assert stats.fmt_ci(stats.mean_ci([1, 2, 3])) == "2.00 ± 2.48 (n=3)"
    assert stats.fmt_ci(stats.mean_ci([0.9861]), 100, 2, "%") == "98.61% (n=1)"
    assert stats.fmt_ci(stats.mean_ci([])) == "–"


def test_welch_matches_hand_computation():
    a, b = [10.0, 11.0, 12.0], [1.0, 2.0, 4.0]
    t, p = stats.welch(a, b)
    va, vb = 1.0, st.tvar(b)
    se = math.sqrt(va / 3 + vb / 3)
    t_hand = (11 - 7 / 3) / se
    df = (va / 3 + vb / 3) ** 2 / ((va / 3) ** 2 / 2 + (vb / 3) ** 2 / 2)
    assert t == pytest.approx(t_hand)
    assert p == pytest.approx(2 * st.t.sf(abs(t_hand), df))


def test_verdict_clearly_supported():
    r = stats.compare_means([10, 11, 12], [1, 2, 3], expect=+1)
    assert r.verdict == "supported" and r.p < 0.05 and r.diff == pytest.approx(9)
    assert (r.n_a, r.n_b) == (3, 3)


def test_verdict_clearly_not_supported():
    r = stats.compare_means([10, 11, 12], [1, 2, 3], expect=-1)  # claimed a < b, but a >> b
    assert r.verdict == "not supported" and r.p < 0.05


def test_verdict_inconclusive():
    r = stats.compare_means([1, 5, 9], [2, 6, 10], expect=-1)
    assert r.verdict == "inconclusive" and r.p > 0.5
    assert stats.compare_means([1], [2, 3], expect=+1).verdict == "inconclusive"
    assert stats.compare_means([], [2, 3], expect=+1).note.startswith("fewer than 2")


def test_verdict_without_spread_is_exact():
    r = stats.compare_means([4, 4, 4], [6, 6, 6], expect=-1)
    assert r.verdict == "supported" and "exact" in r.note and math.isnan(r.p)
    assert stats.compare_means([4, 4], [4, 4], expect=-1).verdict == "inconclusive"


def test_decide_rule():
    assert stats.decide(+1.0, 0.01, +1) == "supported"
    assert stats.decide(-1.0, 0.01, +1) == "not supported"
    assert stats.decide(+1.0, 0.05, +1) == "inconclusive"  # p must be < alpha
    assert stats.decide(+1.0, float("nan"), +1) == "inconclusive"


def test_spread_test():
    tight = [1.0, 1.01, 0.99, 1.0, 1.005, 0.995, 1.0, 1.01, 0.99, 1.0]
    wide = [1.0, 2.0, 0.0, 1.5, 0.5, 1.8, 0.2, 1.3, 0.7, 1.0]
    assert stats.compare_spread(tight, wide, expect=-1).verdict == "supported"
    assert stats.compare_spread(tight, wide, expect=+1).verdict == "not supported"
    assert stats.compare_spread([1, 2, 3], [1, 2.5, 3.2], expect=-1).verdict == "inconclusive"
