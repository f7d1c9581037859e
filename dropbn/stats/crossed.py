"""The difference of two arms' mean accuracies when the seeds and the test images are both samples.

A claim's seed-only interval (stats.mean_difference) treats the test set as fixed: it answers
"would other seeds, on these test images, give the same difference?". This module answers "would
other seeds, on another draw of test images from the same distribution, give it?". Every run of
both arms is scored on the same images (the correctness matrices come from the runs'
predictions.npz), so the design is crossed: runs (nested in arms) x images. Under the additive
random-effects model

    correct[r, i] = mu_arm + image_arm[i] + seed[r] + e[r, i]      (r a run of the arm, i an image)

the variance of D = (mean accuracy of arm a) - (that of arm b), over new seeds and new images, is

    Var D = sum over arms (var_seed / n + var_e / (n N)) + var(image_a - image_b) / N.

* The seed-only term s^2 / n (s: sd of the arm's run accuracies) estimates var_seed/n + var_e/(nN).
* The paired image term var_i(d_i) / N (d_i: per-image difference of the arms' mean correctness)
  estimates var(image_a - image_b)/N + sum over arms var_e/(nN).
Both contain the seed x image interaction var_e/(nN): adding them (as a naive two-level bootstrap
does) counts it twice and over-covers. The within-image variance over runs,
w = mean_i var_r(correct[r, i]), estimates var_seed + var_e, so (w - s^2) / (n (N - 1)) estimates
var_e/(nN) and is subtracted once: a method-of-moments (ANOVA) estimate for the crossed design.
The image component is truncated at zero, as estimated variance components are, so the variance is
never below the seed-only one. Degrees of freedom: Welch-Satterthwaite over the three components
(seeds of a, seeds of b, images). Nothing is resampled: the same inputs give the same interval, and
a report regenerates byte-identically. tests/test_crossed.py checks the coverage by simulation
(known true difference, seed and image noise): near 95%, where the seed-only interval under-covers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as st

CONF = 0.95


@dataclass(frozen=True)
class CrossedDiff:
    """a - b of mean accuracy with its interval over seeds and test images."""

    n_a: int
    n_b: int
    images: int
    diff: float
    se: float
    df: float
    lo: float
    hi: float
    p: float
    se_seeds: float     # the seed-only part of the standard error
    se_images: float    # the part the test-image sample adds (0 when its estimate is <= 0)


def correctness(predictions, labels) -> np.ndarray:
    """runs x images matrix of 0/1: predictions (runs x images class indices) == labels (images)."""
    p = np.asarray(predictions)
    y = np.asarray(labels)
    if p.ndim != 2 or p.shape[1] != y.shape[0]:
        raise ValueError(f"predictions of shape {p.shape} do not match {y.shape[0]} labels")
    return (p == y[None, :]).astype(float)


def crossed_difference(correct_a, correct_b, conf: float = CONF) -> CrossedDiff:
    """correct_a, correct_b: runs x images 0/1 matrices over the same images (same order).
    NaN interval when an arm has fewer than 2 runs or there are fewer than 2 images."""
    a = np.asarray(correct_a, dtype=float)
    b = np.asarray(correct_b, dtype=float)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"correctness matrices of shapes {a.shape} and {b.shape} do not share their images")
    n_a, n_b, n_img = a.shape[0], b.shape[0], a.shape[1]
    nan = math.nan
    if n_a == 0 or n_b == 0 or n_img == 0:
        return CrossedDiff(n_a, n_b, n_img, nan, nan, nan, nan, nan, nan, nan, nan)
    acc_a, acc_b = a.mean(1), b.mean(1)
    diff = float(acc_a.mean() - acc_b.mean())
    if n_a < 2 or n_b < 2 or n_img < 2:
        return CrossedDiff(n_a, n_b, n_img, diff, nan, nan, nan, nan, nan, nan, nan)
    s2a, s2b = _var(acc_a), _var(acc_b)
    seed_a, seed_b = s2a / n_a, s2b / n_b
    d = a.mean(0) - b.mean(0)
    paired = _var(d) / n_img
    w_a, w_b = float(a.var(0, ddof=1).mean()), float(b.var(0, ddof=1).mean())
    twice = max(0.0, w_a - s2a) / (n_a * (n_img - 1)) + max(0.0, w_b - s2b) / (n_b * (n_img - 1))
    images = max(0.0, paired - twice)
    v = seed_a + seed_b + images
    se_seeds, se_images = math.sqrt(seed_a + seed_b), math.sqrt(images)
    if v == 0:
        return CrossedDiff(n_a, n_b, n_img, diff, 0.0, nan, diff, diff, 1.0 if diff == 0 else 0.0, 0.0, 0.0)
    parts = [(seed_a, n_a - 1), (seed_b, n_b - 1), (images, n_img - 1)]
    df = v * v / sum(c * c / k for c, k in parts if c > 0)
    se = math.sqrt(v)
    q = float(st.t.ppf(1 - (1 - conf) / 2, df))
    p = float(2 * st.t.sf(abs(diff) / se, df))
    return CrossedDiff(n_a, n_b, n_img, diff, se, df, diff - q * se, diff + q * se, p, se_seeds, se_images)


def _var(x: np.ndarray) -> float:
    """Sample variance (ddof=1), exactly 0.0 when all values are equal."""
    return 0.0 if np.ptp(x) == 0 else float(x.var(ddof=1))
