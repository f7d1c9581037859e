"""TensorBoard: a run's own event file, and `dropbn export tensorboard` for finished runs.

With train.tensorboard=true the training loop writes into the run folder itself
(`TensorBoardLog`): one scalar per metrics.csv column per epoch, step = epoch
(acc/train, acc/val, acc/test, loss/..., lr, seconds/epoch, ...), and at the end
the run's hyperparameters (its resolved config, less the keys that say where or
how it ran) with its final numbers from summary.json (summary/final_test_acc, ...)
for the HPARAMS tab. The hparams summaries go through the run's own writer:
torch's SummaryWriter.add_hparams would put them into a new subfolder, which
TensorBoard shows as another run. A resumed run purges the epochs it re-runs
(purge_step); a fresh start purges everything an earlier attempt wrote.

`dropbn export tensorboard DIR... --out OUT` writes the same events for every
finished (completed or diverged) run under DIR from its metrics.csv and
summary.json, to OUT/<DIR name>/<run folder>/; it never writes into run folders.

TensorBoard is optional: pip install 'dropbn[tracking]'.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import tempfile
from pathlib import Path

from ..base.errors import DropbnError
from ..record.folders import not_a_folder, replace_folder
from ..record.layout import CHECKPOINT, FINISHED, METRICS, NON_RESULT_KEYS, SUMMARY

try:  # optional dependency (the `tracking` extra)
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams as hparams_summaries
except ImportError:
    SummaryWriter = hparams_summaries = None

EVENTS_GLOB = "events.out.tfevents.*"
RUN_MARKERS = (SUMMARY, METRICS, CHECKPOINT, ".hydra")  # a folder holding one of these is a run folder
# summary.json numbers shown next to the hyperparameters (those a run has)
SUMMARY_METRICS = ("final_test_acc", "final_test_loss", "best_test_acc", "final_train_acc", "final_train_loss",
                   "generalization_gap", "final_val_acc", "final_val_loss", "best_val_acc",
                   "epochs_completed", "epochs_to_target", "seconds_per_epoch", "train_seconds")


def require() -> None:
    if SummaryWriter is None:
        raise DropbnError("TensorBoard is not installed: pip install 'dropbn[tracking]' (or pip install tensorboard)")


def tag(column: str) -> str | None:
    """TensorBoard tag of a metrics.csv column: test_acc -> acc/test, epoch_seconds -> seconds/epoch, lr -> lr."""
    if column in ("epoch", "step"):
        return None
    name, _, kind = column.rpartition("_")
    return f"{kind}/{name}" if name and kind in ("acc", "loss", "seconds") else column


def _hparam(value):
    """A config value as TensorBoard takes it: number or string (lists and null spelled as on the command line)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float, str)):
        return value
    if value is None:
        return "null"
    return json.dumps(value, separators=(",", ":"))


def hyperparameters(config: dict) -> dict:
    """The run's config as flat dotted keys, less the keys that say where or how it ran."""
    out: dict = {}

    def walk(node, prefix):
        for k, v in node.items():
            key = f"{prefix}{k}"
            if key in NON_RESULT_KEYS:
                continue
            if isinstance(v, dict):
                walk(v, key + ".")
            else:
                out[key] = _hparam(v)

    walk(config, "")
    return out


def _number(v) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


class TensorBoardLog:
    """The event file in a run folder; every method is a no-op when disabled.

    The training loop calls open(run_dir, done_rows) once it knows where it
    resumes, epoch(row) after each epoch, finish(config, summary) at the end and
    close() when it stops.
    """

    def __init__(self, enabled: bool):
        if enabled:
            require()
        self.enabled = enabled
        self.writer = None
        self.rows = 0  # metrics rows written: TensorBoard's step (the epoch in an epoch run)

    def open(self, run_dir, done_rows: list[dict]) -> None:
        if not self.enabled:
            return
        had_events = any(Path(run_dir).glob(EVENTS_GLOB))
        resume = len(done_rows)
        self.rows = resume if had_events else 0
        # TensorBoard drops events with step >= purge_step that earlier files hold
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=resume + 1 if resume else 0)
        if not had_events:  # tensorboard switched on for a resumed run: the epochs it already has
            for row in done_rows:
                self.epoch(row)

    def epoch(self, row: dict) -> None:
        if self.writer is None:
            return
        self.rows += 1
        step = self.rows
        for column, value in row.items():
            t, v = tag(column), _number(value)
            if t is not None and v is not None:
                self.writer.add_scalar(t, v, step)
        self.writer.flush()  # a live TensorBoard sees each epoch; a killed run keeps what it wrote

    def finish(self, config: dict, summary: dict) -> None:
        if self.writer is None:
            return
        hp = hyperparameters(config)
        hp["status"] = summary.get("status", "")
        metrics = {f"summary/{k}": summary[k] for k in SUMMARY_METRICS if _number(summary.get(k)) is not None}
        for summary_pb in hparams_summaries(hp, metrics):
            self.writer.file_writer.add_summary(summary_pb)
        step = self.rows
        for t, v in metrics.items():
            self.writer.add_scalar(t, float(v), step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def read_rows(run_dir: Path) -> list[dict]:
    try:
        with open(run_dir / METRICS, newline="") as f:
            return list(csv.DictReader(f))
    except OSError:
        return []


def finished_runs(root: Path) -> list[tuple[Path, dict]]:
    """(run folder, summary) of every completed or diverged run under root, in path order."""
    runs = []
    for p in sorted(root.rglob(SUMMARY)):
        try:
            s = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(s, dict) and s.get("status") in FINISHED:
            runs.append((p.parent, s))
    return runs


def _check_dest(dest: Path) -> None:
    """An export folder must lie outside every run folder and hold nothing but earlier exported events."""
    for p in (dest, *dest.parents):
        if any((p / marker).exists() for marker in RUN_MARKERS):
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
            for row in read_rows(run_dir):
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
