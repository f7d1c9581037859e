#!/usr/bin/env python
"""Training / evaluation throughput of dropbn's loop vs the official PyTorch MNIST example's data path.

    python scripts/bench.py                 # full mode (a few minutes on an idle 2-core CPU)
    python scripts/bench.py --quick         # smoke mode (~1 min)
    python scripts/bench.py --device cuda --workers 4,8

Cases (batch 128, SGD lr 0.05 momentum 0.9 foreach, reg=both: batch norm + dropout 0.5,
order [norm, act, dropout]):
  mnist_mlp  MNIST, MLP 784-1024-1024-10
  cifar_cnn  CIFAR-10 (the JPEG q75 mirror $DROPBN_DATA_DIR/cifar10-jpeg.tar.gz when present,
             else torchvision's CIFAR-10), CNN of configs/model/cnn.yaml ([32, 64] conv stages, fc 256)
  cifar_resnet20  the same data, ResNet-20 of configs/model/resnet.yaml (not in the default --cases:
             on 2 CPU cores a round takes minutes); --reg batchnorm / none times it with and without BN

A = dropbn's loop: resident uint8 tensors, `dropbn.train.data.Batches` (seeded permutation, batched
normalisation), `dropbn.train.models.build_model`, and `dropbn.train.optimize.train_epoch` -- the very function
`dropbn train` runs each epoch: `train_step` plus the per-step bookkeeping (loss sum, divergence
check, stop-signal check).

B = the headline baseline: the data path of the official PyTorch MNIST example
(https://github.com/pytorch/examples/blob/main/mnist/main.py, as of commit 77f55b9, 2025-08-25)
as written, in front of the same model and optimizer as A:
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    dataset1 = datasets.MNIST(..., train=True, transform=transform)
    train_loader = torch.utils.data.DataLoader(dataset1, **train_kwargs)
where train_kwargs is {'batch_size': ...} on CPU -- DataLoader defaults, num_workers=0 -- and,
on an accelerator, also {'num_workers': 1, 'persistent_workers': True, 'pin_memory': True,
'shuffle': True}. The test loader takes the same kwargs with batch 1000. One departure: B always
passes shuffle=True (the example shuffles only on an accelerator and iterates in file order on
CPU), because A shuffles every epoch and both should do the same work; the sampler's cost is a
permutation per epoch. The train loop is the example's (to(device), zero_grad, forward, loss,
backward, step), with cross_entropy on logits instead of nll_loss on log_softmax, since A's model
returns logits. If the MNIST IDX files exist only as .gz copies (torchvision's MNIST class then
refuses download=False), B uses a dataset whose __getitem__ is torchvision MNIST's
(uint8 array -> Image.fromarray(mode="L") -> transform) over the same pixels.
For CIFAR-10 there is no official example; B keeps the same DataLoader kwargs rule with a
dataset that does what torchvision's CIFAR10.__getitem__ does (uint8 HWC array in memory ->
Image.fromarray -> ToTensor + Normalize with dropbn's constants) over the same decoded pixels
dropbn trains on (the JPEG mirror cannot be read by torchvision's CIFAR10 class; decoding the
JPEGs again every epoch would only make B slower).

Extra rows: the same B with other DataLoader worker counts (--workers, default min(8, cores - 1)
when that differs from the headline's; persistent workers, pin_memory on CUDA). They are rows
next to the headline, never the headline.

Both loops use the same model (same architecture and initial weights from the same seed) and the
same optimizer (dropbn's foreach SGD). The one model-side difference is the memory format: dropbn
trains the CNN channels_last (part of its loop), B keeps PyTorch's default NCHW as the example
does; with channels_last in both (--b-channels-last) the CNN ratio measures the data path alone.

Method: one process; after a warm-up of each loop, R rounds each time A and every B variant in
alternating order (A B B', B' B A, A B B' ...), so slow drifts of machine load hit all alike;
medians over rounds are reported. Training epochs are truncated to N steps (full mode: the MLP
runs full epochs, 469 steps; the CNN 40 steps = 5,120 images; --steps-mlp/--steps-cnn); every
loop draws from a continuing stream of batches so a truncated epoch does not charge epoch
start-up to any of them. s/epoch is samples-per-epoch / measured samples/s. Evaluation: the 10k
test set at batch 1000 in eval mode, dropbn's `evaluate` vs the example's test loop (no_grad).

Roofline: the forward and backward GEMMs of the model at batch 128 (Linear: x@W, dY@W, dY^T@x,
no input gradient for the first layer; Conv: the same on im2col shapes) are timed as plain
torch.mm on this device each round; the sum is the time a step would take if it did nothing
but these GEMMs at the rate the machine achieves on these shapes. Roofline s/epoch =
steps/epoch x that sum; "% roofline" = roofline s/epoch / dropbn's measured s/epoch.
FLOPs count only GEMM/conv multiply-adds (2 per MAC).

Output: a table on stdout and the same numbers as JSON (--out, default results/bench/bench.json),
with the load average at start and end: numbers taken on a busy machine are depressed and say so.
"""
from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from hydra import compose as hcompose
from hydra import initialize_config_dir
from PIL import Image
from torch import nn
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dropbn.train import models  # noqa: E402
from dropbn.config.validation import CONFIG_DIR, validate  # noqa: E402
from dropbn.train.data import Batches, load_data, resolve_root  # noqa: E402
from dropbn.train.device import (place, resolve_device, set_threads, sync, tune_backends,  # noqa: E402
                           uses_channels_last)
