"""The run folder: atomic writes, metrics.csv, summary.json, checkpoints, resume."""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

import torch

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.csv"
SUMMARY = "summary.json"
MODEL_TXT = "model.txt"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(data: bytes, path) -> None:
    """Write to a temp file in the same folder, fsync, rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(text: str, path) -> None:
    atomic_write_bytes(text.encode(), path)


def atomic_write_json(obj, path) -> None:
    atomic_write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n", path)


def atomic_torch_save(obj, path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(buf.getvalue(), path)


def rows_to_csv(rows: list[dict]) -> str:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return out.getvalue()


class RunDir:
    """One run's folder and the files in it."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def file(self, name: str) -> Path:
        return self.path / name

    def read_summary(self) -> dict | None:
        try:
            return json.loads(self.file(SUMMARY).read_text())
        except (OSError, ValueError):
            return None

    def is_completed(self) -> bool:
        s = self.read_summary()
        return bool(s) and s.get("status") == "completed"

    def clear_summary(self) -> None:
        self.file(SUMMARY).unlink(missing_ok=True)

    def write_summary(self, summary: dict) -> None:
        atomic_write_json(summary, self.file(SUMMARY))

    def write_metrics(self, rows: list[dict]) -> None:
        atomic_write_text(rows_to_csv(rows), self.file(METRICS))

    def write_text(self, name: str, text: str) -> None:
        atomic_write_text(text, self.file(name))

    def save_checkpoint(self, state: dict) -> None:
        atomic_torch_save(state, self.file(CHECKPOINT))

    def load_checkpoint(self) -> dict | None:
        p = self.file(CHECKPOINT)
        if not p.exists():
            return None
        return torch.load(p, map_location="cpu", weights_only=False)


# Keys that say where or how a run executes, not what it computes: a run may be
# resumed with other values (they are also left out of the folder name).
RESUME_IGNORED = ("out_root", "device", "train.force", "train.progress", "train.threads",
                  "train.diagnostics", "train.tensorboard", "train.objective",
                  "data.root", "data.cache_dir", "data.download")


def same_config(saved: dict, current: dict) -> bool:
    """Whether a checkpoint's config and the current one describe the same run."""
    import copy

    def strip(c):
        c = copy.deepcopy(c)
        for key in RESUME_IGNORED:
            *parents, leaf = key.split(".")
            node = c
            for p in parents:
                node = node.get(p, {}) if isinstance(node, dict) else {}
            if isinstance(node, dict):
                node.pop(leaf, None)
        return c

    return strip(saved) == strip(current)


def _git_commit() -> str | None:
    import subprocess

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
    import platform

    env = {"torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads(),
           "python": platform.python_version(), "platform": platform.platform(),
           "cpu_count": os.cpu_count(), "git_commit": _git_commit()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def summarize(rows: list[dict], cfg, *, status, diverged_at, params, data, config, env) -> dict:
    """summary.json: the run's headline numbers, its config and its environment."""
    target = float(cfg.train.target_acc)
    last = rows[-1] if rows else {}
    hit = next((r for r in rows if r["test_acc"] >= target), None)
    s = {
        "status": status,
        "seed": cfg.seed,
        "data": data.label,
        "data_sizes": data.sizes(),
        "params": params,
        "epochs": cfg.train.epochs,
        "epochs_completed": len(rows),
        "final_test_acc": last.get("test_acc"),
        "final_test_loss": last.get("test_loss"),
        "final_train_acc": last.get("train_acc"),
        "final_train_loss": last.get("train_loss"),
        "best_test_acc": max((r["test_acc"] for r in rows), default=None),
        "best_epoch": max(rows, key=lambda r: r["test_acc"])["epoch"] if rows else None,
        "first_epoch_test_acc": rows[0]["test_acc"] if rows else None,
        "generalization_gap": (last["train_acc"] - last["test_acc"]) if rows else None,
        "loss_gap": (last["test_loss"] - last["train_loss"]) if rows else None,
        "target_acc": target,
        "epochs_to_target": hit["epoch"] if hit else None,
        "seconds_to_target": hit["train_seconds"] if hit else None,
        "train_seconds": last.get("train_seconds", 0.0),
        "seconds_per_epoch": (last["train_seconds"] / len(rows)) if rows else None,
        "diverged_at": diverged_at,
        "config": config,
        "env": env,
    }
    if rows and "val_acc" in last:
        s["final_val_acc"] = last["val_acc"]
        s["best_val_acc"] = max(r["val_acc"] for r in rows)
        s["final_val_loss"] = last["val_loss"]
    return s
