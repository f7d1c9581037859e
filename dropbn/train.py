"""The training loop: config -> data + model -> epochs -> run files.

Read `run()` first: it skips a finished run of the same config whose files agree
(`check_folder`; another config in the folder is one line, exit 2), builds
everything (`setup`), resumes from the run folder's checkpoint if there is one (`resume`), trains
epoch by epoch (`train_epoch`, then `metrics_row` on every eval set),
checkpointing atomically after each, and ends with the run's status in
summary.json (`finish`):

    completed  all epochs ran (with diagnostics when train.diagnostics=true)
    diverged   a non-finite loss or weight stopped it (`divergence`)
    failed     a crash that is not an input error: recorded, then raised

A SIGINT/SIGTERM (dropbn/signals.py) stops the run between two steps and raises
Interrupted without a summary: the run is unfinished and the same command
resumes it from the last end-of-epoch checkpoint.
"""
from __future__ import annotations

import logging
import signal
import time
from contextlib import closing, contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn
from tqdm import tqdm

from . import models
from .data import Batches, Data, fingerprint, load_data
from .device import place, resolve_device, set_threads, sync, tune_backends, uses_channels_last
from .diagnose import run_diagnostics
from .errors import DropbnError, Interrupted, first_line
from .measure import evaluate
from .checkpoint import environment, load_checkpoint, save_checkpoint
from .runs import (FINISHED, MODEL_TXT, IdentityError, RunDir, finished_problem, recorded_config, remove_stale_tmp,
                   same_config)
from .signals import requested_signal, stopping
from .summary import summarize
from .tracking import TensorBoardLog

log = logging.getLogger("dropbn")


# optim.name: (optim config, parameters) -> optimizer; optim.momentum is Adam's beta1
OPTIMIZERS = {
    "sgd": lambda o, params: torch.optim.SGD(params, lr=o.lr, momentum=o.momentum,
                                             weight_decay=o.weight_decay, foreach=True),
    "adam": lambda o, params: torch.optim.Adam(params, lr=o.lr, betas=(o.momentum, 0.999),
                                               weight_decay=o.weight_decay, foreach=True),
    "rmsprop": lambda o, params: torch.optim.RMSprop(params, lr=o.lr, momentum=o.momentum,
                                                     weight_decay=o.weight_decay, foreach=True),
}
# train.schedule: (train config, optimizer) -> lr scheduler, stepped once per epoch
SCHEDULES = {
    "none": lambda t, opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0),
    "cosine": lambda t, opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t.epochs),
    "step": lambda t, opt: torch.optim.lr_scheduler.StepLR(opt, step_size=t.step_every, gamma=t.step_gamma),
}


def build_optimizer(cfg, params) -> torch.optim.Optimizer:
    return OPTIMIZERS[cfg.optim.name](cfg.optim, params)


def build_scheduler(cfg, opt):
    return SCHEDULES[cfg.train.schedule](cfg.train, opt)


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
    """What one pass over the training batches did."""

    seconds: float   # wall time of the steps, device-synchronised
    loss_sum: float  # sum of the step losses
    bad_step: int    # first step with a non-finite loss; -1 if none
    stopped: bool    # SIGINT/SIGTERM arrived: the pass ended early


def train_epoch(model, opt, batches, *, fwd=None, amp=False, max_w=(), max_norm=None,
                desc=None, progress=False) -> Epoch:
    """`train_step` over `batches`, ending early at a non-finite loss or a stop signal.

    The loss is checked every step on CPU and every 50 steps elsewhere (no host
    sync per step on accelerators). `fwd`: the model's torch.compile wrapper, if
    any. scripts/bench.py times this very function.
    """
    device = next(model.parameters()).device
    model.train()
    sync(device)
    t0 = time.perf_counter()
    watch = LossWatch(device)
    bar = tqdm(batches, desc=desc, leave=False, disable=not progress, mininterval=0.5, dynamic_ncols=True)
    for step, (x, y) in enumerate(bar):
        if stopping():  # SIGINT/SIGTERM (dropbn/signals.py): stop between two steps
            break
        loss = train_step(fwd or model, opt, x, y, amp=amp, max_w=max_w, max_norm=max_norm)
        watch.add(step, loss)
        if step % 50 == 49 or device.type == "cpu":
            if watch.first_bad() >= 0:
                break
            if step % 50 == 49:
                bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    bar.close()
    stopped = stopping()
    sync(device)
    return Epoch(time.perf_counter() - t0, watch.sum.item(), watch.first_bad(), stopped)