from dropbn.train.evaluation import evaluate  # noqa: E402
from dropbn.record.layout import atomic_write_json  # noqa: E402
from dropbn.train.optimize import LossWatch, build_optimizer, train_epoch  # noqa: E402

BATCH = 128
EVAL_BATCH = 1000
EXAMPLE_NORMALIZE = ((0.1307,), (0.3081,))  # the official MNIST example's Normalize((0.1307,), (0.3081,))
HEADLINE = "example"                         # the key of the headline baseline in the JSON


# ---------------------------------------------------------------- config / data
def compose(overrides):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = hcompose("train", overrides=overrides)
    validate(cfg)
    return cfg


CASE_MODELS = {"mnist_mlp": "mlp", "cifar_cnn": "cnn", "cifar_resnet20": "resnet"}


def case_overrides(case: str, cifar_path: str | None, reg: str = "both") -> list[str]:
    common = [f"reg={reg}", "optim=sgd", f"train.batch_size={BATCH}", f"model={CASE_MODELS[case]}"]
    if case == "mnist_mlp":
        return ["data=mnist", *common]
    if cifar_path:
        return ["data=imagefolder", f"data.path={cifar_path}", *common]
    return ["data=cifar10", *common]


class PILArrayDataset(torch.utils.data.Dataset):
    """Per-sample dataset as torchvision's MNIST/CIFAR10 classes: uint8 array -> PIL -> transform."""

    def __init__(self, x_uint8: torch.Tensor, y: torch.Tensor, transform):
        x = x_uint8.cpu().numpy()
        self.gray = x.shape[1] == 1
        self.x = x[:, 0] if self.gray else np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # HWC
        self.y = y.cpu().tolist()
        self.transform = transform

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        img = Image.fromarray(self.x[i], mode="L" if self.gray else "RGB")
        return self.transform(img), self.y[i]


