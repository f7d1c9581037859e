"""Coverage of the seeds x test-images interval (dropbn/stats/crossed.py) against the seed-only Welch
interval, by simulation: python scripts/crossed_coverage.py  (about 20 s; docs/uncertainty.md quotes its output).

Each repetition draws a test set (image difficulty shared by both arms plus an arm-specific part) and
seeds per arm (a run effect plus run x image noise); a run gets an image right when its latent score is
above 0, so the population difference of the arms' accuracies is known exactly. Prints, per setting:
the true difference, the coverage of the crossed interval, that of the seed-only Welch interval, and
the mean seed and image parts of the crossed standard error.
"""
import math
import sys
import warnings
from pathlib import Path

import numpy as np
from scipy import stats as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from dropbn.stats.crossed import crossed_difference  # noqa: E402

SETTINGS = [{}, {"sd_seed": 0.3}, {"sd_u": 0.3}, {"sd_int": 1.5}, {"n": 3}, {"n": 8}, {"sd_u": 2, "sd_int": 0.2}]


def coverage(reps=1000, images=500, n=5, ta=2.4, tb=2.0, sd_img=2.0, sd_u=1.0, sd_seed=0.1, sd_int=0.5, seed=0):
    rng = np.random.default_rng(seed)
    true = st.norm.cdf(ta / math.hypot(sd_img, sd_u, sd_seed, sd_int)) - st.norm.cdf(tb / math.hypot(sd_img, sd_u, sd_seed, sd_int))
    hit = hit_seed = 0
    parts = []
    for _ in range(reps):
        z = rng.normal(0, sd_img, images)

        def arm(theta):
            u = rng.normal(0, sd_u, images)
            run = rng.normal(0, sd_seed, (n, 1))
            return theta + z + u + run + rng.normal(0, sd_int, (n, images)) > 0

        a, b = arm(ta), arm(tb)
        r = crossed_difference(a, b)
        hit += r.lo <= true <= r.hi
        w = st.ttest_ind(a.mean(1), b.mean(1), equal_var=False).confidence_interval()
        hit_seed += w.low <= true <= w.high
        parts.append((r.se_seeds, r.se_images))
    return true, hit / reps, hit_seed / reps, np.mean(parts, 0)


if __name__ == "__main__":
    warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
    print("setting | true a - b | crossed coverage | seed-only coverage | mean SE parts (seeds, images)")
    for kw in SETTINGS:
        true, c, s, (se_s, se_i) = coverage(**kw)
        print(f"{kw or 'default'} | {true:.4f} | {c:.3f} | {s:.3f} | {se_s:.4f}, {se_i:.4f}")