# ---------------------------------------------------------------- setup and resume
@dataclass
class Job:
    """Everything one run trains with, built from its config by `setup`."""

    device: torch.device
    data: Data
    model: nn.Module
    fwd: nn.Module                 # the model, or its torch.compile wrapper
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    gen: torch.Generator           # the batch order (and augmentation); saved in checkpoints
    train_batches: Batches
    eval_batches: dict             # "train" (a fixed subset), "test", and "val" when split off
    max_w: list                    # the weights under the max-norm constraint
    amp: bool                      # bf16 autocast (CUDA only)


def setup(cfg, launcher=None) -> Job:
    """Device, threads, data, model, optimizer and batches for `cfg`, seeded by cfg.seed.

    `launcher` (hydra.launcher of a sweep) sets the run's share of the cores when
    train.threads is null (dropbn/device.py).
    """
    device = resolve_device(cfg.device)
    set_threads(cfg.train.threads, launcher)
    tune_backends(device)
    torch.manual_seed(cfg.seed)
    data = load_data(cfg.data, device)
    cl = uses_channels_last(cfg.model.name, device)
    model = place(models.build_model(cfg.model, cfg.reg, data.shape, len(data.classes)), device, cl)
    opt = build_optimizer(cfg, model.parameters())
    sched = build_scheduler(cfg, opt)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    train_batches = Batches(data.train, cfg.train.batch_size, data.mean, data.std, shuffle=True,
                            generator=gen, augment=cfg.data.augment, channels_last=cl)
    n_eval = cfg.train.eval_train_size or len(data.train)
    eval_idx = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(cfg.data.split_seed))
    eval_sets = {"train": data.train.subset(eval_idx[:n_eval].to(device)), "test": data.test}
    if data.val is not None:
        eval_sets["val"] = data.val
    eval_batches = {k: Batches(s, cfg.train.eval_batch_size, data.mean, data.std, channels_last=cl)
                    for k, s in eval_sets.items()}
    return Job(device=device, data=data, model=model,
               fwd=torch.compile(model) if cfg.train.compile else model,
               opt=opt, sched=sched, gen=gen, train_batches=train_batches, eval_batches=eval_batches,
               max_w=models.hidden_weights(model) if cfg.reg.max_norm else [],
               amp=cfg.train.amp and device.type == "cuda")


def _rng_state(device, gen) -> dict:
    s = {"torch": torch.get_rng_state(), "batches": gen.get_state()}
    if device.type == "cuda":
        s["cuda"] = torch.cuda.get_rng_state(device)
    return s


def _set_rng_state(device, gen, s) -> None:
    torch.set_rng_state(s["torch"])
    gen.set_state(s["batches"])
    if device.type == "cuda" and "cuda" in s:
        torch.cuda.set_rng_state(s["cuda"], device)


def checkpoint(job: Job, epoch: int, rows: list[dict], train_seconds: float, config: dict) -> dict:
    """The state after `epoch` epochs: everything `resume` needs to continue bit-identically."""
    return {"epoch": epoch, "model": job.model.state_dict(), "optimizer": job.opt.state_dict(),
            "scheduler": job.sched.state_dict(), "rng": _rng_state(job.device, job.gen),
            "metrics": rows, "train_seconds": train_seconds, "config": config}


