#!/usr/bin/env python
"""Where batch norm's time goes in the CIFAR CNN: BatchNorm2d forward + backward alone at the CNN's
two stage shapes (batch 128: 32 channels at 32x32, 64 at 16x16), NCHW vs channels_last, float32 vs
bf16 autocast; and the CNN's whole training step (configs/model/cnn.yaml) with reg=batchnorm vs
reg=none in both layouts. Medians over --steps timed repetitions, device-synchronised.

    python scripts/bn_layout.py --device cuda            # scripts/gpu_check.sh step 6
    python scripts/bn_layout.py --device cpu --steps 3   # a rehearsal; CPU numbers say nothing about a GPU

Question it answers (issue 30): the committed CIFAR CNN study's batch-norm epochs took 2.80 s
against 1.29 s without on an H200 with 3-6 runs sharing it; if BatchNorm2d in channels_last float32
is much slower than in NCHW here, the slowdown is a kernel path of ours (dropbn trains CNNs
channels_last), not contention.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dropbn.train.device import resolve_device, sync  # noqa: E402
from dropbn.config.validation import complete  # noqa: E402
from dropbn.train.models import build_model  # noqa: E402

BATCH = 128
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


def timed(fn, device, steps: int) -> float:
    """Median ms of `fn` over `steps` repetitions after 3 warm-up calls."""
    for _ in range(3):
        fn()
    sync(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def bn_alone(device, layout, bf16: bool, c: int, hw: int):
    bn = torch.nn.BatchNorm2d(c).to(device)
    x = torch.randn(BATCH, c, hw, hw, device=device).to(memory_format=layout).requires_grad_()

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            bn(x).float().sum().backward()
    return step


def cnn_step(device, layout, reg: str):
    from omegaconf import OmegaConf

    norm = {"batchnorm": ("batch", ["norm", "act"]), "none": ("none", ["act"])}[reg]
    net = build_model(complete(OmegaConf.create({"name": "cnn", "channels": [32, 64], "fc": [256]}), "model"),
                      complete(OmegaConf.create({"norm": norm[0], "order": norm[1]}), "reg"), (3, 32, 32), 10)
    net = net.to(device).to(memory_format=layout)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(BATCH, 3, 32, 32, device=device).to(memory_format=layout)
    y = torch.randint(0, 10, (BATCH,), device=device)

    def step():
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return step


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--out", help="write the rows as JSON here")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    torch.backends.cudnn.benchmark = True  # as dropbn train does on CUDA
    rows = []
    for lname, layout in LAYOUTS.items():
        for bf16 in (False, True):
            for c, hw in ((32, 32), (64, 16)):
                ms = timed(bn_alone(device, layout, bf16, c, hw), device, args.steps)
                rows.append({"what": f"BatchNorm2d({c}) at {hw}x{hw}", "layout": lname,
                             "dtype": "bf16 autocast" if bf16 else "float32", "ms": ms})
        for reg in ("batchnorm", "none"):
            rows.append({"what": f"CNN step, reg={reg}", "layout": lname, "dtype": "float32",
                         "ms": timed(cnn_step(device, layout, reg), device, args.steps)})
    for r in rows:
        print(f"{r['what']:<26} {r['layout']:<14} {r['dtype']:<14} {r['ms']:9.3f} ms")
    if args.out:
        Path(args.out).write_text(json.dumps({"device": str(device), "batch": BATCH, "steps": args.steps,
                                              "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
