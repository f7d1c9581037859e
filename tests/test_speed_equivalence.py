"""The speed work changes no result: for a fixed seed on CPU, dropbn's optimised step gives
bit-identical weights to a plain reference step, and whole runs are reproducible.

Tolerance: none -- every comparison is torch.equal (exact), because the optimisations only
reorganise work (the step function, the dropout mask drawn by `rand(float64) < 1-p`, which
consumes the same generator draws as `bernoulli_(1-p)`), they do not change arithmetic.
"""
from __future__ import annotations

import copy
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from dropbn.train import models
from dropbn.config.validation import CONFIG_DIR
from dropbn.train.data import Batches, Split
from dropbn.train.optimize import build_optimizer, train_step
from dropbn.train.loop import run

from .conftest import needs_mnist


def compose(overrides):
    from hydra import compose as hcompose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return hcompose("train", overrides=overrides)


def stock(model: nn.Module) -> nn.Module:
    """Copy of `model` with every dropbn Dropout replaced by torch's own nn.Dropout."""
    ref = copy.deepcopy(model)
    for parent in ref.modules():
        for name, child in parent.named_children():
            if type(child) is models.Dropout:
                setattr(parent, name, nn.Dropout(child.p))
    assert not any(type(m) is models.Dropout for m in ref.modules())
    return ref


def reference_step(model, opt, x, y):
    model.train()
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.detach()


def fake_split(n, shape, seed):
    g = torch.Generator().manual_seed(seed)
    return Split(torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g),
                 torch.randint(0, 10, (n,), generator=g))


@pytest.mark.parametrize("model_name,overrides,shape,steps", [
    ("mlp", ["model.hidden=[256,256]", "reg.input_dropout=0.2"], (1, 28, 28), 12),
    ("mlp", ["reg=dropout_before_bn", "reg.dropout=0.3", "model.hidden=[128,128]"], (1, 28, 28), 12),
    ("cnn", ["model.channels=[8,16]", "model.fc=[32]", "reg.conv_dropout=0.2"], (3, 16, 16), 4),
])
def test_step_matches_plain_reference(model_name, overrides, shape, steps):
    cfg = compose([f"model={model_name}", "reg=both", *overrides])
    split = fake_split(512, shape, seed=1)
    mean, std = torch.full((shape[0],), 0.45), torch.full((shape[0],), 0.25)
    cl = model_name == "cnn"  # dropbn trains the CNN channels_last, as in train.run
    torch.manual_seed(0)
    model = models.build_model(cfg.model, cfg.reg, shape, 10)
    if cl:
        model = model.to(memory_format=torch.channels_last)
    assert any(type(m) is models.Dropout for m in model.modules())
    ref = stock(model)

    def train(m, step_fn):
        opt = build_optimizer(cfg, m.parameters())
        torch.manual_seed(123)  # dropout masks come from the global generator
        batches = Batches(split, 64, mean, std, shuffle=True, generator=torch.Generator().manual_seed(7),
                          channels_last=cl)
        losses = []
        for i, (x, y) in enumerate(batches):
            if i == steps:
                break
            losses.append(step_fn(m, opt, x, y))
        return torch.stack(losses), m.state_dict()

    m_losses, m_state = train(model, lambda m, o, x, y: (m.train(), train_step(m, o, x, y))[1])
    r_losses, r_state = train(ref, reference_step)
    assert torch.equal(m_losses, r_losses)
    for k in r_state:
        assert torch.equal(m_state[k], r_state[k]), k


@pytest.mark.parametrize("p", [0.5, 0.3, 0.2, 0.8])
def test_dropout_bit_identical_forward_and_backward(p):
    x = torch.randn(64, 300, requires_grad=True)
    ours, theirs = models.Dropout(p), nn.Dropout(p)
    torch.manual_seed(5)
    a = ours(x)
    a_next = torch.rand(4)
    ga, = torch.autograd.grad(a.square().sum(), x)
    torch.manual_seed(5)
    b = theirs(x)
    b_next = torch.rand(4)
    gb, = torch.autograd.grad(b.square().sum(), x)
    assert torch.equal(a, b) and torch.equal(ga, gb)
    assert torch.equal(a_next, b_next)  # the generator advanced by the same number of draws
    ours.eval()
    assert torch.equal(ours(x), x)


