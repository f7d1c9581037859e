"""Pure statistics (numpy and scipy; no other dropbn package, no files, no torch).

summaries.py    one arm: mean with its 95% CI, robust summaries, intention to treat, intervals
comparisons.py  two arms: difference of means, TOST, spread and rank correlation tests, Holm, the verdict
exact.py        exact tests for small samples: Fisher / stratified on failed runs, ranks of censored times
power.py        seeds per arm that would detect a minimal effect, for each of those tests

The package's namespace holds the names of summaries.py and comparisons.py (`stats.mean_ci`,
`stats.verdict`), which is how the report calls them.
"""
from .comparisons import (INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, Correlation, Equivalence, MeanDiff, Spread,
                          Verdict, family_size, hedges_g, holm, mean_difference, pooled_sd, spearman, spread_test,
                          tost, verdict)
from .summaries import (ALPHA, CI, CONF, ITT, Robust, clean, fmt_ci, geometric_mean, intention_to_treat, mean_ci,
                        proportion_difference_ci, robust_summary, sample_sd, sd_ratio_ci, wilson)

__all__ = ["ALPHA", "CI", "CONF", "INCONCLUSIVE", "ITT", "NOT_SUPPORTED", "SUPPORTED", "Correlation", "Equivalence",
           "MeanDiff", "Robust", "Spread", "Verdict", "clean", "family_size", "fmt_ci", "geometric_mean", "hedges_g",
           "holm", "intention_to_treat", "mean_ci", "mean_difference", "pooled_sd", "proportion_difference_ci",
           "robust_summary", "sample_sd", "sd_ratio_ci", "spearman", "spread_test", "tost", "verdict", "wilson"]
