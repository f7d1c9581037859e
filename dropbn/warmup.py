"""`train.warmup_epochs`: a linear learning-rate warm-up before the run's schedule.

The warm-up takes the first W = train.warmup_epochs passes over the training set, in the ticks of the
schedule (dropbn.optimize.Budget): one per epoch in an epoch run, one per optimisation step with
train.steps. Tick t < W (of W ticks) runs at lr x (t + 1) / W, so the last warm-up tick reaches the
full lr; then `train.schedule` runs over the remaining ticks as it would over a run of that length
(cosine anneals to 0 at the last step; step drops every train.step_every periods after the warm-up).
With train.warmup_epochs=0 (the default) the schedule is built exactly as before.
"""
from __future__ import annotations

import dataclasses

import torch


def warmup_ticks(t, budget) -> int:
    return int(t.warmup_epochs) * (budget.per_pass if budget.by_steps else 1)


def scheduler(t, budget, opt):
    """The warm-up, then SCHEDULES[train.schedule] over the rest of the budget, as one scheduler."""
    from .optimize import SCHEDULES

    w = warmup_ticks(t, budget)
    rest = dataclasses.replace(budget, total=budget.total - w * (1 if budget.by_steps else budget.every))
    ramp = torch.optim.lr_scheduler.LambdaLR(opt, lambda tick: min(1.0, (tick + 1) / w))
    main = SCHEDULES[t.schedule](t, rest, opt)
    return torch.optim.lr_scheduler.SequentialLR(opt, [ramp, main], milestones=[w])
