"""The run folder, torch-free: file names, atomic writes, summary/metrics, and which config keys identify a run.

What `dropbn train` writes and `dropbn report` reads. The report never imports
torch, so neither does this module; checkpoint.pt and the environment record
(both need torch) live in dropbn/checkpoint.py.

A run's identity is its recorded config (`recorded_config`: the resolved config
plus the data's content fingerprint) less the keys that say where or how it runs
(NON_RESULT_KEYS). A folder is reused only by a run of the same identity
(`differing_keys`, `IdentityError`), and a finished run is trusted only while its
summary, metrics and checkpoint agree (`finished_problem`).
"""
from __future__ import annotations

import copy
import csv
import io
import json
import os
import tempfile
from pathlib import Path

from .errors import DropbnError
from .identity import FINGERPRINT_KEY

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.csv"
SUMMARY = "summary.json"
MODEL_TXT = "model.txt"
TRAIN_LOG = "train.log"
HYDRA_DIR = ".hydra"                 # the record of the run's config and overrides, in Hydra's layout
HYDRA_CONFIG = f"{HYDRA_DIR}/config.yaml"        # the recorded config (as in summary.json)
HYDRA_OVERRIDES = f"{HYDRA_DIR}/overrides.yaml"  # the command line's overrides of this run
HYDRA_HYDRA = f"{HYDRA_DIR}/hydra.yaml"          # Hydra's own config of the job
FOLDER_NAME = f"{HYDRA_DIR}/folder_name.txt"     # the folder's name before shortening (dropbn.identity)
TMP_SUFFIX = ".tmp"                  # atomic writes: .<name>.<random>.tmp, renamed over <name>
FINISHED = ("completed", "diverged")  # statuses of a run that ended: re-running skips it
# A finished run's record: the files committed under results/ (.gitignore lists the same names), from
# which a report regenerates and a re-run skips the run. The rest of a folder stays on its machine:
# checkpoint.pt (large), train.log and .hydra/hydra.yaml (absolute paths of the machine), claims.
RECORD_FILES = (SUMMARY, METRICS, MODEL_TXT, HYDRA_CONFIG, HYDRA_OVERRIDES, FOLDER_NAME)


# ---------------------------------------------------------------- which config keys identify a run
# Keys that say where or how a run executes, not what it computes. Folder names, resume and report
# grouping all start from this one list; where a use differs, the difference is named below, once.
# data.path says where the data is, not what it holds: the data takes part by its content
# fingerprint, data.fingerprint (dropbn.identity), which the recorded config adds and folder names show.
# train.eval_batch_size: evaluation is in eval mode (dropout off, BN running statistics; the diagnostics
# pool their sums over batches), so the batch size changes only float rounding, like train.threads.
NON_RESULT_KEYS = ("name", "out_root", "device", "train.force", "train.progress", "train.threads",
                   "train.eval_batch_size", "train.diagnostics", "train.tensorboard", "train.objective",
                   "train.claim_timeout", "data.root", "data.cache_dir", "data.download", "data.path", "study",
                   "report.claims")
# Machine-local locations: recorded as null, so that run records carry no absolute paths of one machine.
LOCAL_PATHS = ("data.root", "data.cache_dir")
# Command-line choices that are not config values (a preset, a launcher): only folder names see them.
LAUNCH_KEYS = ("exp", "+exp", "hydra/launcher", "hydra.launcher.n_jobs")
# The seeds change results, so folder names and the identity keep them; the report pools runs over
# them (replicates: the seed of the run, and that of its training subset and validation split).
POOLED_IN_REPORT = ("seed", "data.split_seed")

FOLDER_NAME_EXCLUDED = (*LAUNCH_KEYS, *NON_RESULT_KEYS)  # = hydra.job...exclude_keys in configs/train.yaml
REPORT_IGNORED = (*POOLED_IN_REPORT, *NON_RESULT_KEYS)


