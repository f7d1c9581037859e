"""The training loop: config -> data + model -> epochs -> run files.

Readable in one sitting: `run()` sets up, resumes from the run folder's
checkpoint if there is one, trains epoch by epoch (checkpointing atomically
after each) and writes metrics.csv / summary.json as it goes.
"""
from __future__ import annotations

import logging
import time

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from tqdm import tqdm

from . import models
from .data import Batches, load_data
from .runs import MODEL_TXT, RunDir, environment, same_config, summarize
from .signals import requested_signal, stopping
from .tracking import TensorBoardLog

log = logging.getLogger("dropbn")


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(spec)


def build_optimizer(cfg, params) -> torch.optim.Optimizer:
    o = cfg.optim
    fast = {"foreach": True}
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, **fast)
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, betas=(o.momentum, 0.999), weight_decay=o.weight_decay, **fast)
    return torch.optim.RMSprop(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, **fast)


def build_scheduler(cfg, opt):
    t = cfg.train
    if t.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t.epochs)
    if t.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=t.step_every, gamma=t.step_gamma)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0)


def train_step(fwd, opt, x, y, *, amp=False, max_w=(), max_norm=None) -> torch.Tensor:
    """One optimisation step on a batch; returns the detached loss, without a host sync.

    `fwd` is the model (or its torch.compile wrapper), already in train mode.
    bf16 autocast only when `amp` (the caller enables it on CUDA only).
    scripts/bench.py times exactly this function.
    """
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        loss = F.cross_entropy(fwd(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if max_w:
        models.apply_max_norm(max_w, max_norm)
    return loss.detach()


@torch.inference_mode()
def evaluate(model, batches) -> tuple[float, float]:
    """Mean loss and accuracy in eval mode (dropout off, BN running statistics)."""
    was = model.training
    model.eval()
    loss = acc = None
    n = 0
    for x, y in batches:
        out = model(x).float()
        l_ = F.cross_entropy(out, y, reduction="sum")
        a_ = (out.argmax(1) == y).sum()
        loss = l_ if loss is None else loss + l_
        acc = a_ if acc is None else acc + a_
        n += len(y)
    model.train(was)
    return loss.item() / n, acc.item() / n


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


def run(cfg, out_dir) -> dict:
    """Train one configuration in `out_dir`; returns the summary (also written to summary.json)."""
    rd = RunDir(out_dir)
    config = OmegaConf.to_container(cfg, resolve=True)
    if rd.is_completed() and not cfg.train.force:
        log.info(f"already completed, skipping (train.force=true re-runs it): {rd.path}")
        return rd.read_summary()
    if cfg.train.force:
        rd.clear_summary()  # a forced re-run that gets interrupted must not look completed
    tb = TensorBoardLog(cfg.train.tensorboard)  # train.tensorboard (dropbn/tracking.py); no-op when off

    device = resolve_device(cfg.device)
    if cfg.train.threads:
        torch.set_num_threads(int(cfg.train.threads))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest conv algorithms once
    torch.manual_seed(cfg.seed)
    data = load_data(cfg.data, device)
    model = models.build_model(cfg.model, cfg.reg, data.shape, len(data.classes)).to(device)
    channels_last = cfg.model.name == "cnn" and device.type != "mps"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    desc = models.describe(model, data.shape)
    rd.write_text(MODEL_TXT, desc + "\n")
    opt = build_optimizer(cfg, model.parameters())
    sched = build_scheduler(cfg, opt)
    max_w = models.hidden_weights(model) if cfg.reg.max_norm else []
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    fwd = torch.compile(model) if cfg.train.compile else model

    bs, ebs = cfg.train.batch_size, cfg.train.eval_batch_size
    train_batches = Batches(data.train, bs, data.mean, data.std, shuffle=True, generator=gen,
                            augment=cfg.data.augment, channels_last=channels_last)
    n_eval = cfg.train.eval_train_size or len(data.train)
    eval_idx = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(cfg.data.split_seed))
    eval_sets = {"train": data.train.subset(eval_idx[:n_eval].to(device)), "test": data.test}
    if data.val is not None:
        eval_sets["val"] = data.val
    eval_batches = {k: Batches(s, ebs, data.mean, data.std, channels_last=channels_last)
                    for k, s in eval_sets.items()}

    rows, start_epoch, train_seconds = [], 0, 0.0
    ckpt = None if cfg.train.force else rd.load_checkpoint()
    if ckpt is not None:
        if not same_config(ckpt["config"], config):
            raise_config_changed(rd)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        _set_rng_state(device, gen, ckpt["rng"])
        rows, start_epoch, train_seconds = ckpt["metrics"], ckpt["epoch"], ckpt["train_seconds"]
        log.info(f"resuming {rd.path} at epoch {start_epoch + 1}/{cfg.train.epochs}")
    tb.open(rd.path, rows)

    log.info(f"{desc}\ndata: {data.label} {data.sizes()}  device: {device}  "
             f"threads: {torch.get_num_threads()}\nrun folder: {rd.path}")
    amp = cfg.train.amp and device.type == "cuda"
    status, diverged_at = "running", None
    for epoch in range(start_epoch, cfg.train.epochs):
        model.train()
        _sync(device)
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        first_bad = torch.full((), -1, device=device, dtype=torch.long)
        bar = tqdm(train_batches, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", leave=False,
                   disable=not cfg.train.progress, mininterval=0.5, dynamic_ncols=True)
        for step, (x, y) in enumerate(bar):
            if stopping():  # SIGINT/SIGTERM (dropbn/signals.py): stop between two steps
                break
            loss = train_step(fwd, opt, x, y, amp=amp, max_w=max_w, max_norm=cfg.reg.max_norm)
            loss_sum += loss
            first_bad = torch.where((~torch.isfinite(loss)) & (first_bad < 0), step, first_bad)
            if step % 50 == 49 or device.type == "cpu":
                if first_bad.item() >= 0:
                    break
                if step % 50 == 49:
                    bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        bar.close()
        if stopping():
            status = "interrupted"
            break
        _sync(device)
        epoch_seconds = time.perf_counter() - t0
        train_seconds += epoch_seconds
        bad_step = int(first_bad.item())
        finite_w = all(torch.isfinite(p).all() for p in model.parameters())
        if bad_step >= 0 or not finite_w:
            status = "diverged"
            diverged_at = {"epoch": epoch + 1, "step": bad_step if bad_step >= 0 else len(train_batches),
                           "reason": "non-finite loss" if bad_step >= 0 else "non-finite weights"}
            log.warning(f"diverged at epoch {epoch + 1}, step {diverged_at['step']} ({diverged_at['reason']})")
            break
        t1 = time.perf_counter()
        row = {"epoch": epoch + 1}
        for k, b in eval_batches.items():
            row[f"{k}_loss"], row[f"{k}_acc"] = evaluate(model, b)
        row["lr"] = opt.param_groups[0]["lr"]
        row["step_loss"] = loss_sum.item() / max(1, len(train_batches))
        row["epoch_seconds"] = epoch_seconds
        row["eval_seconds"] = time.perf_counter() - t1
        row["train_seconds"] = train_seconds
        rows.append(row)
        tb.epoch(row)  # before the checkpoint: an epoch re-run after a crash is purged, never missing
        sched.step()
        log.info(f"epoch {epoch + 1:>3}/{cfg.train.epochs}  train loss {row['train_loss']:.4f} "
                 f"acc {row['train_acc']:.4f} | test loss {row['test_loss']:.4f} acc {row['test_acc']:.4f}"
                 + (f" | val acc {row['val_acc']:.4f}" if "val_acc" in row else "")
                 + f" | {epoch_seconds:.1f}s")
        rd.save_checkpoint({"epoch": epoch + 1, "model": model.state_dict(), "optimizer": opt.state_dict(),
                            "scheduler": sched.state_dict(), "rng": _rng_state(device, gen),
                            "metrics": rows, "train_seconds": train_seconds, "config": config})
        rd.write_metrics(rows)
    else:
        status = "completed"

    if status == "interrupted":
        tb.close()
        raise_interrupted(rd, len(rows))
    summary = summarize(rows, cfg, status=status, diverged_at=diverged_at, params=models.count_params(model),
                        data=data, config=config, env=environment(device))
    if status == "completed" and cfg.train.diagnostics:
        from .diagnostics import run_diagnostics
        summary["diagnostics"] = run_diagnostics(model, data, cfg, device)
    rd.write_metrics(rows)
    rd.write_summary(summary)
    tb.finish(config, summary)
    tb.close()
    if status == "completed":
        log.info(f"done: test acc {summary['final_test_acc']:.4f} (best {summary['best_test_acc']:.4f}), "
                 f"gap {summary['generalization_gap']:+.4f}, {summary['seconds_per_epoch']:.1f} s/epoch\n"
                 f"run folder: {rd.path}")
    return summary


def raise_config_changed(rd: RunDir):
    from .errors import DropbnError

    raise DropbnError(f"{rd.path} holds an unfinished run with a different config; "
                      f"use another folder or train.force=true to start it over")


def raise_interrupted(rd: RunDir, epochs_done: int):
    import signal

    from .errors import Interrupted

    signum = requested_signal() or signal.SIGINT
    kept = f"the checkpoint of epoch {epochs_done} is kept" if epochs_done else "no epoch had finished"
    raise Interrupted(f"interrupted by {signal.Signals(signum).name}; {kept}; run the same command "
                      f"again to resume: {rd.path}", signum)
