"""Where a run computes: the device, its memory layout, the thread count, synchronisation.

One place for the rules that training, diagnostics and the benchmark share:
`resolve_device` ("auto" = cuda > mps > cpu; a device this machine lacks is one
line, DropbnError, via `check_available`), `uses_channels_last` (which models
train in channels_last layout) with `place` (a model on its device, in that layout),
`set_threads` (the torch thread count: the configured one, else the run's share of
the cores under a parallel launcher, dropbn/base/parallel.py), `tune_backends` and `sync`.
"""
from __future__ import annotations

import torch
from torch import nn

from ..base.errors import DropbnError
from ..base.parallel import run_threads


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def check_available(spec) -> None:
    """Raise DropbnError (one line) when device `spec` (cuda, cuda:N, mps) is not on this machine."""
    spec = str(spec)
    if spec.startswith("cuda"):
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(spec.partition(":")[2] or 0)
        if n == 0:
            raise DropbnError(f"device={spec}: no CUDA device is available here (torch {torch.__version__}, "
                              f"CUDA {torch.version.cuda or 'not built in'}); use device=cpu or device=auto")
        if index >= n:
            raise DropbnError(f"device={spec}: only {n} CUDA device{'s' if n > 1 else ''} here "
                              f"(cuda:0{f' .. cuda:{n - 1}' if n > 1 else ''})")
    elif spec == "mps" and not _mps_available():
        raise DropbnError("device=mps: MPS (Apple GPU) is not available here; use device=cpu or device=auto")


def resolve_device(spec) -> torch.device:
    """"auto" -> cuda if available, else mps, else cpu; anything else as torch spells it, if available."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    check_available(spec)
    return torch.device(spec)


def uses_channels_last(model_name: str, device) -> bool:
    """Whether a model runs in channels_last layout (model and batches): CNNs and ResNets, except on MPS."""
    return model_name in ("cnn", "resnet") and torch.device(device).type != "mps"


def place(model: nn.Module, device, channels_last: bool) -> nn.Module:
    """`model` on `device`, with 4-d weights in channels_last layout when asked."""
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def set_threads(configured: int | None, launcher=None) -> None:
    """Torch intra-op threads of this process.

    `configured` (train.threads, --threads) wins; None means the run's share of
    the cores under `launcher` (hydra.launcher; see dropbn/base/parallel.py), or
    torch's default (all cores) when the run has the machine to itself.
    """
    n = run_threads(launcher) if configured is None else int(configured)
    if n:
        torch.set_num_threads(n)


def tune_backends(device: torch.device) -> None:
    """CUDA: let cuDNN pick the fastest convolution algorithms once (the shapes are fixed)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def sync(device) -> None:
    """Wait for the device's queued work (CUDA, MPS), so that wall-clock timings are real."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
