"""Post-training diagnostics of a trained model.

`run_diagnostics(model, data, cfg, device)` is called by the training loop at
the end of a completed run (train.diagnostics=true) and, through `diagnose_run`, by
`dropbn diagnose RUN_DIR ...` on finished runs (dropbn/commands/diagnose_cmd.py). It never mutates the model it is given: every
measurement runs on a deep copy. It returns summary.json's "diagnostics", whose
keys are defined once, for this writer and the report, in dropbn/record/summary.py
(Diagnostics, VarianceShift, Inference).

The maths (variance shift ratios, recalibration, BN folding) is in dropbn/train/bn.py.
Here: which data each measurement sees. Variance shift, in eval mode (dropout
off): on the test set (`layers`), and on training data as Li et al. measure it
(`train_layers`: the first min(TRAIN_SHIFT_IMAGES, N) training images in a fixed
seeded order, un-augmented). Recalibration (BN statistics re-estimated with
dropout off, Hendrycks & Gimpel 2016): one pass over the (un-augmented,
seeded-shuffled) training set in training-size batches, then test accuracy.
Folding error: the largest output difference over the test set. Inference cost:
median ms per forward at batch 256 (real test images) and batch 1, as trained
and folded.
"""
from __future__ import annotations

import copy
import json

import torch
from omegaconf import OmegaConf
from torch import nn

from . import models
from .bn import (BNInputStats, bn_layers, count_bn, fold_bn, max_abs_diff, recalibrate_bn, variance_shift,
                 worst_layer)
from .data import Batches, Split, load_data
from .device import place, resolve_device, uses_channels_last
from ..base.errors import DropbnError
from .evaluation import evaluate, time_models
from .checkpoint import load_checkpoint
from ..record.run_dir import RunDir
from ..record.summary import MODES, Diagnostics, Inference, VarianceShift

TRAIN_SHIFT_IMAGES = 10_000  # training images the training-data variance shift is measured on
SHIFT_SEED = 0               # their order, and the recalibration pass's


# ---------------------------------------------------------------- one trained model
def run_diagnostics(model: nn.Module, data, cfg, device, *, time_budget_s: float = 1.5) -> dict:
    """Variance shift, BN folding and inference cost of a trained model (see module docstring).

    `model` is left untouched (measurements use deep copies). `time_budget_s`
    is roughly the time spent in the timed loops (batch 256 gets 80 %).
    """
    device = torch.device(device)
    channels_last = uses_channels_last(cfg.model.name, device)  # the layout the model was trained in
    test = Batches(data.test, int(cfg.train.eval_batch_size), data.mean, data.std,
                   channels_last=channels_last)
    as_trained = copy.deepcopy(model).eval()
    folded = fold_bn(model)
    vs = _variance_shift(as_trained, data, test, int(cfg.train.batch_size), int(cfg.train.eval_batch_size),
                         channels_last)
    inference = Inference(bn_layers_folded=count_bn(as_trained) - count_bn(folded),
                          fold_max_abs_diff=max_abs_diff(as_trained, folded, test),
                          **_inference_ms(as_trained, folded, data, device, channels_last, time_budget_s))
    return Diagnostics(vs, inference).to_json()


def train_shift_split(train: Split) -> Split:
    """The training images the training-data variance shift is measured on (see the module docstring)."""
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(SHIFT_SEED))
    return train.subset(order[:TRAIN_SHIFT_IMAGES].to(train.x.device))


