#!/usr/bin/env python
"""Evaluation speed against train.eval_batch_size, per model, measured side by side.

    python scripts/bench_eval_batch.py                       # CPU, one thread (as the reference sweeps run)
    python scripts/bench_eval_batch.py --threads 2 --sizes 1000,128
    python scripts/bench_eval_batch.py --device cuda

Times dropbn's `evaluate` (eval mode, inference_mode) over resident uint8 images through
`dropbn.train.data.Batches`, the path `dropbn train` evaluates with each epoch, for the MLP of
configs/model/mlp.yaml on MNIST-shaped input and the CNN of configs/model/cnn.yaml on CIFAR-shaped
input (reg=both: batch norm + dropout), in the layout training uses (channels_last for the CNN
except on MPS). Pixel values are random: speed does not depend on them. The batch sizes are timed
in rotating order over R rounds, so drifts of machine load hit each alike; the table gives the
median ms per image and its ratio to the default batch size (train.eval_batch_size=1000):
above 1 means faster than the default. The batch size changes only rounding of the results (see
tests/test_models.py), so it is not part of a run's identity; choose it for speed.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import compose  # noqa: E402  (scripts/bench.py: the composed, validated config)
from dropbn.train import models  # noqa: E402
from dropbn.train.data import Batches, Split  # noqa: E402
from dropbn.train.device import place, resolve_device, set_threads, sync, uses_channels_last  # noqa: E402
from dropbn.train.evaluation import evaluate  # noqa: E402
from dropbn.config.schema import TrainConfig  # noqa: E402

CASES = {"mlp": ("mnist", (1, 28, 28)), "cnn": ("cifar10", (3, 32, 32))}  # model: (data config, image shape)


def build(model: str, device):
    data, shape = CASES[model]
    cfg = compose([f"model={model}", f"data={data}", "reg=both"])
    cl = uses_channels_last(model, device)
    net = place(models.build_model(cfg.model, cfg.reg, shape, 10), device, cl)
    return net, shape, cl


def ms_per_image(net, split: Split, batch_size: int, cl: bool, device) -> float:
    batches = Batches(split, batch_size, torch.zeros(split.x.shape[1]), torch.ones(split.x.shape[1]),
                      channels_last=cl)
    sync(device)
    t0 = time.perf_counter()
    evaluate(net, batches)
    sync(device)
    return (time.perf_counter() - t0) / len(split) * 1e3


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu (default) | cuda | mps")
    ap.add_argument("--threads", type=int, default=1, help="torch threads on CPU (default 1, as a sweep's runs)")
    ap.add_argument("--sizes", default="1000,512,256,128,64", help="eval batch sizes, comma-separated")
    ap.add_argument("--images", type=int, default=4000, help="images evaluated per timing (default 4000)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds over all sizes (default 5)")
    ap.add_argument("--models", default="mlp,cnn")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    set_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    default = TrainConfig.eval_batch_size
    if default not in sizes:
        sizes.insert(0, default)
    print(f"device {device}, {torch.get_num_threads()} thread(s), {args.images} images x {args.rounds} rounds; "
          f"ms per image (median) and speed vs the default {default} (>1: faster)")
    print("| model | " + " | ".join(f"batch {s}" for s in sizes) + " |")
    print("|---" * (len(sizes) + 1) + "|")
    for model in args.models.split(","):
        net, shape, cl = build(model, device)
        gen = torch.Generator().manual_seed(0)
        split = Split(torch.randint(0, 256, (args.images, *shape), dtype=torch.uint8, generator=gen),
                      torch.randint(0, 10, (args.images,), generator=gen)).to(device)
        for s in sizes:  # warm-up
            ms_per_image(net, Split(split.x[:s], split.y[:s]), s, cl, device)
        times = {s: [] for s in sizes}
        for r in range(args.rounds):
            order = sizes[r % len(sizes):] + sizes[:r % len(sizes)]  # rotate who goes first
            for s in order:
                times[s].append(ms_per_image(net, split, s, cl, device))
        med = {s: statistics.median(v) for s, v in times.items()}
        cells = [f"{med[s]:.3f} ms (x{med[default] / med[s]:.2f})" for s in sizes]
        print(f"| {model} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
