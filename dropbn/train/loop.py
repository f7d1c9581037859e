"""The training loop: config -> data + model -> epochs -> run files.

Read `run()` first: it skips a finished run of the same config whose files agree
(`check_folder`; another config in the folder is one line, exit 2), claims the run folder
(dropbn/record/lease.py: another live process training it means skip it), builds everything (`setup`),
resumes from the run folder's checkpoint if there is one (`resume`), trains
period by period (`train_period`, then `metrics_row` on every eval set),
checkpointing atomically after each, and ends with the run's status in
summary.json (`finish`). A period is an epoch (one pass over the training set),
or with train.steps=S, train.eval_every_steps optimisation steps of a stream of
passes (the last period ends at step S): see `Budget`.

    completed  the whole budget ran (with diagnostics when train.diagnostics=true)
    diverged   a non-finite loss or weight stopped it (`divergence`)
    failed     a crash that is not an input error: recorded, then raised

A SIGINT/SIGTERM (dropbn/base/signals.py) stops the run between two steps and raises
Interrupted without a summary: the run is unfinished and the same command
resumes it from the last end-of-period checkpoint.
"""
from __future__ import annotations

import logging
import signal
import time
from contextlib import closing, contextmanager
from dataclasses import dataclass

import torch
from omegaconf import OmegaConf
from torch import nn

from ..record import lease
from . import models
from .data import Batches, Data, fingerprint, load_data
from .device import place, resolve_device, set_threads, tune_backends, uses_channels_last
from .diagnostics import run_diagnostics
from ..base.errors import DropbnError, Interrupted, first_line
from ..base.datasets import check_batch_size
from .evaluation import predict, write_run_predictions
from .checkpoint import corrupt, environment, load_checkpoint, load_problem, save_checkpoint
from ..record.identity import IdentityError, recorded_config, same_config
from ..record.layout import CHECKPOINT, MODEL_TXT, finished_problem, remove_stale_tmp
from ..record.run_dir import RunDir
from ..record.states import FINISHED
from ..base.parallel import parallel_runs
from .optimize import Budget, Epoch, build_optimizer, build_scheduler, train_epoch
from ..base.signals import requested_signal
from ..record.predictions import SPLITS
from ..record.summary import summarize
from .tensorboard import TensorBoardLog

log = logging.getLogger("dropbn")


def train_period(job: Built, cfg, period: int) -> Epoch:
    """Train `period` (1-based) of the budget on the next batches of the training stream; the lr
    scheduler steps after every step of a step run, after the period (the epoch) otherwise."""
    b = job.budget
    n = b.steps_in(period)
    per_step = b.by_steps or bool(cfg.train.warmup_epochs)  # a warm-up ramps per step (dropbn/train/warmup.py)
    ep = train_epoch(job.model, job.opt, job.train_batches.take(n), fwd=job.fwd, amp=job.amp,
                     max_w=job.max_w, max_norm=cfg.reg.max_norm, sched=job.sched if per_step else None,
                     total=n, desc=b.where(b.steps_before(period) + n), progress=cfg.train.progress)
    if not per_step and not ep.stopped:
        job.sched.step()
    return ep


# ---------------------------------------------------------------- setup and resume
@dataclass
class Built:
    """The built objects one run trains with (device, data, model, optimizer, batches), made from its
    config by `setup`."""

    device: torch.device
    data: Data
    model: nn.Module
    fwd: nn.Module                 # the model, or its torch.compile wrapper
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    gen: torch.Generator           # the batch order (and augmentation); saved in checkpoints
    train_batches: Batches         # the training stream (`take`); its position is saved in checkpoints
    budget: Budget                 # the steps and periods of the run
    eval_batches: dict             # "train" (a fixed subset), "test", and "val" when split off
    max_w: list                    # the weights under the max-norm constraint
    amp: bool                      # bf16 autocast (CUDA only)
    parallel_runs: int | None = 1  # runs of this launch sharing the machine (dropbn/base/parallel.py)