def standard_datasets(case, data):
    """(train, test, what): per-sample datasets with ToTensor + Normalize, as the official example."""
    import torchvision.datasets as tvd  # here, not at the top: importing torchvision takes longer
    import torchvision.transforms as T  # than torch itself (measured 5-7 s), which --help should not wait for

    if case == "mnist_mlp":
        tf = T.Compose([T.ToTensor(), T.Normalize(*EXAMPLE_NORMALIZE)])
        root = str(resolve_root(None))
        try:
            tr = tvd.MNIST(root, train=True, download=False, transform=tf)
            te = tvd.MNIST(root, train=False, download=False, transform=tf)
            return tr, te, "torchvision.datasets.MNIST + ToTensor/Normalize((0.1307,), (0.3081,))"
        except RuntimeError:  # only .gz copies of the IDX files: the same __getitem__ over dropbn's pixels
            return (PILArrayDataset(data.train.x, data.train.y, tf), PILArrayDataset(data.test.x, data.test.y, tf),
                    "torchvision MNIST's __getitem__ (uint8 -> Image.fromarray(mode='L') -> ToTensor/"
                    "Normalize((0.1307,), (0.3081,))) over the same pixels (.gz-only IDX files)")
    tf = T.Compose([T.ToTensor(), T.Normalize(data.mean.cpu().tolist(), data.std.cpu().tolist())])
    return (PILArrayDataset(data.train.x, data.train.y, tf), PILArrayDataset(data.test.x, data.test.y, tf),
            "in-memory uint8 -> PIL.Image.fromarray -> ToTensor/Normalize (torchvision CIFAR10-style __getitem__)")


def example_workers(device) -> int:
    """num_workers of the official example's DataLoaders: 0 (the default) on CPU, 1 on an accelerator."""
    return 0 if device.type == "cpu" else 1


def loader_kwargs(workers: int, device) -> dict:
    """DataLoader kwargs besides batch size and shuffle: the example's on an accelerator
    (num_workers, persistent_workers, pin_memory); on CPU just num_workers (persistent if > 0)."""
    kw = {"num_workers": workers}
    if workers > 0:
        kw["persistent_workers"] = True
    if device.type == "cuda":
        kw["pin_memory"] = True
    return kw


def baseline_workers(args, device) -> dict:
    """{baseline key: DataLoader workers}: the example's headline first, then the extra rows."""
    head = example_workers(device)
    out = {HEADLINE: head}
    for w in args.workers:
        if w != head:
            out[f"workers={w}"] = w
    return out


def forever(iterable):
    """Continuing stream of batches: a new pass (epoch) starts when one ends."""
    while True:
        yield from iterable


# ---------------------------------------------------------------- the two loops
def dropbn_epoch(model, opt, stream, steps, amp):
    """Seconds of dropbn's training epoch (`dropbn.train.optimize.train_epoch`) over the next `steps` batches."""
    ep = train_epoch(model, opt, itertools.islice(stream, steps), amp=amp)
    if ep.bad_step >= 0:
        raise RuntimeError("benchmark run diverged")
    return ep.seconds


def standard_epoch(model, opt, stream, steps, device, amp):
    """The official example's train loop (cross_entropy on logits instead of nll_loss on log_softmax)."""
    model.train()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        data, target = next(stream)
        data, target = data.to(device, non_blocking=True), target.to(device, non_blocking=True)
        if model.channels_last:
            data = data.contiguous(memory_format=torch.channels_last)
        opt.zero_grad()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(data), target)
        loss.backward()
        opt.step()
    sync(device)
    return time.perf_counter() - t0


def dropbn_eval(model, batches, device):
    sync(device)
    t0 = time.perf_counter()
    evaluate(model, batches)
    return time.perf_counter() - t0


def standard_eval(model, loader, device):
    sync(device)
    t0 = time.perf_counter()
    model.eval()
    test_loss, correct = 0.0, 0
    with torch.no_grad():
        for data, target in loader:
            data, target = data.to(device, non_blocking=True), target.to(device, non_blocking=True)
            if model.channels_last:
                data = data.contiguous(memory_format=torch.channels_last)
            output = model(data)
            test_loss += F.cross_entropy(output, target, reduction="sum").item()
            correct += output.argmax(dim=1).eq(target).sum().item()
    model.train()
    return time.perf_counter() - t0


def bookkeeping_us(device, n=2000):
    """Cost per step of the loop's divergence bookkeeping (`LossWatch`, checked each step as on CPU)."""
    loss = torch.tensor(0.5, device=device)
    watch = LossWatch(device)
    sync(device)
    t0 = time.perf_counter()
    for step in range(n):
        watch.add(step, loss)
        if watch.first_bad() >= 0:
            break
    sync(device)
    return (time.perf_counter() - t0) / n * 1e6


