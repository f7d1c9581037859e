"""`dropbn export tensorboard DIR... --out OUT`: TensorBoard event files of finished runs.

For every finished (completed or diverged) run under DIR, the events a run with
train.tensorboard=true writes (dropbn/train/tensorboard.py), from its metrics.csv and
summary.json, to OUT/<DIR name>/<run folder>/; it never writes into run folders.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from ..base.errors import DropbnError
from ..record.folders import not_a_folder, replace_folder
from ..record.layout import CHECKPOINT
from ..record.reader import read_metrics
from ..record.scan import finished_runs, is_run_dir
from ..train.tensorboard import EVENTS_GLOB, TensorBoardLog, require


def _check_dest(dest: Path) -> None:
    """An export folder must lie outside every run folder and hold nothing but earlier exported events."""
    for p in (dest, *dest.parents):
        if is_run_dir(p) or (p / CHECKPOINT).exists():
            raise DropbnError(f"--out: {dest} would be inside the run folder {p}; dropbn never writes "
                              f"into run folders: choose another --out")
    if dest.is_dir() and any(not c.match(EVENTS_GLOB) for c in dest.iterdir()):
        raise DropbnError(f"--out: {dest} exists and holds more than TensorBoard events: choose another --out")


def export(dirs: list[Path], out: Path) -> list[Path]:
    """Write the events of every finished run under dirs into out; returns the folders written."""
    require()
    why = not_a_folder(out)
    if why:
        raise DropbnError(f"--out {out} {why}; must be a folder path (created if missing)")
    out = out.expanduser().resolve()
    plan = []
    for d in dirs:
        d = d.expanduser().resolve()
        if not d.is_dir():
            raise DropbnError(f"{d}: no such folder")
        for run_dir, s in finished_runs(d):
            dest = out / d.name / run_dir.relative_to(d)
            _check_dest(dest)
            plan.append((run_dir, s, dest))
    if not plan:
        raise DropbnError(f"no finished runs (summary.json with status completed or diverged) under "
                          f"{', '.join(str(d) for d in dirs)}")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for run_dir, s, dest in plan:
        tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
        try:
            log = TensorBoardLog(True)
            log.open(tmp, [])
            for row in read_metrics(run_dir) or []:
                log.epoch(row)
            log.finish(s.get("config") or {}, s)
            log.close()
            replace_folder(tmp, dest, aside=f".{dest.name}.old-{tmp.name}")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        written.append(dest)
    return written


def main(argv: list[str]) -> int:
    """`dropbn export tensorboard DIR... --out OUT`."""
    ap = argparse.ArgumentParser(prog="dropbn export",
                                 description="Write TensorBoard event files for the finished runs under "
                                             "DIR (from metrics.csv and summary.json), one subfolder per run.")
    ap.add_argument("format", choices=["tensorboard"], help="what to export to")
    ap.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="folders with run folders (searched recursively)")
    ap.add_argument("--out", required=True, type=Path, help="where the event files go (never a run folder)")
    a = ap.parse_args(argv)
    written = export(a.dirs, a.out)
    print(f"wrote TensorBoard events of {len(written)} runs to {a.out.expanduser().resolve()}; "
          f"view them with: tensorboard --logdir {a.out}")
    return 0