def setup(cfg, launcher=None) -> Built:
    """Device, threads, data, model, optimizer and batches for `cfg`, seeded by cfg.seed.

    `launcher` (hydra.launcher of a sweep) sets the run's share of the cores when
    train.threads is null (dropbn/train/device.py).
    """
    device = resolve_device(cfg.device)
    set_threads(cfg.train.threads, launcher)
    tune_backends(device)
    torch.manual_seed(cfg.seed)
    data = load_data(cfg.data, device)
    check_batch_size(cfg.train.batch_size, len(data.train),
                     f": {data.label}'s training images after data.val_size={cfg.data.val_size}")
    cl = uses_channels_last(cfg.model.name, device)
    model = place(models.build_model(cfg.model, cfg.reg, data.shape, len(data.classes)), device, cl)
    opt = build_optimizer(cfg, model.parameters())
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    train_batches = Batches(data.train, cfg.train.batch_size, data.mean, data.std, shuffle=True,
                            generator=gen, augment=cfg.data.augment, channels_last=cl)
    budget = Budget.of(cfg.train, len(train_batches))
    sched = build_scheduler(cfg, opt, budget)
    n_eval = cfg.train.eval_train_size or len(data.train)
    eval_idx = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(cfg.data.split_seed))
    eval_sets = {"train": data.train.subset(eval_idx[:n_eval].to(device))}
    if cfg.train.eval_test:  # off in a study's tune stage: its records hold no test number
        eval_sets["test"] = data.test
    if data.val is not None:
        eval_sets["val"] = data.val
    eval_batches = {k: Batches(s, cfg.train.eval_batch_size, data.mean, data.std, channels_last=cl)
                    for k, s in eval_sets.items()}
    return Built(device=device, data=data, model=model,
               fwd=torch.compile(model) if cfg.train.compile else model,
               opt=opt, sched=sched, gen=gen, train_batches=train_batches, budget=budget,
               eval_batches=eval_batches,
               max_w=models.hidden_weights(model) if cfg.reg.max_norm else [],
               amp=cfg.train.amp and device.type == "cuda", parallel_runs=parallel_runs(launcher))


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


def checkpoint(job: Built, period: int, rows: list[dict], train_seconds: float, config: dict,
               predictions: list[dict]) -> dict:
    """The state after `period` periods: everything `resume` needs to continue bit-identically,
    mid-pass too (the stream's permutation and position, and the generator's state), and the
    predictions of every period so far (uint8 tensors: predictions.npz takes the final and the
    validation-picked period's)."""
    return {"epoch": period,  # periods done: epochs in an epoch run
            "step": job.budget.steps_after(period), "stream": job.train_batches.state(),
            "model": job.model.state_dict(), "optimizer": job.opt.state_dict(),
            "scheduler": job.sched.state_dict(), "rng": _rng_state(job.device, job.gen),
            "metrics": rows, "predictions": predictions, "train_seconds": train_seconds, "config": config}


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


def resume(rd: RunDir, job: Built, cfg) -> tuple[list[dict], list[dict], int, float]:
    """(metrics rows, their predictions, periods done, training seconds): from the run folder's
    checkpoint, else a fresh start. `check_folder` has checked that the checkpoint is readable and
    holds this config. A checkpoint written before runs kept predictions has none for its periods."""
    ckpt = None if cfg.train.force else load_checkpoint(rd)
    if ckpt is None:
        return [], [], 0, 0.0
    try:  # a checkpoint of this config that does not fit its model, optimizer or stream is corrupt
        job.model.load_state_dict(ckpt["model"])
        job.opt.load_state_dict(ckpt["optimizer"])
        job.sched.load_state_dict(ckpt["scheduler"])
        _set_rng_state(job.device, job.gen, ckpt["rng"])
        if "stream" in ckpt:  # older checkpoints end at an epoch's end: no pass under way
            job.train_batches.load_state(ckpt["stream"])
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise corrupt(rd.file(CHECKPOINT), load_problem(e)) from None
    b, done = job.budget, ckpt["epoch"]
    if done < b.periods:
        at = f"step {b.steps_after(done) + 1}/{b.total}" if b.by_steps else f"epoch {done + 1}/{b.periods}"
        log.info(f"resuming {rd.path} at {at}")
    else:  # killed between the last checkpoint and the summary
        whole = f"{b.total} steps" if b.by_steps else f"{done} epochs"
        log.info(f"{rd.path}: all {whole} are in the checkpoint; writing the summary")
    rows = ckpt["metrics"]
    return rows, ckpt.get("predictions") or [{} for _ in rows], done, ckpt["train_seconds"]


