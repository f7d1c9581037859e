"""The torch side of a run folder: checkpoint.pt, and the environment record of summary.json.

Everything else in a run folder is torch-free (dropbn/record/layout.py), so that the
report can read runs without importing torch.
"""
from __future__ import annotations

import io
import os
import pickle
import platform
import re
import subprocess
from pathlib import Path

import torch

from ..base.errors import DropbnError, first_line
from ..record.layout import CHECKPOINT, RESULTS_DIR, atomic_write_bytes
from ..record.run_dir import RunDir

CHECKPOINT_KEYS = ("epoch", "model", "optimizer", "scheduler", "rng", "metrics", "train_seconds", "config")


def atomic_torch_save(obj, path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(buf.getvalue(), path)


def safe_torch_load(path, mmap: bool = False):
    """Read a file dropbn wrote with `atomic_torch_save` (a checkpoint, a data cache entry) without
    executing anything: torch's weights-only unpickler, which rebuilds tensors, state dicts and plain
    containers, numbers and strings (everything dropbn writes, RNG states included) and refuses any
    other pickled object. Raises what torch raises; `load_problem` words it."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def load_problem(e: BaseException) -> str:
    """Why `safe_torch_load` failed, in a few words: a pickled object dropbn never writes (named,
    never built), or the error of a truncated / foreign / unreadable file."""
    if isinstance(e, pickle.UnpicklingError):
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found:
            return f"it holds a pickled {found.group(1)}, which dropbn never writes; not loaded"
    return f"{type(e).__name__}: {first_line(e)}"


def corrupt(path, why: str) -> DropbnError:
    return DropbnError(f"{path} is corrupt ({why[:160]}); train.force=true restarts the run, "
                       f"or delete the checkpoint")


def save_checkpoint(rd: RunDir, state: dict) -> None:
    atomic_torch_save(state, rd.file(CHECKPOINT))


def load_checkpoint(rd: RunDir, mmap: bool = False) -> dict | None:
    """The run folder's checkpoint, None if it has none; a DropbnError (one line) if it is unreadable.
    mmap=True maps the tensors instead of reading them (cheap when only epoch and config are needed)."""
    p = rd.file(CHECKPOINT)
    if not os.path.lexists(p):
        return None
    try:
        ckpt = safe_torch_load(p, mmap=mmap)
        missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    except Exception as e:  # truncated, not a torch file, a folder, unreadable, a foreign object ...
        why = load_problem(e)
    else:
        if not missing and isinstance(ckpt["epoch"], int):
            return ckpt
        why = f"missing {', '.join(missing)}" if missing else f"epoch={ckpt['epoch']!r}"
    raise corrupt(p, why) from None


def git_commit(repo: Path = Path(__file__).resolve().parents[2]) -> str | None:
    """The commit of the code in `repo` (dropbn's checkout), "+dirty" when a tracked file differs from it.
    Changes under the default runs folder (results/: committed run records, reports) are outputs, not
    code, so they do not count."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                f":(exclude){RESULTS_DIR}"], cwd=repo,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (rev + ("+dirty" if dirty else "")) if rev else None


def environment(device, parallel_runs: int | None = 1) -> dict:
    """summary.json's `env`: library versions, device, threads, the runs of its launch that shared the
    machine (dropbn/base/parallel.py), platform and the code's git commit."""
    env = {"torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads(),
           "parallel_runs": parallel_runs, "python": platform.python_version(), "platform": platform.platform(),
           "cpu_count": os.cpu_count(), "git_commit": git_commit()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env