# ---------------------------------------------------------------- roofline
def gemm_shapes(model, in_shape, batch, device):
    """(M, K, N) of every forward/backward GEMM of one training step (im2col for convs)."""
    shapes, hooks, first = [], [], [True]

    def hook(mod, inp, out):
        x = inp[0]
        if isinstance(mod, nn.Linear):
            m, k, n = x.shape[0], mod.in_features, mod.out_features
        else:  # Conv2d, as im2col GEMM
            m = out.shape[0] * out.shape[2] * out.shape[3]
            k = mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1]
            n = mod.out_channels
        shapes.append((m, k, n))        # forward      Y = X W
        shapes.append((n, m, k))        # weight grad  dW = dY^T X
        if not first[0]:
            shapes.append((m, n, k))    # input grad   dX = dY W^T (none for the first layer)
        first[0] = False

    for mod in model.modules():
        if isinstance(mod, (nn.Linear, nn.Conv2d)):
            hooks.append(mod.register_forward_hook(hook))
    was = model.training
    model.eval()
    with torch.no_grad():
        p = next(model.parameters())
        model(torch.zeros((batch, *in_shape), device=device, dtype=p.dtype))
    model.train(was)
    for h in hooks:
        h.remove()
    return shapes


def gemm_step_seconds(shapes, device, reps):
    """Median over `reps` of the summed torch.mm time of all shapes."""
    mats = [(torch.randn(m, k, device=device), torch.randn(k, n, device=device)) for m, k, n in shapes]
    for a, b in mats:  # warm-up
        torch.mm(a, b)
    times = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        for a, b in mats:
            torch.mm(a, b)
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ---------------------------------------------------------------- one case
def bench_case(case, args, device):
    cifar = None
    if case != "mnist_mlp":
        p = Path(args.cifar_path) if args.cifar_path else resolve_root(None) / "cifar10-jpeg.tar.gz"
        cifar = str(p) if p.exists() else None
    cfg = compose(case_overrides(case, cifar, args.reg))
    data = load_data(cfg.data, device)
    n_cls = len(data.classes)
    cl = uses_channels_last(cfg.model.name, device)
    steps = args.steps_mlp if case == "mnist_mlp" else args.steps_cnn
    n_eval = min(len(data.test), args.eval_mlp if case == "mnist_mlp" else args.eval_cnn)
    test = data.test if n_eval == len(data.test) else data.test.subset(torch.arange(n_eval, device=device))

    def make_model(channels_last):
        torch.manual_seed(cfg.seed)
        m = place(models.build_model(cfg.model, cfg.reg, data.shape, n_cls), device, channels_last)
        m.channels_last = channels_last
        return m

    # A: dropbn
    model_a = make_model(cl)
    opt_a = build_optimizer(cfg, model_a.parameters())
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    stream_a = forever(Batches(data.train, BATCH, data.mean, data.std, shuffle=True, generator=gen,
                               channels_last=cl))
    eval_a = Batches(test, EVAL_BATCH, data.mean, data.std, channels_last=cl)
    # B: the example's data path in front of the same model and optimizer, one per worker count
    tr_ds, te_ds, what = standard_datasets(case, data)
    if n_eval < len(te_ds):
        te_ds = torch.utils.data.Subset(te_ds, range(n_eval))
    loops = {}
    for key, workers in baseline_workers(args, device).items():
        model_b = make_model(cl and args.b_channels_last)
        kw = loader_kwargs(workers, device)
        train_loader = torch.utils.data.DataLoader(tr_ds, batch_size=BATCH, shuffle=True,
                                                   generator=torch.Generator().manual_seed(cfg.seed), **kw)
        loops[key] = {"model": model_b, "opt": build_optimizer(cfg, model_b.parameters()),
                      "stream": forever(train_loader), "loader": train_loader,
                      "test_loader": torch.utils.data.DataLoader(te_ds, batch_size=EVAL_BATCH, shuffle=False, **kw),
                      "kwargs": {"batch_size": BATCH, "shuffle": True, **kw}}

    shapes = gemm_shapes(model_a, data.shape, BATCH, device)
    flops_step = sum(2 * m * k * n for m, k, n in shapes)
    n_train = len(data.train)
    steps_per_epoch = len(Batches(data.train, BATCH, data.mean, data.std, shuffle=True))

    res = {"what_b": what, "channels_last_a": cl, "channels_last_b": args.b_channels_last and cl,
           "train_samples_per_epoch": n_train, "steps_per_epoch": steps_per_epoch,
           "measured_steps": steps, "eval_samples": n_eval, "gemm_shapes_mkn": shapes,
           "gemm_gflop_per_step": flops_step / 1e9, "dropbn_train_sps": [], "dropbn_eval_s": [],
           "gemm_step_s": [], "order": [], "headline": HEADLINE,
           "baselines": {k: {"dataloader_kwargs": lp["kwargs"], "train_sps": [], "eval_s": []}
                         for k, lp in loops.items()}}
    amp = args.amp and device.type == "cuda"
    bar = tqdm(total=2 + args.rounds, desc=f"{case}: warm-up", unit="round", dynamic_ncols=True)
    # warm-up: a few steps of each loop, one eval batch of each, GEMMs (and worker start-up)
    w = max(3, steps // 10)
    dropbn_epoch(model_a, opt_a, stream_a, w, amp)
    evaluate(model_a, Batches(test.subset(torch.arange(min(EVAL_BATCH, n_eval), device=device)),
                              EVAL_BATCH, data.mean, data.std, channels_last=cl))
    for lp in loops.values():
        standard_epoch(lp["model"], lp["opt"], lp["stream"], w, device, amp)
        standard_eval(lp["model"], [next(iter(lp["test_loader"]))], device)
    gemm_step_seconds(shapes, device, 1)
    bar.update(1)
    bar.set_description(f"{case}: bookkeeping")
    res["bookkeeping_us_per_step"] = bookkeeping_us(device)
    bar.update(1)
    seq = ["A", *loops]
    for r in range(args.rounds):
        bar.set_description(f"{case}: round {r + 1}/{args.rounds}")
        order = seq if r % 2 == 0 else seq[::-1]
        res["order"].append(order)
        for v in order:
            if v == "A":
                res["dropbn_train_sps"].append(steps * BATCH / dropbn_epoch(model_a, opt_a, stream_a, steps, amp))
                res["dropbn_eval_s"].append(dropbn_eval(model_a, eval_a, device))
            else:
                lp, out = loops[v], res["baselines"][v]
                out["train_sps"].append(steps * BATCH / standard_epoch(lp["model"], lp["opt"], lp["stream"],
                                                                       steps, device, amp))
                out["eval_s"].append(standard_eval(lp["model"], lp["test_loader"], device))
        res["gemm_step_s"].append(gemm_step_seconds(shapes, device, args.gemm_reps))
        bar.update(1)
    bar.close()
    loops.clear()  # stop the workers

    med = {k: statistics.median(res[k]) for k in ("dropbn_train_sps", "dropbn_eval_s", "gemm_step_s")}
    for out in res["baselines"].values():
        out["median_train_sps"] = statistics.median(out["train_sps"])
        out["median_eval_s"] = statistics.median(out["eval_s"])
        out["ratio_train"] = med["dropbn_train_sps"] / out["median_train_sps"]
        out["ratio_eval"] = out["median_eval_s"] / med["dropbn_eval_s"]
        out["epoch_s"] = n_train / out["median_train_sps"]
    head = res["baselines"][HEADLINE]
    # the headline baseline under the keys of earlier versions of this file
    med["dataloader_train_sps"], med["dataloader_eval_s"] = head["median_train_sps"], head["median_eval_s"]
    res["median"] = med
    res["ratio_train"], res["ratio_eval"] = head["ratio_train"], head["ratio_eval"]
    res["dropbn_epoch_s"] = n_train / med["dropbn_train_sps"]
    res["dataloader_epoch_s"] = head["epoch_s"]
    res["gemm_gflops"] = flops_step / med["gemm_step_s"] / 1e9
    res["roofline_epoch_s"] = steps_per_epoch * med["gemm_step_s"]
    res["roofline_fraction"] = res["roofline_epoch_s"] / res["dropbn_epoch_s"]
    res["dropbn_eval_samples_per_s"] = n_eval / med["dropbn_eval_s"]
    res["data"] = cfg.data.name + (f" ({Path(cfg.data.path).name})" if cfg.data.name == "imagefolder" else "")
    res["model"] = models.describe(model_a, data.shape).splitlines()[-1]
    return res


# ---------------------------------------------------------------- report
def baseline_label(key: str, workers: int) -> str:
    n = f"{workers} worker" + ("" if workers == 1 else "s")
    return f"example's data path, {n}" if key == HEADLINE else f"same, {n}"


def table(results) -> str:
    lines = ["| case | baseline (DataLoader) | dropbn train (samples/s) | baseline train (samples/s) | ratio "
             "| dropbn s/epoch | baseline s/epoch | GEMM GFLOP/s | roofline s/epoch | % of roofline "
             "| eval test set: dropbn s | baseline s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for case, r in results.items():
        m = r["median"]
        for key, b in r["baselines"].items():
            lines.append(
                f"| {case} | {baseline_label(key, b['dataloader_kwargs']['num_workers'])} "
                f"| {m['dropbn_train_sps']:,.0f} | {b['median_train_sps']:,.0f} | {b['ratio_train']:.2f}x "
                f"| {r['dropbn_epoch_s']:.1f} | {b['epoch_s']:.1f} | {r['gemm_gflops']:.0f} "
                f"| {r['roofline_epoch_s']:.1f} | {100 * r['roofline_fraction']:.0f}% "
                f"| {m['dropbn_eval_s']:.2f} ({r['eval_samples']:,}) | {b['median_eval_s']:.2f} |")
    return "\n".join(lines)


# issue 6's targets on the 2-core CPU; the ratio targets are checked against every baseline row
RATIO_TARGETS = {"mnist_mlp": 2.0, "cifar_cnn": 1.3}
TARGETS = {  # name: results -> bool, or None where the run did not measure it
    "mnist_mlp >= 60% of roofline": lambda R: R["mnist_mlp"]["roofline_fraction"] >= 0.6,
    "mnist_mlp eval of 10k test set < 1 s": lambda R: (R["mnist_mlp"]["median"]["dropbn_eval_s"] < 1.0
                                                       if R["mnist_mlp"]["eval_samples"] == 10000 else None),
}


def check_targets(results) -> dict:
    checks = {}
    for case, need in RATIO_TARGETS.items():
        for key, b in results.get(case, {}).get("baselines", {}).items():
            label = baseline_label(key, b["dataloader_kwargs"]["num_workers"])
            checks[f"{case} train >= {need:g}x baseline ({label})"] = bool(b["ratio_train"] >= need)
    for name, f in TARGETS.items():
        try:
            ok = f(results)
        except KeyError:  # that case was not run
            continue
        if ok is not None:
            checks[name] = bool(ok)
    return checks


def worker_list(text: str) -> list[int]:
    """--workers: comma-separated DataLoader worker counts for the extra rows, or "none"."""
    if text.strip().lower() in ("", "none"):
        return []
    try:
        out = [int(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if any(w < 0 for w in out):
        raise argparse.ArgumentTypeError(f"worker counts must be >= 0: {text!r}")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke mode: few steps, 2 rounds")
    ap.add_argument("--device", default="cpu", help="cpu (default) | cuda | cuda:N")
    ap.add_argument("--out", default=str(ROOT / "results" / "bench" / "bench.json"))
    ap.add_argument("--cases", default="mnist_mlp,cifar_cnn", help="of " + ", ".join(CASE_MODELS))
    ap.add_argument("--reg", default="both", help="the reg preset of every case (default both: BN + dropout)")
    ap.add_argument("--rounds", type=int, help="A/B rounds (full 3, quick 2)")
    ap.add_argument("--steps-mlp", type=int, help="steps per measured MLP epoch (full: whole epoch, 469)")
    ap.add_argument("--steps-cnn", type=int, help="steps per measured CNN / ResNet epoch (full 40, quick 8)")
    ap.add_argument("--eval-cnn", type=int, help="CNN / ResNet test images evaluated (full 10000, quick 2000)")
    ap.add_argument("--eval-mlp", type=int, default=10000, help="MLP test images evaluated (default 10000)")
    ap.add_argument("--workers", type=worker_list,
                    help="DataLoader worker counts of the extra baseline rows, comma-separated, or 'none' "
                         "(default: min(8, cores - 1)); the headline row always has the example's "
                         "(0 on CPU, 1 on an accelerator)")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's, = cores)")
    ap.add_argument("--b-channels-last", action="store_true",
                    help="train the DataLoader loop's CNN channels_last too (default: NCHW, as the example)")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast in both loops (CUDA only)")
    ap.add_argument("--cifar-path", help="CIFAR-10 image archive (default $DROPBN_DATA_DIR/cifar10-jpeg.tar.gz)")
    args = ap.parse_args(argv)
    q = args.quick
    args.rounds = args.rounds or (2 if q else 3)
    args.steps_mlp = args.steps_mlp or (60 if q else 469)
    args.steps_cnn = args.steps_cnn or (8 if q else 40)
    args.eval_cnn = args.eval_cnn or (2000 if q else 10000)
    args.gemm_reps = 3 if q else 5
    cores = os.cpu_count() or 1
    if args.workers is None:
        args.workers = [min(8, max(1, cores - 1))]
    set_threads(args.threads)
    device = resolve_device(args.device)
    tune_backends(device)  # as `dropbn train` does

    load0 = os.getloadavg()
    t0 = time.perf_counter()
    results = {c: bench_case(c, args, device) for c in args.cases.split(",")}
    meta = {"device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "cpu": platform.processor() or platform.machine(), "cores": cores,
            "torch_threads": torch.get_num_threads(),
            "dataloader_workers": baseline_workers(args, device), "headline": HEADLINE,
            "torch": torch.__version__, "python": platform.python_version(), "quick": q, "amp": args.amp,
            "rounds": args.rounds, "batch_size": BATCH, "eval_batch_size": EVAL_BATCH, "reg": args.reg,
            "loadavg_start": load0, "loadavg_end": os.getloadavg(), "wall_s": time.perf_counter() - t0,
            "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    checks = check_targets(results)
    out = {"meta": meta, "results": results, "targets": checks}
    atomic_write_json(out, args.out)

    print(f"\ndevice {device} ({meta['gpu'] or meta['cpu']}), {cores} cores, torch threads "
          f"{meta['torch_threads']}, torch {torch.__version__}, "
          f"load average {load0[0]:.1f} -> {meta['loadavg_end'][0]:.1f}, {meta['wall_s']:.0f} s"
          + (" [--quick]" if q else ""))
    print(f"headline baseline: the official PyTorch MNIST example's data path as written "
          f"({example_workers(device)} DataLoader workers on {device.type}); other worker counts are extra rows")
    print(f"medians over {args.rounds} interleaved rounds; batch {BATCH}; training epochs truncated to "
          + ", ".join(f"{c} {r['measured_steps']} steps" for c, r in results.items()) + "\n")
    print(table(results))
    for c, r in results.items():
        print(f"\n{c}: B = {r['what_b']}; loop bookkeeping {r['bookkeeping_us_per_step']:.0f} us/step; "
              f"GEMM {r['gemm_gflop_per_step']:.2f} GFLOP/step")
    if device.type == "cpu" and checks:
        print("\ntargets (issue 6, 2-core CPU; ratios against every baseline row):")
        for name, ok in checks.items():
            print(f"  [{'ok' if ok else 'MISSED'}] {name}")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