# ---------------------------------------------------------------- after each period
def divergence(job: Built, period: int, ep: Epoch) -> dict | None:
    """Where the run diverged in `period` (a non-finite loss, else non-finite weights), or None:
    the epoch and the step's index in it; in a step run, the passes done and the step's index in the run."""
    if ep.bad_step >= 0:
        step, reason = ep.bad_step, "non-finite loss"
    elif not all(torch.isfinite(p).all() for p in job.model.parameters()):
        step, reason = ep.steps, "non-finite weights"
    else:
        return None
    b = job.budget
    if b.by_steps:
        step += b.steps_before(period)
        return {"epoch": b.epoch(step), "step": step, "reason": reason}
    return {"epoch": period, "step": step, "reason": reason}


def metrics_row(job: Built, period: int, ep: Epoch, train_seconds: float) -> tuple[dict, dict]:
    """The metrics.csv row of `period`: passes and steps done, loss and accuracy on every eval set,
    the lr of the last step, timings (`epoch_seconds`: the period's training time); and the
    predicted classes on the test and validation sets ({"test": tensor, "val": tensor})."""
    t1 = time.perf_counter()
    steps = job.budget.steps_before(period) + ep.steps
    row = {"epoch": job.budget.epoch(steps), "step": steps}
    preds = {}
    for k, b in job.eval_batches.items():
        row[f"{k}_loss"], row[f"{k}_acc"], p = predict(job.model, b, keep=k in SPLITS)
        if p is not None:
            preds[k] = p
    row["lr"] = ep.lr
    row["step_loss"] = ep.loss_sum / max(1, ep.steps)
    row["epoch_seconds"] = ep.seconds
    row["eval_seconds"] = time.perf_counter() - t1
    row["train_seconds"] = train_seconds
    return row, preds


def _log_period(row: dict, budget: Budget) -> None:
    log.info(f"{budget.where(row['step'])}  train loss {row['train_loss']:.4f} "
             f"acc {row['train_acc']:.4f}"
             + (f" | test loss {row['test_loss']:.4f} acc {row['test_acc']:.4f}" if "test_acc" in row else "")
             + (f" | val acc {row['val_acc']:.4f}" if "val_acc" in row else "")
             + f" | {row['epoch_seconds']:.1f}s")


# ---------------------------------------------------------------- the run
def run(cfg, out_dir, launcher=None, start=None) -> dict | None:
    """Train one configuration in `out_dir`; returns the summary (also written to summary.json),
    or None when another live process holds the run's claim and trains it.

    A finished run of the same config is skipped without writing anything (`check_folder`).
    `start(rd, config)`, if given, is called once this call is known to train the run, with the
    recorded config (the Hydra task writes .hydra/ and attaches train.log there: dropbn/record/job_record.py)."""
    rd = RunDir(out_dir)
    config = recorded_config(OmegaConf.to_container(cfg, resolve=True), fingerprint(cfg.data))
    done = check_folder(rd, config, force=cfg.train.force)
    if done is not None:
        return _skip_finished(rd, done)
    # ---- run claim (dropbn/record/lease.py): one process at a time trains a run folder ----
    try:
        rd.path.mkdir(parents=True, exist_ok=True)  # the first thing this call writes
        claim = lease.acquire(rd.path, cfg.train.claim_timeout)
    except lease.Busy as busy:
        log.info(f"{busy}, skipping: {rd.path}")
        return None
    except OSError as e:
        raise DropbnError(f"run folder {rd.path} is not writable ({e.strerror or first_line(e)})") from None
    with claim:  # heartbeat while training; released on every exit path
        done = check_folder(rd, config, force=cfg.train.force)  # another process may have finished it
        if done is not None:
            return _skip_finished(rd, done)
        begin(rd, config, start)  # under the claim: stale temp files of this run are ours to remove
        return train_claimed(cfg, rd, config, launcher)
    # ---- end of run claim ----


def _skip_finished(rd: RunDir, summary: dict) -> dict:
    log.info(f"already {summary['status']}, skipping (train.force=true re-runs it): {rd.path}")
    return summary


