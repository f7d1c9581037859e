"""Which folders are runs: the one scanner every command uses to find runs. It only reads.

A run folder holds summary.json, metrics.csv or Hydra's .hydra/ (a run that never got far);
for `dropbn status`, a lease file (claim.<n>.json) as well: a run whose process has just
started; for `dropbn diagnose`, checkpoint.pt: a model to rebuild. The scan walks each root
top-down in name order (a root may itself be a run), never enters a run folder, a hidden folder
(.hydra/ included) or a report's output (a folder holding report.md), and lists each run once.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..base.errors import DropbnError
from . import lease
from .layout import CHECKPOINT, HYDRA_DIR, METRICS, RECORD_FILES, SUMMARY, finished_problem
from .reader import read_metrics, read_summary
from .states import FINISHED

REPORT_MARK = "report.md"  # a folder holding this is a report's output, not a run


def is_run_dir(p) -> bool:
    """A run folder holds summary.json, metrics.csv or Hydra's .hydra/ (a run that never got far)."""
    p = Path(p)
    return (p / SUMMARY).is_file() or (p / METRICS).is_file() or (p / HYDRA_DIR).is_dir()


@dataclass
class Scan:
    found: list = field(default_factory=list)    # [(root, run folder)] in walk order
    skipped: list = field(default_factory=list)  # [(folder, why)]: leaf folders that hold no run


def find_runs(roots, leases: bool = False, checkpoints: bool = False, command: str = "") -> Scan:
    """The run folders at or below each root (module docstring). `leases` / `checkpoints`: a folder
    holding only a lease file / only checkpoint.pt is a run too. A root that is not a folder raises
    DropbnError("<command>: <root>: no such folder")."""
    scan, seen = Scan(), set()
    for root in map(Path, roots):
        if not root.is_dir():
            raise DropbnError(f"{command + ': ' if command else ''}{root}: no such folder")
        for here, dirs, _files in os.walk(root):
            p = Path(here)
            dirs.sort()
            if (p / REPORT_MARK).is_file():   # an earlier report's output
                dirs[:] = []
                continue
            if is_run_dir(p) or (leases and lease.has_lease(p)) or (checkpoints and (p / CHECKPOINT).is_file()):
                dirs[:] = []
                key = p.resolve()
                if key not in seen:
                    seen.add(key)
                    scan.found.append((root, p))
                continue
            if not dirs and p != root:
                scan.skipped.append((str(p), "no summary.json, metrics.csv or .hydra/"))
            dirs[:] = [d for d in dirs if not d.startswith(".")]
    return scan


def run_folders(roots, **kw) -> list[Path]:
    return [f for _, f in find_runs(roots, **kw).found]


def finished_runs(root) -> list[tuple[Path, dict]]:
    """(run folder, summary) of every finished (completed or diverged) run under root."""
    out = []
    for folder in run_folders([root]):
        s = read_summary(folder)
        if s is not None and s.get("status") in FINISHED:
            out.append((folder, s))
    return out


def finished_records(root) -> list[Path]:
    """The record files (RECORD_FILES) of every finished run at or below `root`, whose summary and
    metrics agree: what to commit of a sweep that is still running."""
    out = []
    for folder, s in finished_runs(root):
        if finished_problem(s, read_metrics(folder), None):
            continue
        out += [folder / n for n in RECORD_FILES if (folder / n).is_file()]
    return out
