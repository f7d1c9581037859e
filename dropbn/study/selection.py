"""The select stage of `dropbn study`: score each tuned point on validation metrics only.

This module reads, from each tune run folder, the `status` and `data_sizes.val` of summary.json and the
`epoch`, `val_acc` and `val_loss` columns of metrics.csv -- nothing else (no test_* column,
no test number of summary.json), so the test set cannot leak into the choice.

Scoring one point (one setting of the searched keys, trained with every tune seed):
  * a seed is *lost* when its run diverged or failed (or is missing / unfinished);
  * the point's validation curve is the mean over its non-lost seeds at each epoch;
  * its best epoch maximises that mean curve (val_acc) or minimises it (val_loss),
    the earliest such epoch on ties; its score is the mean curve there, with the
    95% CI over seeds (t distribution) and n.
Ranking the points of one variant (best first):
  1. fewer lost seeds (a point with any diverged seed ranks below every point without);
  2. better score;
  3. ties: better mean of the other validation metric at the best epoch (val_loss when
     selecting on val_acc, val_acc when selecting on val_loss);
  4. still tied: the earlier point in the search order (values as listed, first key
     slowest; with optuna, the earlier trial).
"Tied" is not float equality: a mean over n seeds of accuracies on val_size images can only move
in steps of 1 / (n * val_size), so two means count as equal when they differ by less than half
such a step: by float rounding only (0.9772 against 0.9772000000000001 picked the wrong point
once). Two losses are equal when they agree to 9 significant digits (`tied`). The same test
picks the earliest best epoch of a curve. Ranking is greedy, so it stays well defined although "within a tolerance" is not transitive: the first
point is the winner of all of them under the rule, the second the winner of the rest, and so on.
Pure functions (no torch, no Hydra): the study runs them after the tune stage and the
report runs them again on the tune run records.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..record.reader import read_metrics, read_summary
from ..record.states import LOST, MISSING, UNFINISHED
from ..stats.summaries import mean_ci

SELECTED = "selected.yaml"
TUNE, FINAL = "tune", "final"  # a study's stage folders: <out_root>/<name>/tune|final/<run>/
METRIC_DIRECTION = {"val_acc": "max", "val_loss": "min"}
OTHER = {"val_acc": "val_loss", "val_loss": "val_acc"}
VAL_COLUMNS = ("epoch", "val_acc", "val_loss")  # the only metrics.csv columns read here

RULE = ("Per variant, the point with the best mean {metric} over the tune seeds wins ({direction}imised), "
        "at its best epoch: the epoch whose mean validation curve is best (the earliest on ties). "
        "A point with a diverged or failed tune run ranks below every point without one (fewer such runs "
        "first). Ties on the score go to the better mean {other} at the best epoch, then to the earlier "
        "point in the search order. Mean accuracies that differ by less than half an image over the "
        "seeds (0.5 / (seeds x validation images): float rounding) count as tied, as do losses equal to "
        "9 significant digits. Only validation metrics are read (metrics.csv: epoch, val_acc, "
        "val_loss; summary.json: status and the validation split's size); the test set is touched only by the final runs.")


def rule_text(metric: str) -> str:
    return RULE.format(metric=metric, direction=METRIC_DIRECTION[metric], other=OTHER[metric])


@dataclass
class ValRun:
    """What selection knows about one tune run: its status and validation curves."""

    seed: int
    run: str                      # folder, relative to the stage folder
    status: str                   # completed | diverged | failed | unfinished | missing
    val: dict = field(default_factory=dict)   # metric -> {epoch: value}
    schedule: str | None = None   # train.schedule of the run (how its epoch count may be used)
    epochs: int | None = None     # train.epochs of the run
    val_images: int | None = None  # size of the validation split (summary.json data_sizes.val)

    @property
    def lost(self) -> bool:
        return self.status in LOST


def read_val_run(stage_dir: Path, run: str, seed: int) -> ValRun:
    """Status, train.schedule/epochs and validation curves of one run; never a test metric."""
    folder = Path(stage_dir) / run
    status, schedule, epochs, val_images = MISSING, None, None, None
    s = read_summary(folder)
    try:
        if s is None:
            raise ValueError
        status = str(s.get("status") or UNFINISHED)
        train_cfg = (s.get("config") or {}).get("train") or {}
        schedule, epochs = train_cfg.get("schedule"), train_cfg.get("epochs")
        n_val = (s.get("data_sizes") or {}).get("val")
        val_images = n_val if isinstance(n_val, int) and not isinstance(n_val, bool) and n_val > 0 else None
    except (ValueError, AttributeError):
        if folder.is_dir():
            status = UNFINISHED
    if status == "running":
        status = UNFINISHED
    val: dict = {m: {} for m in VAL_COLUMNS[1:]}
    for row in read_metrics(folder) or []:
        ep = _num(row.get("epoch"))
        if ep is None:
            continue
        for m in VAL_COLUMNS[1:]:
            v = _num(row.get(m))
            if v is not None:
                val[m][int(ep)] = v
    if status == "completed" and not val["val_acc"]:
        status = "failed"  # completed without a validation split: nothing to select on
    return ValRun(seed, run, status, val, schedule, epochs, val_images)


def _num(v) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


@dataclass
class PointScore:
    """One candidate point of one variant, scored on validation."""

    index: int                    # position in the search order
    point: dict                   # searched key -> value (override text)
    runs: list                    # [ValRun], one per tune seed
    metric: str
    best_epoch: int | None = None
    epochs: int | None = None     # epochs of the mean curve (= train.epochs of completed runs)
    mean: float = math.nan
    ci95: float = math.nan
    n: int = 0
    other: float = math.nan       # mean of the other validation metric at best_epoch
    values: list = field(default_factory=list)  # per non-lost seed, the metric at best_epoch
    curve: dict = field(default_factory=dict)   # epoch -> mean metric over non-lost seeds
    rank: int | None = None

    @property
    def lost(self) -> int:
        return sum(r.lost for r in self.runs)

    def late_gain(self) -> tuple[float, int] | None:
        """(change of the mean curve over the last quarter of the epochs, that many epochs):
        how far the validation curve still moved at the end of the budget."""
        if not self.curve or len(self.curve) < 2:
            return None
        ep = sorted(self.curve)
        k = max(1, len(ep) // 4)
        return self.curve[ep[-1]] - self.curve[ep[-1 - k]], k

    @property
    def schedule(self) -> str | None:
        return next((r.schedule for r in self.runs if r.schedule is not None), None)

    @property
    def val_images(self) -> int | None:
        return next((r.val_images for r in self.runs if r.val_images is not None), None)


def tied(a: float, b: float, metric: str, images: int | None) -> bool:
    """Whether two mean values of `metric` count as equal (the module docstring): accuracies that
    differ by less than half an image of the `images` counted (seeds x validation images), losses
    equal to 9 significant digits; two non-finite values are tied."""
    if not (math.isfinite(a) and math.isfinite(b)):
        return not math.isfinite(a) and not math.isfinite(b)
    if metric == "val_acc":
        return abs(a - b) < (0.5 / images if images else 1e-12)
    return abs(a - b) <= 1e-9 * max(abs(a), abs(b))


def score_point(index: int, point: dict, runs: list, metric: str) -> PointScore:
    ps = PointScore(index, dict(point), list(runs), metric)
    ok = [r for r in runs if not r.lost and r.val[metric]]
    if not ok:
        return ps
    epochs = sorted(set.intersection(*(set(r.val[metric]) for r in ok)))
    if not epochs:
        return ps
    curve = {e: sum(r.val[metric][e] for r in ok) / len(ok) for e in epochs}
    sign = 1 if METRIC_DIRECTION[metric] == "max" else -1
    top = max(sign * curve[e] for e in epochs) * sign
    images = len(ok) * ps.val_images if ps.val_images else None
    best = next(e for e in epochs if tied(curve[e], top, metric, images))  # the earliest of the tied best
    ci = mean_ci([r.val[metric][best] for r in ok])
    other = [r.val[OTHER[metric]].get(best) for r in ok]
    other = [v for v in other if v is not None]
    ps.best_epoch, ps.epochs, ps.curve = best, max(epochs), curve
    ps.mean, ps.ci95, ps.n = ci.mean, ci.half, ci.n
    ps.values = [r.val[metric][best] for r in ok]
    ps.other = sum(other) / len(other) if other else math.nan
    return ps


def rank_points(points: list[PointScore]) -> list[PointScore]:
    """Best first (the rule in the module docstring); sets each point's rank (1 = selected)."""
    if not points:
        return []
    metric = points[0].metric
    n_val = next((p.val_images for p in points if p.val_images is not None), None)

    def best_of(cands: list[PointScore], value, m: str) -> list[PointScore]:
        """The candidates tied with the best value of `m` among them."""
        sign = 1 if METRIC_DIRECTION[m] == "max" else -1
        finite = [value(p) for p in cands if math.isfinite(value(p))]
        top = sign * max(sign * v for v in finite) if finite else math.nan
        images = max((p.n for p in cands), default=0) * n_val if n_val else None
        return [p for p in cands if tied(value(p), top, m, images)]

    def winner(rest: list[PointScore]) -> PointScore:
        fewest = min(p.lost for p in rest)
        cands = best_of([p for p in rest if p.lost == fewest], lambda p: p.mean, metric)
        cands = best_of(cands, lambda p: p.other, OTHER[metric])
        return min(cands, key=lambda p: p.index)

    rest, ranked = list(points), []
    while rest:  # greedy: the winner of what is left, each time
        ranked.append(winner(rest))
        rest.remove(ranked[-1])
    for i, p in enumerate(ranked, 1):
        p.rank = i
    return ranked


