"""The run folder, torch-free: file names, atomic writes, summary/metrics, and which config keys identify a run.

What `dropbn train` writes and `dropbn report` reads. The report never imports
torch, so neither does this module; checkpoint.pt and the environment record
(both need torch) live in dropbn/checkpoint.py.
"""
from __future__ import annotations

import copy
import csv
import io
import json
import os
import tempfile
from pathlib import Path

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.csv"
SUMMARY = "summary.json"
MODEL_TXT = "model.txt"
HYDRA_DIR = ".hydra"                 # Hydra's record of the run's config and overrides
HYDRA_CONFIG = f"{HYDRA_DIR}/config.yaml"
# statuses of a finished run: re-running its command skips it (train.force=true re-trains it);
# a diverged run diverges again the same way, so it is finished too
FINISHED = ("completed", "diverged")


# ---------------------------------------------------------------- which config keys identify a run
# Keys that say where or how a run executes, not what it computes. Folder names, resume and report
# grouping all start from this one list; where a use differs, the difference is named below, once.
NON_RESULT_KEYS = ("name", "out_root", "device", "train.force", "train.progress", "train.threads",
                   "train.diagnostics", "train.tensorboard", "train.objective", "train.claim_timeout",
                   "data.root", "data.cache_dir", "data.download", "data.path", "study")
# Command-line choices that are not config values (a preset, a launcher): only folder names see them.
LAUNCH_KEYS = ("exp", "+exp", "hydra/launcher", "hydra.launcher.n_jobs")
# Where an image folder lives: left out of folder names and report grouping, but checked on resume,
# because two paths may hold different images (until a content fingerprint can tell).
RESUME_CHECKED = ("data.path",)
# The seeds change results, so folder names and resume keep them; the report pools runs over them
# (replicates: the seed of the run, and that of its training subset and validation split).
POOLED_IN_REPORT = ("seed", "data.split_seed")

FOLDER_NAME_EXCLUDED = (*LAUNCH_KEYS, *NON_RESULT_KEYS)  # = hydra.job...exclude_keys in configs/train.yaml
RESUME_IGNORED = tuple(k for k in NON_RESULT_KEYS if k not in RESUME_CHECKED)
REPORT_IGNORED = (*POOLED_IN_REPORT, *NON_RESULT_KEYS)


def among(key: str, keys) -> bool:
    """Whether dotted `key` is one of `keys` or lies under one of them (a subtree such as `study`)."""
    return any(key == k or key.startswith(k + ".") for k in keys)


def same_config(saved: dict, current: dict) -> bool:
    """Whether a checkpoint's config and the current one describe the same run (RESUME_IGNORED aside)."""
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


# ---------------------------------------------------------------- atomic writes

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


def rows_to_csv(rows: list[dict]) -> str:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return out.getvalue()


# ---------------------------------------------------------------- one run's folder

class RunDir:
    """One run's folder and the files in it (checkpoint.pt: dropbn.checkpoint)."""

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

    def is_finished(self) -> bool:
        s = self.read_summary()
        return bool(s) and s.get("status") in FINISHED

    def clear_summary(self) -> None:
        self.file(SUMMARY).unlink(missing_ok=True)

    def write_summary(self, summary: dict) -> None:
        atomic_write_json(summary, self.file(SUMMARY))

    def write_metrics(self, rows: list[dict]) -> None:
        atomic_write_text(rows_to_csv(rows), self.file(METRICS))

    def write_text(self, name: str, text: str) -> None:
        atomic_write_text(text, self.file(name))


def is_run_dir(p: Path) -> bool:
    """A run folder holds summary.json, metrics.csv or Hydra's .hydra/ (a run that never got far)."""
    return (p / SUMMARY).is_file() or (p / METRICS).is_file() or (p / HYDRA_DIR).is_dir()
