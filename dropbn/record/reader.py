"""Reading a run folder's files: one reader per file, and none of them writes or creates anything.

summary.json (a JSON object), metrics.csv (rows of text values), .hydra/config.yaml (the
recorded config). Each returns None where the file is missing or unreadable; `load_summary`
also says why, for the report's list of skipped runs.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import yaml

from .layout import HYDRA_CONFIG, METRICS, SUMMARY


def load_summary(folder) -> tuple[dict | None, str | None]:
    """(summary.json as a dict, None), or (None, why it cannot be read) where it is there but unreadable,
    or (None, None) where there is none."""
    p = Path(folder) / SUMMARY
    if not p.is_file():
        return None, None
    try:
        s = json.loads(p.read_text())
        if not isinstance(s, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        return None, f"unreadable summary.json ({type(e).__name__}: {str(e)[:80]})"
    return s, None


def read_summary(folder) -> dict | None:
    """summary.json as a dict; None when it is missing, unreadable or not a JSON object."""
    try:
        s = json.loads((Path(folder) / SUMMARY).read_text())
    except (OSError, ValueError):
        return None
    return s if isinstance(s, dict) else None


def read_metrics(folder) -> list[dict] | None:
    """metrics.csv's rows (values as text); None when it is missing or unreadable."""
    try:
        with open(Path(folder) / METRICS, newline="") as f:
            return [row for row in csv.DictReader(f) if row]
    except (OSError, UnicodeDecodeError, csv.Error):
        return None


def metrics_path(folder) -> Path:
    """Where metrics.csv is, for a reader that parses it into a table itself (the report, with pandas)."""
    return Path(folder) / METRICS


def read_hydra_config(folder) -> dict | None:
    """.hydra/config.yaml, the recorded config of a run that may have no summary yet."""
    try:
        cfg = yaml.safe_load((Path(folder) / HYDRA_CONFIG).read_text())
    except (OSError, yaml.YAMLError):
        return None
    return cfg if isinstance(cfg, dict) else None


def read_config(folder, summary: dict | None = None) -> dict | None:
    """The run's config: its summary's, else .hydra/config.yaml's."""
    cfg = (summary or {}).get("config")
    return cfg if isinstance(cfg, dict) else read_hydra_config(folder)
