"""Output folders: whether a path can be one, and replacing a folder whole (a report, an export).

No torch, no pandas: the report, the exporter and config validation all use it. (The folder
counterpart of layout.py's atomic file writes, whose directory fsync it shares.)
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from .layout import fsync_dir


def not_a_folder(path) -> str | None:
    """Why `path` cannot be (or become) a folder: it is a file, or lies below one; None if it can."""
    p = Path(path).expanduser()
    for q in (p, *p.parents):
        if os.path.exists(q):
            if not os.path.isdir(q):
                return "is a file" if q == p else f"is below the file {q}"
            return None
    return None


def replace_folder(new: Path, dest: Path, aside: str) -> None:
    """Make the complete folder `new` the folder `dest`: `dest` moves aside (a rename to `aside`, a name
    in the same folder), `new` takes its name (a rename), then the old one is deleted. At every moment
    `dest` is either the whole old folder or the whole new one (absent only for the instant between the
    renames), never a mix; if the second rename fails the old folder is put back."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if dest.is_dir():
        old = dest.with_name(aside)
        os.rename(dest, old)
    try:
        os.rename(new, dest)
    except OSError:
        if old is not None:
            os.rename(old, dest)
        raise
    fsync_dir(dest.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
