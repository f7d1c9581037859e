"""Pre-registration: the resolved claims (a claims file's content and its sha256), recorded before the
runs that test them train, so a report can tell a claim fixed in advance from one chosen after the
results were seen.

- `dropbn study` records them in selected.yaml (key `registered_claims`) when its final stage starts;
- `dropbn train -m ... report.claims=[FILE]` writes <sweep folder>/registered_claims.yaml before the
  first run of the sweep.

A registration made once is kept while any run it precedes exists; before that, a new call replaces
it. A report marks each row: confirmatory (its claim is in the registration, unchanged: equal
content, equal sha256), exploratory (added or changed later), or, without a registration, not
pre-registered. Pure (yaml, hashlib): no pandas, no torch.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..base.errors import DropbnError
from ..record.layout import atomic_write_text
from ..record.scan import is_run_dir
from .claims_file import ClaimFileError, ClaimSet, load, parse, sha256

NOT_REGISTERED, CONFIRMATORY, EXPLORATORY = "not pre-registered", "confirmatory", "exploratory"
KEY = "registered_claims"                # in a study's selected.yaml
SWEEP_FILE = "registered_claims.yaml"    # in a sweep folder
SELECTED = "selected.yaml"


@dataclass(frozen=True)
class Registration:
    record: dict          # as written: registered_at, before, sources, sha256, content
    claims: ClaimSet      # the registered claims, parsed back
    where: str

    @property
    def digests(self) -> set:
        return {c.digest for c in self.claims.claims} | {t.digest for t in self.claims.trainability}

    def describe(self) -> str:
        r = self.record
        return (f"registered {r.get('registered_at')} before {r.get('before')} ({self.where}; sha256 "
                f"{str(r.get('sha256'))[:12]}…, from {', '.join(r.get('sources') or []) or 'unknown files'})")


def record(claim_set: ClaimSet, before: str) -> dict:
    """The registration of `claim_set`, made now, before `before` (what it precedes, in words)."""
    return {"registered_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "before": before, "sources": [str(s) for s in claim_set.sources],
            "sha256": claim_set.sha256(), "content": claim_set.content()}


def read(rec, where: str) -> Registration:
    """A registration record back into the claims it registered; DropbnError when its content does not
    hash to its sha256 (edited after it was written) or is not a claims file."""
    if not isinstance(rec, dict) or not isinstance(rec.get("content"), dict):
        raise DropbnError(f"{where}: {KEY}: not a claims registration (no content)")
    if sha256(rec["content"]) != rec.get("sha256"):
        raise DropbnError(f"{where}: {KEY}: its content does not match its sha256 (edited after it was "
                          "written): the registration cannot be trusted")
    try:
        cs = parse(rec["content"], f"{where} ({KEY})")
    except ClaimFileError as e:
        raise DropbnError(f"{where}: {KEY}: {e}") from None
    return Registration(rec, dataclasses.replace(cs, sources=tuple(rec.get("sources") or (where,))), where)


def _has_runs(folder: Path) -> bool:
    return folder.is_dir() and any(is_run_dir(p) for p in folder.iterdir() if p.is_dir())


# ---------------------------------------------------------------- a study

def for_study(previous: dict | None, final_dir: Path, claim_set: ClaimSet) -> dict:
    """The registration a study's selected.yaml carries into its final stage: the one it already has
    when a final run exists (the claims were fixed before those ran), else the claims of this call."""
    if isinstance(previous, dict) and previous.get(KEY) and _has_runs(Path(final_dir)):
        return previous[KEY]
    return record(claim_set, "the final runs")


def read_yaml(path: Path) -> dict | None:
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return None
    return doc if isinstance(doc, dict) else None


# ---------------------------------------------------------------- a sweep

def register_sweep(sweep_dir, claim_set: ClaimSet) -> Path:
    """<sweep_dir>/registered_claims.yaml, before the sweep's first run: kept as it is when the sweep
    already has runs and a registration, else (re)written with `claim_set`."""
    path = Path(sweep_dir) / SWEEP_FILE
    if path.is_file() and _has_runs(Path(sweep_dir)):
        return path
    atomic_write_text("# dropbn: the claims registered before this sweep's runs (docs/claims.md).\n"
                      + yaml.safe_dump({KEY: record(claim_set, "the runs of this sweep")}, sort_keys=False,
                                       allow_unicode=True, width=110), path)
    return path


# ---------------------------------------------------------------- what a report finds

def find(dirs) -> Registration | None:
    """The registration of one report folder: a study's (selected.yaml) or a sweep's file; None elsewhere."""
    if len(dirs) != 1:
        return None
    d = Path(dirs[0])
    for path in (d / SELECTED, d / SWEEP_FILE):
        doc = read_yaml(path) if path.is_file() else None
        if doc and doc.get(KEY):
            return read(doc[KEY], str(path))
    return None


def claims_for(dirs, files=()) -> tuple[ClaimSet, Registration | None]:
    """The claims a report of `dirs` checks, and their registration: the files given (--claims), else
    the registered claims, else the default file."""
    reg = find(dirs)
    if files:
        return load(files), reg
    return (reg.claims if reg is not None else load()), reg
