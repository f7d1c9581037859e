"""Optimisation: the optimizer and lr-schedule registries, the step budget, one step, one epoch.

`train_epoch` runs `train_step` over a sequence of batches (an epoch, or a period of a step
run, see `Budget`) and reports what it did (`Epoch`); the run lifecycle around it (setup,
resume, checkpoints, statuses) is dropbn/train/loop.py. scripts/bench.py times `train_epoch` itself.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import models, warmup
from .device import sync
from ..base.signals import stopping


# optim.name: (optim config, parameters) -> optimizer; optim.momentum is Adam's (and AdamW's) beta1;
# adamw: weight decay decoupled from the gradient (Loshchilov & Hutter 2019)
OPTIMIZERS = {
    "sgd": lambda o, params: torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                                             weight_decay=o.weight_decay, foreach=True),
    "adam": lambda o, params: torch.optim.Adam(params, lr=o.lr, betas=(o.momentum, 0.999),
                                               weight_decay=o.weight_decay, foreach=True),
    "rmsprop": lambda o, params: torch.optim.RMSprop(params, lr=o.lr, momentum=o.momentum,
                                                     weight_decay=o.weight_decay, foreach=True),
    "adamw": lambda o, params: torch.optim.AdamW(params, lr=o.lr, betas=(o.momentum, 0.999),
                                                 weight_decay=o.weight_decay, foreach=True),
}
# train.schedule: (train config, Budget, optimizer) -> lr scheduler, stepped once per epoch in an
# epoch run and once per optimisation step with train.steps (Budget.ticks in all); cosine anneals
# over the whole run, step drops the lr every train.step_every periods
SCHEDULES = {
    "none": lambda t, b, opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0),
    "cosine": lambda t, b, opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=b.ticks),
    "step": lambda t, b, opt: torch.optim.lr_scheduler.StepLR(opt, step_size=t.step_every * b.ticks_per_period,
                                                              gamma=t.step_gamma),
}


@dataclass(frozen=True)
class Budget:
    """A run's optimisation steps, in periods that each end with evaluation, a metrics row and a checkpoint.

    Epoch run (train.steps=null): train.epochs periods of one pass over the training set each.
    Step run: train.steps steps in periods of train.eval_every_steps steps (null: one pass); the
    last period ends at train.steps. Batches come from one stream of passes (`Batches.take`), so a
    period may end inside a pass.
    """

    per_pass: int   # steps in one pass over the training set
    total: int      # optimisation steps of the run
    every: int      # steps per period (the last one may be shorter)
    by_steps: bool  # train.steps is set: the lr scheduler steps per optimisation step, not per epoch

    @classmethod
    def of(cls, t, per_pass: int) -> "Budget":
        """The budget of train config `t` with `per_pass` steps per pass over the training set."""
        if t.steps is None:
            return cls(per_pass, t.epochs * per_pass, per_pass, False)
        return cls(per_pass, t.steps, t.eval_every_steps or per_pass, True)

    @property
    def periods(self) -> int:
        return -(-self.total // self.every)

    def steps_after(self, period: int) -> int:
        """Steps done when `period` (1-based; 0: none) ends."""
        return min(period * self.every, self.total)

    def steps_before(self, period: int) -> int:
        return self.steps_after(period - 1)

    def steps_in(self, period: int) -> int:
        return self.steps_after(period) - self.steps_before(period)

    def epoch(self, steps: int) -> int | float:
        """Passes over the training set after `steps` steps (metrics.csv's `epoch`): an integer at the
        end of a pass, else rounded to 4 decimals."""
        q, r = divmod(steps, self.per_pass)
        return q if r == 0 else round(steps / self.per_pass, 4)

    @property
    def passes(self) -> int | float:
        """The budget in passes over the training set (train.epochs in an epoch run)."""
        return self.epoch(self.total)

    def where(self, steps: int) -> str:
        """`steps` done, as logs say it: "epoch 3/12", or "step 500/6000 (epoch 1.1628)"."""
        if self.by_steps:
            return f"step {steps}/{self.total} (epoch {self.epoch(steps)})"
        return f"epoch {self.epoch(steps)}/{self.periods}"

    @property
    def ticks(self) -> int:
        """lr scheduler steps over the run: one per epoch, or one per optimisation step."""
        return self.total if self.by_steps else self.periods

    @property
    def ticks_per_period(self) -> int:
        return self.every if self.by_steps else 1


def param_groups(o, params):
    """`params` as they are, or with optim.decay_norm_and_bias=false two groups: the weights, and the
    1-d parameters (biases, norm weights and biases) without weight decay."""
    if o.decay_norm_and_bias:
        return params
    params = list(params)
    return [{"params": [p for p in params if p.ndim > 1]},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]


def build_optimizer(cfg, params) -> torch.optim.Optimizer:
    return OPTIMIZERS[cfg.optim.name](cfg.optim, param_groups(cfg.optim, params))


def build_scheduler(cfg, opt, budget: Budget):
    if cfg.train.warmup_epochs:  # train.warmup_epochs: a linear ramp, then the schedule (dropbn/train/warmup.py)
        return warmup.scheduler(cfg.train, budget, opt)
    return SCHEDULES[cfg.train.schedule](cfg.train, budget, opt)


def train_step(fwd, opt, x, y, *, amp=False, max_w=(), max_norm=None) -> torch.Tensor:
    """One optimisation step on a batch; returns the detached loss, without a host sync.

    `fwd` is the model (or its torch.compile wrapper), already in train mode.
    bf16 autocast only when `amp` (the caller enables it on CUDA only).
    """
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        loss = F.cross_entropy(fwd(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if max_w:
        models.apply_max_norm(max_w, max_norm)
    return loss.detach()


class LossWatch:
    """The sum of the step losses and the first step whose loss is not finite, kept on the device.

    `add` queues work without a host sync; `first_bad()` syncs (-1: all finite so far).
    """

    def __init__(self, device):
        self.sum = torch.zeros((), device=device)
        self.bad = torch.full((), -1, device=device, dtype=torch.long)

    def add(self, step: int, loss: torch.Tensor) -> None:
        self.sum += loss
        self.bad = torch.where((~torch.isfinite(loss)) & (self.bad < 0), step, self.bad)

    def first_bad(self) -> int:
        return int(self.bad.item())


@dataclass
class Epoch:
    """What one run of steps over the training batches (an epoch, or a period of a step run) did."""

    seconds: float   # wall time of the steps, device-synchronised
    loss_sum: float  # sum of the step losses
    bad_step: int    # first step with a non-finite loss; -1 if none
    stopped: bool    # SIGINT/SIGTERM arrived: the pass ended early
    steps: int       # optimisation steps taken
    lr: float        # the learning rate of the last step


def train_epoch(model, opt, batches, *, fwd=None, amp=False, max_w=(), max_norm=None, sched=None,
                total=None, desc=None, progress=False) -> Epoch:
    """`train_step` over `batches`, ending early at a non-finite loss or a stop signal.

    The loss is checked every step on CPU and every 50 steps elsewhere (no host
    sync per step on accelerators). `fwd`: the model's torch.compile wrapper, if
    any; `sched`: an lr scheduler stepped after every step; `total`: the number
    of batches, for the progress bar. scripts/bench.py times this very function.
    """
    device = next(model.parameters()).device
    model.train()
    sync(device)
    t0 = time.perf_counter()
    watch = LossWatch(device)
    done, lr = 0, opt.param_groups[0]["lr"]
    bar = tqdm(batches, total=total, desc=desc, leave=False, disable=not progress, mininterval=0.5,
               dynamic_ncols=True)
    for step, (x, y) in enumerate(bar):
        if stopping():  # SIGINT/SIGTERM (dropbn/base/signals.py): stop between two steps
            break
        lr = opt.param_groups[0]["lr"]
        loss = train_step(fwd or model, opt, x, y, amp=amp, max_w=max_w, max_norm=max_norm)
        if sched is not None:
            sched.step()
        done += 1
        watch.add(step, loss)
        if step % 50 == 49 or device.type == "cpu":
            if watch.first_bad() >= 0:
                break
            if step % 50 == 49:
                bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    bar.close()
    stopped = stopping()
    sync(device)
    return Epoch(time.perf_counter() - t0, watch.sum.item(), watch.first_bad(), stopped, done, lr)