def score_variant(stage_dir: Path, candidates: list[dict], metric: str) -> list[PointScore]:
    """candidates: [{"point": {...}, "runs": [{"seed": s, "run": folder}, ...]}] in search order
    -> the scored points, ranked best first."""
    scored = []
    for i, c in enumerate(candidates):
        runs = [read_val_run(stage_dir, r["run"], int(r["seed"])) for r in c["runs"]]
        scored.append(score_point(i, c["point"], runs, metric))
    return rank_points(scored)


def at_search_edge(point: dict, space: dict) -> list[tuple[str, str]]:
    """[(key, "smallest" | "largest")] for each numeric key of `point` whose value is an end of the
    three or more values searched (`space`: key -> values): the best value may lie beyond the range.
    With two values every choice is an end, so such keys are not flagged."""
    out = []
    for k, x in point.items():
        values = [_num(v) for v in space.get(k) or []]
        chosen = _num(x)
        if len(values) < 3 or chosen is None or any(v is None for v in values):
            continue
        if chosen == min(values):
            out.append((k, "smallest"))
        elif chosen == max(values):
            out.append((k, "largest"))
    return out


def final_epochs(best: PointScore) -> tuple[int | None, str]:
    """How many epochs the final runs of a selected point train, and why (one sentence).

    Without an lr schedule, the validation-selected epoch count is used: the final runs
    train `best_epoch` epochs. With a schedule (cosine, step) the schedule's shape depends
    on train.epochs, so stopping a final run early is not the tuned run: the full budget
    is kept and the best epoch is reported only."""
    if best.best_epoch is None:
        return None, "no validation score: the tune budget is kept"
    if best.schedule in (None, "none"):
        return best.best_epoch, (f"no lr schedule: final runs train the validation-selected {best.best_epoch} "
                                 f"epoch(s) (tune runs had {best.epochs})")
    return None, (f"lr schedule {best.schedule}: final runs keep the full budget of {best.epochs} epochs "
                  f"(the best validation epoch was {best.best_epoch}; truncating would change the schedule)")


def fmt_score(p: PointScore, scale: float = 1.0, digits: int = 2) -> str:
    if not math.isfinite(p.mean):
        return "–"
    s = f"{p.mean * scale:.{digits}f}"
    if math.isfinite(p.ci95):
        s += f" ± {p.ci95 * scale:.{digits}f}"
    return s + f" (n={p.n})"


def point_record(p: PointScore) -> dict:
    """A candidate as written to selected.yaml."""
    return {
        "rank": p.rank, "point": p.point, "score": rounded(p.mean), "ci95": rounded(p.ci95), "n": p.n,
        "best_epoch": p.best_epoch, "epochs": p.epochs, OTHER[p.metric]: rounded(p.other),
        "lost_seeds": p.lost,
        "runs": [{"seed": r.seed, "run": r.run, "status": r.status} for r in p.runs],
    }


def rounded(v):
    return None if v is None or not math.isfinite(v) else round(float(v), 6)
