"""The run folder's layout, torch-free: its file names, atomic writes, and when its files agree.

What `dropbn train` writes and `dropbn report` reads. The report never imports
torch, so neither does this module; checkpoint.pt and the environment record
(both need torch) live in dropbn/train/checkpoint.py. Which config keys identify a
run is dropbn/record/identity.py; one folder's files, dropbn/record/run_dir.py.

A finished run is trusted only while its summary, metrics and checkpoint agree
(`finished_problem`).
"""
from __future__ import annotations

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
PREDICTIONS = "predictions.npz"     # predicted classes per test / validation image (record/predictions.py)
TRAIN_LOG = "train.log"
HYDRA_DIR = ".hydra"                 # the record of the run's config and overrides, in Hydra's layout
HYDRA_CONFIG = f"{HYDRA_DIR}/config.yaml"        # the recorded config (as in summary.json)
HYDRA_OVERRIDES = f"{HYDRA_DIR}/overrides.yaml"  # the command line's overrides of this run
HYDRA_HYDRA = f"{HYDRA_DIR}/hydra.yaml"          # Hydra's own config of the job
FOLDER_NAME = f"{HYDRA_DIR}/folder_name.txt"     # the folder's name before shortening (dropbn.record.identity)
TMP_SUFFIX = ".tmp"                  # atomic writes: .<name>.<random>.tmp, renamed over <name>
# A finished run's record: the files committed under results/ (.gitignore lists the same names), from
# which a report regenerates and a re-run skips the run. The rest of a folder stays on its machine:
# checkpoint.pt (large), train.log and .hydra/hydra.yaml (absolute paths of the machine), claims.
RECORD_FILES = (SUMMARY, METRICS, MODEL_TXT, PREDICTIONS, HYDRA_CONFIG, HYDRA_OVERRIDES, FOLDER_NAME)
RESULTS_DIR = "results"  # the default out_root: the runs folder whose committed records are outputs, not code


# ---------------------------------------------------------------- atomic writes

def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def fsync_dir(path: Path) -> None:
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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
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
    fsync_dir(path.parent)


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


def finished_problem(summary: dict, rows: list[dict] | None, checkpoint_rows: int | None) -> str | None:
    """Why the files of a finished run disagree, or None when they agree: the summary's
    epochs_completed is where metrics.csv (`rows`) ends, and checkpoint.pt, where there is one,
    holds as many metrics rows as metrics.csv (`checkpoint_rows`). A committed run record,
    summary.json and metrics.csv without a checkpoint, is complete."""
    done = summary.get("epochs_completed")
    if not isinstance(done, (int, float)) or isinstance(done, bool):
        return f"summary.json has no epoch count (epochs_completed={done!r})"
    if rows is None:
        return "metrics.csv is missing or unreadable"
    try:
        last = float(rows[-1]["epoch"]) if rows else 0.0
    except (KeyError, TypeError, ValueError):
        return "metrics.csv has no epoch column"
    if last != done:
        return f"summary.json says {done} epochs, metrics.csv ends at epoch {last:g}"
    if checkpoint_rows is not None and checkpoint_rows != len(rows):
        return f"metrics.csv holds {len(rows)} epochs, checkpoint.pt {checkpoint_rows}"
    return None


def remove_stale_tmp(run_dir) -> list[Path]:
    """Delete the temp files that interrupted atomic writes left in a run folder (and its .hydra/).
    Call it only while this process owns the run (it trains it): another one may be mid-write."""
    removed = []
    for folder in (Path(run_dir), Path(run_dir) / HYDRA_DIR):
        try:
            leftovers = [p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(TMP_SUFFIX)]
        except OSError:
            continue
        for p in leftovers:
            if p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed
