"""One run's folder and the files in it (checkpoint.pt: dropbn.train.checkpoint). Making a RunDir
creates nothing: a folder is created by the first file written into it."""
from __future__ import annotations

import os
from pathlib import Path

from ..base.errors import DropbnError
from . import reader
from .layout import CHECKPOINT, METRICS, SUMMARY, TRAIN_LOG, atomic_write_json, atomic_write_text, rows_to_csv
from .states import COMPLETED, FINISHED


class RunDir:
    """One run's folder and the files in it (checkpoint.pt: dropbn.train.checkpoint)."""

    def __init__(self, path):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def read_summary(self) -> dict | None:
        return reader.read_summary(self.path)

    def read_metrics(self) -> list[dict] | None:
        """metrics.csv's rows (values as text); None when it is missing or unreadable."""
        return reader.read_metrics(self.path)

    def check_file_types(self) -> None:
        """One line (DropbnError) for a run file that is there but not a file (e.g. a folder)."""
        for name in (SUMMARY, METRICS, CHECKPOINT, TRAIN_LOG):
            p = self.file(name)
            if os.path.lexists(p) and not p.is_file():
                raise DropbnError(f"{p} is not a file (a folder?); remove it, or train this run in another folder")

    def is_completed(self) -> bool:
        s = self.read_summary()
        return bool(s) and s.get("status") == COMPLETED

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
