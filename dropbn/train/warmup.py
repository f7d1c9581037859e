"""`train.warmup_epochs`: a linear learning-rate warm-up before the run's schedule.

The warm-up takes the first W = train.warmup_epochs passes over the training set, step by step (as
Goyal et al. 2017 ramp it): step t < S of its S steps runs at lr x (t + 1) / S, so the last warm-up
step reaches the full lr. Then `train.schedule` runs over the remaining steps, per step: cosine
anneals to 0 at the last step, step drops the lr every train.step_every periods (epochs, or
train.eval_every_steps periods with train.steps) after the warm-up. So with a warm-up the scheduler
steps after every optimisation step also in a run of epochs (dropbn/train.py, train_period). With
train.warmup_epochs=0 (the default) the schedule is built and stepped exactly as before.
"""
from __future__ import annotations

import dataclasses

import torch


def scheduler(t, budget, opt):
    """The warm-up, then SCHEDULES[train.schedule] over the rest of the budget's steps, as one scheduler."""
    from .optimize import SCHEDULES

    w = int(t.warmup_epochs) * budget.per_pass
    per_step = dataclasses.replace(budget, by_steps=True)  # ticks: steps; a period: budget.every steps
    rest = dataclasses.replace(per_step, total=budget.total - w)
    ramp = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / w))
    main = SCHEDULES[t.schedule](t, rest, opt)
    return torch.optim.lr_scheduler.SequentialLR(opt, [ramp, main], milestones=[w])