def check_folder(rd: RunDir, config: dict, force: bool = False) -> dict | None:
    """What `rd` holds, before this call writes anything there.

    Returns the summary of a finished run (FINISHED) of this config whose files agree: it is
    skipped. Returns None when the run is to be trained: nothing finished yet (a checkpoint of
    this config is resumed), train.force=true, or a finished run whose summary, metrics.csv and
    checkpoint disagree (repaired: resumed from its checkpoint or trained again). Raises one-line
    errors: IdentityError when the folder's summary or checkpoint records another config, and
    DropbnError for a run file that is not a file or a corrupt checkpoint."""
    rd.check_file_types()
    if force:
        return None
    summary = rd.read_summary()
    saved = (summary or {}).get("config")
    if isinstance(saved, dict) and not same_config(saved, config):
        raise IdentityError(rd.path, saved, config)
    ckpt = load_checkpoint(rd, mmap=True)  # one line if corrupt
    if ckpt is not None and not same_config(ckpt["config"], config):
        raise IdentityError(rd.path, ckpt["config"], config)
    if summary is None or summary.get("status") not in FINISHED:
        return None
    problem = finished_problem(summary, rd.read_metrics(), len(ckpt["metrics"]) if ckpt is not None else None)
    if problem:
        log.warning(f"{rd.path}: {problem}; training it again")
        return None
    return summary


def begin(rd: RunDir, config: dict, start=None) -> None:
    """This call trains the run in `rd`: tidy, drop a summary that no longer holds, `start(rd, config)`."""
    try:
        remove_stale_tmp(rd.path)  # interrupted writes' temp files: this process now owns the folder
        rd.clear_summary()  # a forced, failed or inconsistent run being trained again is not finished
        if start is not None:
            start(rd, config)
    except OSError as e:
        raise DropbnError(f"run folder {rd.path} is not writable ({e.strerror or first_line(e)})") from None


def resume(rd: RunDir, job: Job, cfg) -> tuple[list[dict], int, float]:
    """(metrics rows, epochs done, training seconds): from the run folder's checkpoint, else a fresh start.
    `check_folder` has checked that the checkpoint is readable and holds this config."""
    ckpt = None if cfg.train.force else load_checkpoint(rd)
    if ckpt is None:
        return [], 0, 0.0
    job.model.load_state_dict(ckpt["model"])
    job.opt.load_state_dict(ckpt["optimizer"])
    job.sched.load_state_dict(ckpt["scheduler"])
    _set_rng_state(job.device, job.gen, ckpt["rng"])
    done = ckpt["epoch"]
    if done < cfg.train.epochs:
        log.info(f"resuming {rd.path} at epoch {done + 1}/{cfg.train.epochs}")
    else:  # killed between the last checkpoint and the summary
        log.info(f"{rd.path}: all {done} epochs are in the checkpoint; writing the summary")
    return ckpt["metrics"], done, ckpt["train_seconds"]


# ---------------------------------------------------------------- after each epoch
def divergence(job: Job, epoch: int, ep: Epoch) -> dict | None:
    """Where the run diverged in `epoch` (a non-finite loss, else non-finite weights), or None."""
    if ep.bad_step >= 0:
        return {"epoch": epoch, "step": ep.bad_step, "reason": "non-finite loss"}
    if not all(torch.isfinite(p).all() for p in job.model.parameters()):
        return {"epoch": epoch, "step": len(job.train_batches), "reason": "non-finite weights"}
    return None


def metrics_row(job: Job, epoch: int, ep: Epoch, train_seconds: float) -> dict:
    """The metrics.csv row of `epoch`: loss and accuracy on every eval set, lr, timings."""
    t1 = time.perf_counter()
    row = {"epoch": epoch}
    for k, b in job.eval_batches.items():
        row[f"{k}_loss"], row[f"{k}_acc"] = evaluate(job.model, b)
    row["lr"] = job.opt.param_groups[0]["lr"]
    row["step_loss"] = ep.loss_sum / max(1, len(job.train_batches))
    row["epoch_seconds"] = ep.seconds
    row["eval_seconds"] = time.perf_counter() - t1
    row["train_seconds"] = train_seconds
    return row


def _log_epoch(row: dict, epochs: int) -> None:
    log.info(f"epoch {row['epoch']:>3}/{epochs}  train loss {row['train_loss']:.4f} "
             f"acc {row['train_acc']:.4f} | test loss {row['test_loss']:.4f} acc {row['test_acc']:.4f}"
             + (f" | val acc {row['val_acc']:.4f}" if "val_acc" in row else "")
             + f" | {row['epoch_seconds']:.1f}s")


