"""Measuring a model in eval mode: loss and accuracy over batches, milliseconds per forward.

`evaluate` is the one accuracy evaluation: the training loop's metrics rows, the
diagnostics (test accuracy before and after BN recalibration) and the benchmark
all call it. `time_models` times forward passes for the diagnostics' inference cost.
"""
from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from .device import sync


@torch.inference_mode()
def evaluate(model, batches) -> tuple[float, float]:
    """Mean loss and accuracy in eval mode (dropout off, BN running statistics).

    `batches` yields (x, y); the model's train/eval mode is restored afterwards.
    """
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


@torch.inference_mode()
def time_models(models: dict, x: torch.Tensor, device, budget_s: float = 1.0,
                min_reps: int = 5, max_reps: int = 200, warmup: int = 2) -> dict:
    """Median ms per forward of each model on `x` (eval mode, inference_mode).

    Warm-up, then rounds that time every model once, alternating the order
    each round (A B, B A, ...) so drift and contention hit both alike. The
    number of rounds is chosen from a first timing to fit `budget_s`,
    clamped to [min_reps, max_reps].
    """
    for mod in models.values():
        mod.eval()
        for _ in range(warmup):
            mod(x)
    sync(device)
    t0 = time.perf_counter()
    for mod in models.values():
        mod(x)
    sync(device)
    per_round = max(time.perf_counter() - t0, 1e-6)
    reps = int(min(max_reps, max(min_reps, budget_s / per_round)))
    items = list(models.items())
    samples = {k: [] for k in models}
    for r in range(reps):
        for k, mod in (items if r % 2 == 0 else items[::-1]):
            sync(device)
            t = time.perf_counter()
            mod(x)
            sync(device)
            samples[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) * 1000.0 for k, v in samples.items()}