def test_dropout_noncontiguous_falls_back():
    x = torch.randn(8, 4, 6, 6).to(memory_format=torch.channels_last)
    torch.manual_seed(3)
    a = models.Dropout(0.5)(x)
    torch.manual_seed(3)
    b = nn.Dropout(0.5)(x)
    assert torch.equal(a, b)


def _imagefolder(root, n_train=48, n_test=16):
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for c in ("a", "b"):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n // 2):
                base = 60 if c == "a" else 180
                img = np.clip(rng.normal(base, 40, (8, 8)), 0, 255).astype(np.uint8)
                Image.fromarray(img, mode="L").save(d / f"{i}.png")
    return root


def test_runs_reproducible_and_amp_is_noop_on_cpu(tmp_path):
    folder = _imagefolder(tmp_path / "imgs")
    base = ["data=imagefolder", f"data.path={folder}", f"data.cache_dir={tmp_path / 'cache'}",
            "model.hidden=[32,32]", "reg=both", "train.epochs=2", "train.batch_size=16",
            "train.eval_batch_size=16", "train.eval_train_size=null", "train.progress=false",
            "train.diagnostics=false", "device=cpu", "seed=3"]
    timing = ("epoch_seconds", "eval_seconds", "train_seconds")

    def metrics(out, extra=()):
        s = run(compose([*base, *extra]), tmp_path / out)
        assert s["status"] == "completed"
        with open(tmp_path / out / "metrics.csv") as f:
            return [{k: v for k, v in r.items() if k not in timing} for r in csv.DictReader(f)]

    first = metrics("r1")
    assert len(first) == 2
    assert metrics("r2") == first
    assert metrics("r3", ["train.amp=true"]) == first


# ---------------------------------------------------------------- scripts/bench.py
BENCH = Path(__file__).resolve().parent.parent / "scripts" / "bench.py"


@pytest.mark.slow
def test_bench_help():
    r = subprocess.run([sys.executable, str(BENCH), "--help"], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "official PyTorch MNIST example" in r.stdout and "--workers" in r.stdout


@needs_mnist
@pytest.mark.slow
def test_bench_short_run_headline_is_the_examples_data_path(tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, str(BENCH), "--cases", "mnist_mlp", "--rounds", "2", "--steps-mlp", "3",
                        "--eval-mlp", "1000", "--workers", "1", "--threads", "1", "--out", str(out)],
                       capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    mlp = res["results"]["mnist_mlp"]
    assert mlp["headline"] == "example" and list(mlp["baselines"]) == ["example", "workers=1"]
    head, extra = mlp["baselines"]["example"], mlp["baselines"]["workers=1"]
    assert head["dataloader_kwargs"] == {"batch_size": 128, "shuffle": True, "num_workers": 0}  # CPU: as written
    assert extra["dataloader_kwargs"]["num_workers"] == 1
    assert "torchvision.datasets.MNIST" in mlp["what_b"] and "0.1307" in mlp["what_b"]
    for b in (head, extra):
        assert len(b["train_sps"]) == len(b["eval_s"]) == 2 and all(v > 0 for v in b["train_sps"])
        assert b["ratio_train"] == pytest.approx(mlp["median"]["dropbn_train_sps"] / b["median_train_sps"])
    assert mlp["ratio_train"] == head["ratio_train"]  # the headline under the older key
    assert mlp["order"] == [["A", "example", "workers=1"], ["workers=1", "example", "A"]]  # interleaved
    assert mlp["eval_samples"] == 1000 and "mnist_mlp eval of 10k test set < 1 s" not in res["targets"]
    assert "example's data path, 0 workers" in r.stdout and "same, 1 worker " in r.stdout


# ---------------------------------------------------------------- scripts/bench_eval_batch.py
@pytest.mark.slow
def test_eval_batch_bench_times_each_size_against_the_default():
    script = BENCH.parent / "bench_eval_batch.py"
    r = subprocess.run([sys.executable, str(script), "--images", "64", "--rounds", "2", "--sizes", "32"],
                       capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    assert "| model | batch 1000 | batch 32 |" in lines  # the default joins the sizes asked for, first
    rows = {line.split(" | ")[0]: line for line in lines if line.startswith("| mlp") or line.startswith("| cnn")}
    assert set(rows) == {"| mlp", "| cnn"}
    for row in rows.values():
        default_cell = row.split(" | ")[1]
        assert default_cell.endswith("(x1.00)") and float(default_cell.split()[0]) > 0
