"""One test per kind of quantity in the claims table, and which runs and values enter it.

- an arm is every run of its configuration that completed or diverged; crashed (status failed) and
  unfinished runs say nothing about the configuration and are left out (the note counts them);
- accuracy: intention to treat, a diverged run enters at chance accuracy (1 / classes), Welch;
- gap: Welch on the completed runs; seconds per epoch: Welch on log seconds (shown as a ratio);
  diverged runs have neither, the note counts them and the trainability row tests them;
- epochs / seconds to the target: the rank test for censored data (exact.rank_test);
- stability: the spread test on the intention-to-treat accuracies;
- trainability: a run failed to train when it diverged or ended below chance + CHANCE_MARGIN;
  Fisher's exact test, or the exact stratified test over several contexts.
Each returns a Result; claims.py adjusts the family and reads the verdicts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..config.claims_file import QUANTITIES as Q
from ..record.states import FINISHED
from .. import stats
from ..stats import exact
from .markdown import signed

CHANCE_MARGIN = 0.02   # final test accuracy below 1 / classes + this counts as "ended at chance"
FAILED_RULE = f"diverged, or final test accuracy below chance + {CHANCE_MARGIN * 100:g} pp"  # failed_to_train
ENV_KEYS = (("env_platform", "machines"), ("env_cpu_count", "CPU counts"), ("env_threads", "thread counts"),
            ("env_parallel_runs", "runs sharing the machine"), ("git_commit", "commits"), ("device_used", "devices"))


@dataclass(frozen=True)
class Measure:
    column: str      # runs column
    unit: str        # pp | epochs | ratio | spread   (unit and test: config/claims_file.QUANTITIES)
    test: str        # welch | log-welch | rank | spread
    scale: float = 1.0
    itt: bool = False  # diverged runs enter at chance accuracy


MEASURES = {
    "final_test_acc": Measure("final_test_acc", *Q["final_test_acc"], 100, itt=True),
    "final_test_acc_spread": Measure("final_test_acc", *Q["final_test_acc_spread"], 100, itt=True),
    "generalization_gap": Measure("generalization_gap", *Q["generalization_gap"], 100),
    "seconds_per_epoch": Measure("seconds_per_epoch", *Q["seconds_per_epoch"]),
    "epochs_to_target": Measure("epochs_to_target", *Q["epochs_to_target"]),
    "seconds_to_target": Measure("seconds_to_target", *Q["seconds_to_target"]),
    "val_selected_test_acc": Measure("val_selected_test_acc", *Q["val_selected_test_acc"], 100),
    "final_train_acc": Measure("final_train_acc", *Q["final_train_acc"], 100),
    "variance_shift_ratio": Measure("vs_worst_median_ratio", *Q["variance_shift_ratio"]),
}
TIMING = {"seconds_per_epoch", "seconds_to_target"}


@dataclass
class Result:
    """One test's numbers, before the family is known (then Holm, verdict and power follow)."""
    statistic: str                 # what value_a / value_b are
    value_a: float
    value_b: float
    diff: float                    # shown: a - b (ratio a / b for units 'ratio' and 'spread')
    ci_low: float
    ci_high: float
    hedges_g: float
    direction: float               # the sign the verdict reads
    test: str
    p: float
    min_p: float
    n_a: int
    n_b: int
    reason: str                    # why no p
    a: np.ndarray                  # the arms in the test's analysis scale (power and TOST read them)
    b: np.ndarray
    notes: list = field(default_factory=list)


# ---------------------------------------------------------------- which runs, which values

def failed_to_train(runs: pd.DataFrame) -> pd.Series:
    """Diverged, or completed below chance accuracy + CHANCE_MARGIN."""
    chance = 1.0 / runs["num_classes"].astype(float)
    acc = runs["final_test_acc"].astype(float)
    return (runs["status"] == "diverged") | ((runs["status"] == "completed") & (acc < chance + CHANCE_MARGIN))


def arm(runs: pd.DataFrame, label: str) -> tuple[pd.DataFrame, str]:
    """(completed and diverged runs of a configuration, note on the runs left out)."""
    g = runs[runs["label"].astype(str) == label]
    out = g[~g["status"].isin(FINISHED)]["status"].value_counts()
    note = ", ".join(f"{n} {'crashed (status failed)' if s == 'failed' else s}" for s, n in out.items())
    return g[g["status"].isin(FINISHED)], note


def itt_values(g: pd.DataFrame) -> tuple[np.ndarray, int, int]:
    """(final test accuracies with diverged runs at chance, diverged runs substituted, diverged runs
    left out because their number of classes is unknown)."""
    dead = g["status"] == "diverged"
    unplaced = dead & g["num_classes"].isna()
    known = g[~unplaced]
    itt = stats.intention_to_treat(known["final_test_acc"].astype(float), dead[~unplaced],
                                   known["num_classes"].astype(float))
    return itt.values, itt.substituted, int(unplaced.sum())


