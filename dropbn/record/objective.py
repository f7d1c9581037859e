"""What the training task returns to Hydra: the number an optimizing sweeper tunes.

`train.objective` names a validation metric of the finished run. It is never a
test metric: a sweeper that tuned on the test set would report a biased result.
So without a validation split (data.val_size=0) the task returns None, and says
why. A diverged run returns the worst value the metric can take (0.0 for an
accuracy, +inf for a loss), so a sweeper steers away from it instead of failing:
Optuna records an infinite value as a completed trial (only NaN fails one) and
Nevergrad takes it with a BadLossWarning. No sweeper can use a None: the Optuna
sweeper marks the trial failed (and stops unless max_failure_rate allows it), the
Nevergrad sweeper stops with a TypeError.
"""
from __future__ import annotations

import logging

log = logging.getLogger("dropbn")

# train.objective -> (summary.json key, worst value: accuracies are maximized, losses minimized)
OBJECTIVES = {
    "val_acc": ("final_val_acc", 0.0),
    "best_val_acc": ("best_val_acc", 0.0),
    "val_loss": ("final_val_loss", float("inf")),
}


def objective(summary: dict, name: str) -> float | None:
    """The value of objective `name` for a finished run's summary (see the module doc)."""
    key, worst = OBJECTIVES[name]
    val_size = (summary.get("config") or {}).get("data", {}).get("val_size", 0)
    if not val_size:
        log.info(f"train.objective={name}: no validation split (data.val_size=0), so the task returns "
                 f"None; set data.val_size to tune on a validation metric (never on the test set)")
        return None
    if summary.get("status") == "diverged":
        return worst
    value = summary.get(key)
    if value is None:
        log.warning(f"train.objective={name}: summary.json has no {key} (written by an older dropbn?); "
                    f"the task returns None (train.force=true re-runs the run)")
        return None
    return float(value)