def among(key: str, keys) -> bool:
    """Whether dotted `key` is one of `keys` or lies under one of them (a subtree such as `study`)."""
    return any(key == k or key.startswith(k + ".") for k in keys)


def flatten(d: dict, prefix: str = "") -> dict:
    """{"optim": {"lr": 0.1}} -> {"optim.lr": 0.1} (lists stay values)."""
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _set(config: dict, key: str, value) -> None:
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value


def recorded_config(config: dict, fingerprint: str) -> dict:
    """What a run folder records as its config (summary.json, checkpoint.pt, .hydra/config.yaml): the
    resolved config with the data's content fingerprint as data.fingerprint and LOCAL_PATHS as null."""
    out = copy.deepcopy(config)
    _set(out, FINGERPRINT_KEY, fingerprint)
    for key in LOCAL_PATHS:
        _set(out, key, None)
    return out


def result_config(config: dict) -> dict:
    """A run's identity: its (recorded) config as dotted keys, less NON_RESULT_KEYS."""
    return {k: v for k, v in flatten(config).items() if not among(k, NON_RESULT_KEYS)}


def differing_keys(saved: dict, current: dict) -> list[str]:
    """The identity keys whose values differ. A key that only one side has is not compared: a
    record written before that key existed (or after it was dropped) still matches."""
    a, b = result_config(saved), result_config(current)
    return sorted(k for k in a.keys() & b.keys() if a[k] != b[k])


def same_config(saved: dict, current: dict) -> bool:
    """Whether a recorded config and the current one describe the same run (NON_RESULT_KEYS aside)."""
    return not differing_keys(saved, current)


class IdentityError(DropbnError):
    """A run folder holds a run of another config."""

    def __init__(self, path, saved: dict, current: dict):
        keys = differing_keys(saved, current)
        a, b = result_config(saved), result_config(current)
        shown = ", ".join(f"{k}={_show(a[k])} (now {_show(b[k])})" for k in keys[:5])
        more = f" and {len(keys) - 5} more" if len(keys) > 5 else ""
        super().__init__(f"{path} holds a run of another config: {shown}{more}; train.force=true "
                         f"replaces it, or choose another folder (another name=..., or hydra.run.dir=...)")
        self.keys = keys


def _show(v) -> str:
    return json.dumps(v, default=str) if not isinstance(v, str) else v


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
            s = json.loads(self.file(SUMMARY).read_text())
        except (OSError, ValueError):
            return None
        return s if isinstance(s, dict) else None

    def read_metrics(self) -> list[dict] | None:
        """metrics.csv's rows (values as text); None when it is missing or unreadable."""
        try:
            with open(self.file(METRICS), newline="") as f:
                return [row for row in csv.DictReader(f) if row]
        except (OSError, UnicodeDecodeError, csv.Error):
            return None

    def check_file_types(self) -> None:
        """One line (DropbnError) for a run file that is there but not a file (e.g. a folder)."""
        for name in (SUMMARY, METRICS, CHECKPOINT, TRAIN_LOG):
            p = self.file(name)
            if os.path.lexists(p) and not p.is_file():
                raise DropbnError(f"{p} is not a file (a folder?); remove it, or train this run in another folder")

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


def finished_records(root) -> list[Path]:
    """The record files (RECORD_FILES) of every finished run at or below `root`, whose summary and
    metrics agree: what to commit of a sweep that is still running."""
    out = []
    for summary in sorted(Path(root).rglob(SUMMARY)):
        rd = RunDir(summary.parent)
        s = rd.read_summary()
        if not s or s.get("status") not in FINISHED or finished_problem(s, rd.read_metrics(), None):
            continue
        out += [rd.file(n) for n in RECORD_FILES if rd.file(n).is_file()]
    return out


def is_run_dir(p: Path) -> bool:
    """A run folder holds summary.json, metrics.csv or Hydra's .hydra/ (a run that never got far)."""
    return (p / SUMMARY).is_file() or (p / METRICS).is_file() or (p / HYDRA_DIR).is_dir()