def train_claimed(cfg, rd: RunDir, config: dict, launcher=None) -> dict:
    """Train the run in `rd` from scratch or from its checkpoint; the caller holds its claim."""
    tb = TensorBoardLog(cfg.train.tensorboard)  # no-op when off; a missing package fails before data loads
    with failure_recorded(rd, cfg, config), closing(tb):
        job = setup(cfg, launcher)
        desc = models.describe(job.model, job.data.shape)
        rd.write_text(MODEL_TXT, desc + "\n")
        rows, preds, periods_done, train_seconds = resume(rd, job, cfg)
        tb.open(rd.path, rows)
        log.info(f"{desc}\ndata: {job.data.label} {job.data.sizes()}  device: {job.device}  "
                 f"threads: {torch.get_num_threads()}\nrun folder: {rd.path}")
        status, diverged_at = "completed", None
        for period in range(periods_done + 1, job.budget.periods + 1):
            ep = train_period(job, cfg, period)
            if ep.stopped:
                raise_interrupted(rd, job.budget.where(rows[-1]["step"]) if rows else None)
            train_seconds += ep.seconds
            diverged_at = divergence(job, period, ep)
            if diverged_at:
                status = "diverged"
                log.warning(f"diverged at epoch {diverged_at['epoch']}, step {diverged_at['step']} "
                            f"({diverged_at['reason']})")
                break
            row, p = metrics_row(job, period, ep, train_seconds)
            rows.append(row)
            preds.append(p)
            tb.epoch(rows[-1])
            _log_period(rows[-1], job.budget)
            save_checkpoint(rd, checkpoint(job, period, rows, train_seconds, config, preds))
            rd.write_metrics(rows)
        summary = finish(rd, job, cfg, rows, status, diverged_at, config, preds)
        tb.finish(config, summary)
        return summary


def finish(rd: RunDir, job: Built, cfg, rows: list[dict], status: str, diverged_at, config: dict,
           preds: list[dict]) -> dict:
    """Write summary.json (with diagnostics after a completed run, when asked), metrics.csv and
    predictions.npz (before the summary, which is what makes the run finished)."""
    summary = summarize(rows, cfg, status=status, diverged_at=diverged_at,
                        params=models.count_params(job.model), data=job.data, config=config,
                        env=environment(job.device, job.parallel_runs), epochs=job.budget.passes, steps=job.budget.total)
    if status == "completed" and cfg.train.diagnostics:
        if cfg.train.eval_test:
            summary["diagnostics"] = run_diagnostics(job.model, job.data, cfg, job.device)
        else:
            log.info("no diagnostics: they measure the test set, and train.eval_test=false")
    rd.write_metrics(rows)
    write_run_predictions(rd, job.data, rows, preds, summary, config)
    rd.write_summary(summary)
    if status == "completed":
        log.info(_done_line(summary) + f"\nrun folder: {rd.path}")
    return summary


def _done_line(summary: dict) -> str:
    if summary["final_test_acc"] is None:  # train.eval_test=false
        return f"done: val acc {summary.get('final_val_acc') or float('nan'):.4f} (no test evaluation)"
    best = (f" (epoch {summary['best_epoch']} chosen on val: {summary['test_acc_at_best_epoch']:.4f})"
            if summary["best_epoch"] is not None else "")
    return (f"done: test acc {summary['final_test_acc']:.4f}{best}, "
            f"gap {summary['generalization_gap']:+.4f}, {summary['seconds_per_epoch']:.1f} s/epoch "
            f"(epoch 1: {summary['first_epoch_seconds']:.1f} s)")


@contextmanager
def failure_recorded(rd: RunDir, cfg, config: dict):
    """A crash inside the run (not an input error) leaves status "failed" with the error (one line),
    then propagates. A file-system error (disk full, a folder turned read-only) is one line (exit 2),
    not a traceback; the failed summary is then written if it still fits."""
    try:
        yield
    except DropbnError:
        raise
    except OSError as e:
        why = f"{type(e).__name__}: {e.strerror or first_line(e)}" + (f": {e.filename}" if e.filename else "")
        try:
            rd.write_summary({"status": "failed", "error": why, "seed": cfg.seed, "config": config})
            kept = "summary.json says failed"
        except OSError:
            kept = "summary.json could not be written either"
        raise DropbnError(f"{rd.path}: the run stopped: {why} ({kept}; once there is room, the same command "
                          f"resumes it from its last checkpoint, if any)") from None
    except Exception as e:
        rd.write_summary({"status": "failed", "error": f"{type(e).__name__}: {e}", "seed": cfg.seed,
                          "config": config})
        raise


def raise_interrupted(rd: RunDir, last: str | None):
    """`last`: where the last checkpoint stands ("epoch 2/3"), None if there is none."""
    signum = requested_signal() or signal.SIGINT
    kept = f"the checkpoint at {last} is kept" if last else "no period had finished"
    raise Interrupted(f"interrupted by {signal.Signals(signum).name}; {kept}; run the same command "
                      f"again to resume: {rd.path}", signum)