def _positive_log(v) -> np.ndarray:
    v = stats.clean(v)
    return np.log(v[v > 0])


# ---------------------------------------------------------------- one test per measure

def welch(a, b, unit: str, log: bool) -> Result:
    """Welch difference of means (on log values for unit 'ratio': shown as the ratio of geometric means)."""
    a, b = (_positive_log(a), _positive_log(b)) if log else (stats.clean(a), stats.clean(b))
    d = stats.mean_difference(a, b)
    notes = [d.note] if d.note else []
    if log:
        return Result("geometric mean", math.exp(d.mean_a) if d.n_a else math.nan,
                      math.exp(d.mean_b) if d.n_b else math.nan, math.exp(d.diff), math.exp(d.ci_low),
                      math.exp(d.ci_high), d.hedges_g, d.diff, "Welch on log values", d.p, 0.0, d.n_a, d.n_b,
                      d.reason, a, b, notes)
    return Result("mean", d.mean_a, d.mean_b, d.diff, d.ci_low, d.ci_high, d.hedges_g, d.diff, "Welch", d.p, 0.0,
                  d.n_a, d.n_b, d.reason, a, b, notes)


def spread(a, b) -> Result:
    """Brown-Forsythe p; shown as the ratio sd_a / sd_b with its normal-theory 95% CI."""
    s = stats.spread_test(a, b)
    return Result("std", s.sd_a, s.sd_b, s.ratio, s.ratio_low, s.ratio_high, math.nan, s.diff,
                  "Brown-Forsythe (Levene, median)", s.p, 0.0, s.n_a, s.n_b, s.reason, stats.clean(a), stats.clean(b))


def _shift_note(a, b, ratio: bool, untimed: int, n_a: int, n_b: int, unit: str = "") -> str:
    """The Hodges-Lehmann shift of a against b with its 95% CI (exact.shift_ci; on log times for a
    ratio), or why there is none."""
    if untimed:
        return f"no shift CI: {untimed} run(s) without a time to the target"
    hl, lo, hi = exact.shift_ci(a, b)
    if not math.isfinite(hl):
        return ""
    if ratio:
        hl, lo, hi = (math.exp(v) for v in (hl, lo, hi))
        est = f"Hodges-Lehmann ratio a / b ×{hl:.3f}"
        ci = f"×{lo:.3f} to ×{hi:.3f}" if math.isfinite(lo) and math.isfinite(hi) and lo > 0 else ""
    else:
        est = f"Hodges-Lehmann shift a − b {signed(hl, 2)}{unit}"
        ci = f"{signed(lo, 2)} to {signed(hi, 2)}{unit}" if math.isfinite(lo) and math.isfinite(hi) else ""
    return f"{est}, 95% CI {ci} (Moses)" if ci else f"{est}; 95% CI unbounded with {n_a} vs {n_b} runs"


def censored(ga: pd.DataFrame, gb: pd.DataFrame, column: str, ratio: bool) -> Result:
    """Rank test on times to the target; a diverged run that reached the target before diverging keeps its time."""
    def split(g):
        t = g[column].astype(float)
        dead = (g["status"] == "diverged") & t.isna()
        return t[~dead].to_numpy(), int(dead.sum())
    (va, da), (vb, db) = split(ga), split(gb)
    r = exact.rank_test(va, vb, da, db)
    med_a, med_b = (v if math.isfinite(v) else math.nan for v in (r.median_a, r.median_b))
    diff = (med_a / med_b if med_b > 0 else math.nan) if ratio else med_a - med_b
    notes = [f"reached the target: {r.reached_a}/{r.n_a} vs {r.reached_b}/{r.n_b} runs"
             + (f" ({r.diverged_a} vs {r.diverged_b} diverged without reaching it)" if da or db else ""),
             f"mean ranks {r.mean_rank_a:.1f} vs {r.mean_rank_b:.1f}"]
    if not (math.isfinite(r.median_a) and math.isfinite(r.median_b)):
        notes.append("a median run did not reach the target (median shown as n/a)")
    a, b = ((_positive_log(va), _positive_log(vb)) if ratio else (stats.clean(va), stats.clean(vb)))
    notes.append(_shift_note(a, b, ratio, da + db + (len(va) - len(a)) + (len(vb) - len(b)), r.n_a, r.n_b,
                             " epochs" if column.startswith("epochs") else ""))
    return Result("median", med_a, med_b, diff, math.nan, math.nan, math.nan, r.diff, f"rank test ({r.method})",
                  r.p, r.min_p, r.n_a, r.n_b, r.reason if not math.isfinite(r.p) else "", a, b, notes)


CI_POOLED = ("95% CI: Newcombe's interval on the counts pooled over the strata (the strata are ignored: "
             "with as many runs per arm in each stratum it errs on the wide side)")