def _variance_shift(as_trained: nn.Module, data, test: Batches, batch_size: int, eval_batch_size: int,
                    channels_last: bool) -> VarianceShift | None:
    """Per-layer variance ratios on test and training data, test accuracy before/after recalibration."""
    if not bn_layers(as_trained):
        return None
    with BNInputStats(as_trained) as st:
        _, test_acc = evaluate(as_trained, test)
    layers = st.ratios()
    shift_split = train_shift_split(data.train)
    train_layers = variance_shift(as_trained, Batches(shift_split, eval_batch_size, data.mean, data.std,
                                                      channels_last=channels_last))
    gen = torch.Generator(device=data.train.x.device).manual_seed(SHIFT_SEED)
    train = Batches(data.train, batch_size, data.mean, data.std, shuffle=True, generator=gen,
                    channels_last=channels_last)
    _, recalibrated_acc = evaluate(recalibrate_bn(as_trained, train), test)
    worst = worst_layer(layers)  # by mean ratio, as before the median was added
    worst_med = worst_layer(layers, "median_ratio")
    train_worst = worst_layer(train_layers, "median_ratio")
    return VarianceShift(layers=layers,
                         worst_layer=worst["name"] if worst else None,
                         worst_mean_ratio=worst["mean_ratio"] if worst else None,
                         worst_max_ratio=worst["max_ratio"] if worst else None,
                         test_acc=test_acc,
                         test_acc_recalibrated=recalibrated_acc,
                         worst_median_layer=worst_med["name"] if worst_med else None,
                         worst_median_ratio=worst_med["median_ratio"] if worst_med else None,
                         train_layers=train_layers,
                         train_images=len(shift_split),
                         train_worst_layer=train_worst["name"] if train_worst else None,
                         train_worst_mean_ratio=train_worst["mean_ratio"] if train_worst else None,
                         train_worst_median_ratio=train_worst["median_ratio"] if train_worst else None,
                         train_worst_max_ratio=train_worst["max_ratio"] if train_worst else None)


def _inference_ms(as_trained: nn.Module, folded: nn.Module, data, device, channels_last: bool,
                  budget_s: float) -> dict:
    """Median ms per forward at batch 256 (real test images) and batch 1; images/s at 256."""
    idx = torch.arange(256, device=data.test.x.device) % len(data.test)
    x256, _ = next(iter(Batches(Split(data.test.x[idx], data.test.y[idx]), 256, data.mean, data.std,
                                channels_last=channels_last)))
    x1 = x256[:1].clone()
    pair = dict(zip(MODES, (as_trained, folded)))
    b256 = time_models(pair, x256, device, budget_s=0.8 * budget_s, min_reps=5, max_reps=100)
    b1 = time_models(pair, x1, device, budget_s=0.2 * budget_s, min_reps=10, max_reps=300)
    return {"batch1_ms": b1, "batch256_ms": b256,
            "throughput": {k: 256.0 / (v / 1000.0) for k, v in b256.items()}}


# ---------------------------------------------------------------- a finished run
def _load_data(cfg, device, data_cache: dict | None):
    """The run's data on `device`; `data_cache` keeps the last data set for the next run."""
    key = (json.dumps(OmegaConf.to_container(cfg.data), sort_keys=True), str(device))
    if data_cache is not None and key in data_cache:
        return data_cache[key]
    data = load_data(cfg.data, device)
    if data_cache is not None:
        data_cache.clear()  # keep one data set resident at a time
        data_cache[key] = data
    return data


def diagnose_run(run_dir, device="auto", data_cache: dict | None = None, complete=None) -> dict:
    """Rebuild a finished run's model and data, compute diagnostics, write them into summary.json.
    `complete(cfg) -> cfg` gives a recorded config the keys added since it was written."""
    rd = RunDir(run_dir)
    summary = rd.read_summary()
    ckpt = load_checkpoint(rd)
    config = (summary or {}).get("config") or (ckpt or {}).get("config")
    if ckpt is None or config is None:
        raise DropbnError(f"{rd.path}: no checkpoint.pt or config")
    cfg = OmegaConf.create(config)
    if complete is not None:
        cfg = complete(cfg)
    dev = resolve_device(device)
    data = _load_data(cfg, dev, data_cache)
    model = place(models.build_model(cfg.model, cfg.reg, data.shape, len(data.classes)), dev,
                  uses_channels_last(cfg.model.name, dev))
    model.load_state_dict(ckpt["model"])
    del ckpt
    diag = run_diagnostics(model, data, cfg, dev)
    fresh = rd.read_summary() or summary  # re-read: keep anything written meanwhile
    fresh["diagnostics"] = diag
    rd.write_summary(fresh)
    return diag
