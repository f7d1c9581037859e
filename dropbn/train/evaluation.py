"""Measuring a model in eval mode: loss, accuracy and predictions over batches, milliseconds per forward.

`predict` is the one accuracy evaluation: the training loop's metrics rows (with the
predicted classes that go into predictions.npz, `write_run_predictions`), and through `evaluate` the diagnostics
(test accuracy before and after BN recalibration) and the benchmark. `time_models` times forward passes for the diagnostics' inference cost.
"""
from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from ..record.layout import PREDICTIONS
from ..record.predictions import write_predictions
from ..record.run_dir import RunDir
from .data import Data
from .device import sync


def evaluate(model, batches) -> tuple[float, float]:
    """Mean loss and accuracy in eval mode (dropout off, BN running statistics).

    `batches` yields (x, y); the model's train/eval mode is restored afterwards.
    """
    loss, acc, _ = predict(model, batches, keep=False)
    return loss, acc


@torch.inference_mode()
def predict(model, batches, keep: bool = True) -> tuple[float, float, torch.Tensor | None]:
    """`evaluate`, and the predicted class of every example in batch order (a CPU uint8 tensor, or
    int16 beyond 256 classes; None when `keep` is false)."""
    was = model.training
    model.eval()
    loss = acc = None
    n = 0
    preds = []
    for x, y in batches:
        out = model(x).float()
        l_ = F.cross_entropy(out, y, reduction="sum")
        p = out.argmax(1)
        a_ = (p == y).sum()
        loss = l_ if loss is None else loss + l_
        acc = a_ if acc is None else acc + a_
        n += len(y)
        if keep:
            preds.append(p.to(torch.uint8 if out.shape[1] <= 256 else torch.int16))
    model.train(was)
    return loss.item() / n, acc.item() / n, torch.cat(preds).cpu() if keep else None


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


def write_run_predictions(rd: RunDir, data: Data, rows: list[dict], preds: list[dict], summary: dict,
                          config: dict) -> None:
    """predictions.npz: the final row's predictions and the validation-picked row's (record/predictions.py).
    Nothing when the run has no row, or its checkpoint predates predictions."""
    if not rows or len(preds) != len(rows) or not preds[-1]:
        return
    picked = next((p for r, p in zip(rows, preds) if r["epoch"] == summary["best_epoch"]), None)
    labels = {k: None if s is None else s.y.cpu().numpy() for k, s in (("test", data.test), ("val", data.val))}
    labels = {k: y for k, y in labels.items() if k in preds[-1]}
    write_predictions(rd.file(PREDICTIONS), labels, _numpy(preds[-1]), _numpy(picked) if picked else None,
                      rows[-1]["epoch"], summary["best_epoch"] if picked else None,
                      (config.get("data") or {}).get("fingerprint", ""),  # data.fingerprint (record/identity.py)
                      len(data.classes))


def _numpy(preds: dict) -> dict:
    return {k: v.numpy() for k, v in preds.items()}
