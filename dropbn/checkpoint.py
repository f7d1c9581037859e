"""The torch side of a run folder: checkpoint.pt, and the environment record of summary.json.

Everything else in a run folder is torch-free (dropbn/runs.py), so that the
report can read runs without importing torch.
"""
from __future__ import annotations

import io
import os
import platform
import subprocess
from pathlib import Path

import torch

from .runs import CHECKPOINT, RunDir, atomic_write_bytes


def atomic_torch_save(obj, path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(buf.getvalue(), path)


def save_checkpoint(rd: RunDir, state: dict) -> None:
    atomic_torch_save(state, rd.file(CHECKPOINT))


def load_checkpoint(rd: RunDir) -> dict | None:
    p = rd.file(CHECKPOINT)
    if not p.exists():
        return None
    return torch.load(p, map_location="cpu", weights_only=False)


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (rev + ("+dirty" if dirty else "")) if rev else None


def environment(device) -> dict:
    """summary.json's `env`: library versions, device, threads, platform and the code's git commit."""
    env = {"torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads(),
           "python": platform.python_version(), "platform": platform.platform(),
           "cpu_count": os.cpu_count(), "git_commit": _git_commit()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env