# ---------------------------------------------------------------- the run
def run(cfg, out_dir, launcher=None, start=None) -> dict:
    """Train one configuration in `out_dir`; returns the summary (also written to summary.json).

    A finished run of the same config is skipped without writing anything (`check_folder`).
    `start(rd, config)`, if given, is called once this call is known to train the run, with the
    recorded config (the Hydra task writes .hydra/ and attaches train.log there: dropbn/job.py)."""
    rd = RunDir(out_dir)
    config = recorded_config(OmegaConf.to_container(cfg, resolve=True), fingerprint(cfg.data))
    done = check_folder(rd, config, force=cfg.train.force)
    if done is not None:
        log.info(f"already {done['status']}, skipping (train.force=true re-runs it): {rd.path}")
        return done
    begin(rd, config, start)
    tb = TensorBoardLog(cfg.train.tensorboard)  # no-op when off; a missing package fails before data loads
    with failure_recorded(rd, cfg, config), closing(tb):
        job = setup(cfg, launcher)
        desc = models.describe(job.model, job.data.shape)
        rd.write_text(MODEL_TXT, desc + "\n")
        rows, epochs_done, train_seconds = resume(rd, job, cfg)
        tb.open(rd.path, rows)
        log.info(f"{desc}\ndata: {job.data.label} {job.data.sizes()}  device: {job.device}  "
                 f"threads: {torch.get_num_threads()}\nrun folder: {rd.path}")
        status, diverged_at = "completed", None
        for epoch in range(epochs_done + 1, cfg.train.epochs + 1):
            ep = train_epoch(job.model, job.opt, job.train_batches, fwd=job.fwd, amp=job.amp,
                             max_w=job.max_w, max_norm=cfg.reg.max_norm,
                             desc=f"epoch {epoch}/{cfg.train.epochs}", progress=cfg.train.progress)
            if ep.stopped:
                raise_interrupted(rd, len(rows))
            train_seconds += ep.seconds
            diverged_at = divergence(job, epoch, ep)
            if diverged_at:
                status = "diverged"
                log.warning(f"diverged at epoch {epoch}, step {diverged_at['step']} "
                            f"({diverged_at['reason']})")
                break
            rows.append(metrics_row(job, epoch, ep, train_seconds))
            tb.epoch(rows[-1])
            job.sched.step()
            _log_epoch(rows[-1], cfg.train.epochs)
            save_checkpoint(rd, checkpoint(job, epoch, rows, train_seconds, config))
            rd.write_metrics(rows)
        summary = finish(rd, job, cfg, rows, status, diverged_at, config)
        tb.finish(config, summary)
        return summary


def finish(rd: RunDir, job: Job, cfg, rows: list[dict], status: str, diverged_at, config: dict) -> dict:
    """Write summary.json (with diagnostics after a completed run, when asked) and metrics.csv."""
    summary = summarize(rows, cfg, status=status, diverged_at=diverged_at,
                        params=models.count_params(job.model), data=job.data, config=config,
                        env=environment(job.device))
    if status == "completed" and cfg.train.diagnostics:
        summary["diagnostics"] = run_diagnostics(job.model, job.data, cfg, job.device)
    rd.write_metrics(rows)
    rd.write_summary(summary)
    if status == "completed":
        log.info(f"done: test acc {summary['final_test_acc']:.4f} (best {summary['best_test_acc']:.4f}), "
                 f"gap {summary['generalization_gap']:+.4f}, {summary['seconds_per_epoch']:.1f} s/epoch\n"
                 f"run folder: {rd.path}")
    return summary


@contextmanager
def failure_recorded(rd: RunDir, cfg, config: dict):
    """A crash inside the run (not an input error) leaves status "failed" with the error, then propagates."""
    try:
        yield
    except DropbnError:
        raise
    except Exception as e:
        rd.write_summary({"status": "failed", "error": f"{type(e).__name__}: {e}", "seed": cfg.seed,
                          "config": config})
        raise


def raise_interrupted(rd: RunDir, epochs_done: int):
    signum = requested_signal() or signal.SIGINT
    kept = f"the checkpoint of epoch {epochs_done} is kept" if epochs_done else "no epoch had finished"
    raise Interrupted(f"interrupted by {signal.Signals(signum).name}; {kept}; run the same command "
                      f"again to resume: {rd.path}", signum)
