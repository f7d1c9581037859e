"""TensorBoard: the event file a run writes (`dropbn export tensorboard`, dropbn/commands/export_cmd.py,
writes the same events for finished runs).

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

import json
from pathlib import Path

from ..base.errors import DropbnError
from ..record.identity import NON_RESULT_KEYS

try:  # optional dependency (the `tracking` extra)
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams as hparams_summaries
except ImportError:
    SummaryWriter = hparams_summaries = None

EVENTS_GLOB = "events.out.tfevents.*"
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