def trainability(strata) -> Result:
    """strata: [(failed_a, n_a, failed_b, n_b)]; Fisher for one stratum, the exact stratified test for several."""
    t = exact.fisher_failed(*strata[0]) if len(strata) == 1 else exact.stratified_exact(strata)
    lo, hi = stats.proportion_difference_ci(t.failed_a, t.n_a, t.failed_b, t.n_b)
    res = Result("failed fraction (%)", 100 * t.frac_a, 100 * t.frac_b, 100 * t.diff, 100 * lo, 100 * hi, math.nan,
                 t.diff, t.test, t.p, t.min_p, t.n_a, t.n_b, "" if math.isfinite(t.p) else t.reason,
                 np.array([t.frac_a]), np.array([t.frac_b]),
                 [f"failed to train: {t.failed_a}/{t.n_a} vs {t.failed_b}/{t.n_b}"])
    if len(strata) > 1 and math.isfinite(lo):
        res.notes.append(CI_POOLED)
    if t.min_p >= stats.ALPHA:
        res.notes.append(t.reason)
    return res


def measure(m: Measure, ga: pd.DataFrame, gb: pd.DataFrame) -> Result:
    dead_a, dead_b = (int((g["status"] == "diverged").sum()) for g in (ga, gb))
    if m.test == "rank":
        return censored(ga, gb, m.column, m.unit == "ratio")
    if m.itt:
        (va, sa, ua), (vb, sb, ub) = itt_values(ga), itt_values(gb)
        res = spread(va * m.scale, vb * m.scale) if m.test == "spread" else welch(va * m.scale, vb * m.scale,
                                                                                   m.unit, False)
        if sa or sb:
            res.notes.append(f"intention to treat: {sa} vs {sb} diverged run(s) entered at chance accuracy")
        if ua or ub:
            res.notes.append(f"{ua} vs {ub} diverged run(s) left out: number of classes unknown")
        return res
    live_a, live_b = (g[g["status"] == "completed"] for g in (ga, gb))
    res = welch(live_a[m.column].astype(float) * m.scale, live_b[m.column].astype(float) * m.scale, m.unit,
                m.test == "log-welch")
    if dead_a or dead_b:
        res.notes.append(f"{dead_a} vs {dead_b} diverged run(s) have no value here (see the trainability row)")
    return res


def env_note(ga: pd.DataFrame, gb: pd.DataFrame) -> str:
    """What differs between the runs of a timing comparison: machine, CPU count, threads, commit, device."""
    both, parts = pd.concat([ga, gb]), []
    for col, name in ENV_KEYS:
        if col not in both or both[col].isna().all():
            continue
        short = (lambda v: str(v)[:10] + ("+dirty" if str(v).endswith("dirty") else "")) if col == "git_commit" \
            else (lambda v: f"{v:g}" if isinstance(v, float) else str(v))
        vals = sorted({short(v) for v in both[col].dropna()})
        if len(vals) > 1:
            per = [", ".join(sorted({short(v) for v in g[col].dropna()})) or "?" for g in (ga, gb)]
            parts.append(f"{name} differ within each arm, the same mix in both ({per[0]})" if per[0] == per[1]
                         else f"{name} differ ({per[0]} vs {per[1]})")
    missing = [name for col, name in ENV_KEYS[:2] if col not in both or both[col].isna().all()]
    if missing:
        parts.append(" and ".join(missing) + " not recorded")
    return "timing: " + "; ".join(parts) if parts else ""


def unequal_conditions(ga: pd.DataFrame, gb: pd.DataFrame) -> str:
    """Why the runs of a timing comparison were not timed under equal conditions ("" when they were):
    every run must have trained alone on its machine (env.parallel_runs = 1, recorded), on the same
    kind of machine (platform, CPU count, threads) and device."""
    both = pd.concat([ga, gb])
    col = "env_parallel_runs"
    shared = both[col] if col in both else pd.Series([math.nan] * len(both))
    if shared.isna().any():
        return "runs sharing the machine not recorded"
    if (shared.astype(float) > 1).any():
        return f"up to {int(shared.astype(float).max())} runs shared the machine"
    for col, name in (("env_platform", "machines"), ("env_cpu_count", "CPU counts"), ("env_threads", "thread counts"),
                      ("device_used", "devices")):
        if col in both and both[col].nunique(dropna=True) > 1:
            return f"{name} differ"
    return ""


def steady_state(runs: pd.DataFrame) -> bool:
    """Whether the runs' seconds_per_epoch exclude the first epoch: runs that record first_epoch_seconds
    time it apart, and with more than one epoch the steady state is the mean of epochs 2..N."""
    return bool(len(runs)) and "first_epoch_seconds" in runs and bool(runs["first_epoch_seconds"].notna().all()) \
        and bool((runs["epochs_completed"].astype(float) > 1).all())


def steady_note(ga: pd.DataFrame, gb: pd.DataFrame) -> str:
    done = pd.concat([ga, gb])
    if steady_state(done[done["status"] == "completed"]):
        return "steady state: seconds per epoch exclude the first epoch"
    return "seconds per epoch include the first epoch (these runs record no steady-state time)"
