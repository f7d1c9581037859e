"""Assemble and write the report: report.md, tables/*.csv|.tex, runs.csv, figures/*.png, all under OUT.

Each section (sections.py, optional.py) returns its markdown, tables and
figures; this module only puts them in order and writes them. A report is replaced, not patched:
it is written into a fresh folder beside OUT and swapped in whole (`swap_in`), so every file in
OUT comes from one call, and a call that fails leaves the previous report as it was.
"""
from __future__ import annotations

import json
import secrets
import shutil
import time
from pathlib import Path

import pandas as pd

from ..base.errors import DropbnError
from ..record.folders import not_a_folder, replace_folder
from ..record.identity import LOCAL_PATHS
from ..record.layout import TMP_SUFFIX, atomic_write_bytes, atomic_write_text
from . import glance as G
from . import optional as O
from . import sections as S
from .collect import Collection
from .markdown import to_latex

# report.md, top to bottom; a section that does not apply returns None
SECTIONS = (S.header, G.at_a_glance, S.article_notes, S.comparison, S.claims, S.per_configuration, O.anchors, S.problems,
            S.main_figures, S.convergence, O.learning_rate, O.training_set_size, O.dropout_rate,
            O.placement, O.variance_shift, O.inference)


def check_out(out: Path, run_paths) -> None:
    """A report never writes into a run folder, nor over a file."""
    o = out.resolve()
    for p in run_paths:
        rp = Path(p).resolve()
        if o == rp or rp in o.parents:
            raise DropbnError(f"report: --out {out} is inside the run folder {p}; reports never write into runs")
    why = not_a_folder(out)
    if why:
        raise DropbnError(f"report: --out {out} {why}; must be a folder path (created if missing)")


class Writer:
    """Writes the files of one report under `out` and remembers their paths (relative to `out`)."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.files: list[str] = []

    def text(self, rel: str, text: str) -> None:
        atomic_write_text(text, self.out / rel)
        self.files.append(rel)

    def table(self, t: S.Table) -> None:
        self.text(f"tables/{t.name}.csv", t.df.to_csv(index=t.index))
        if t.latex:
            self.text(f"tables/{t.name}.tex", to_latex(t.df, index=t.index))

    def figure(self, f: S.Figure) -> None:
        atomic_write_bytes(f.png, self.out / f.path)
        self.files.append(f.path)


def build(coll: Collection, out: Path, baseline: str = "reg=none", sources=(), preamble: str = "",
          extra=(), claim_set=None, registration=None) -> Path:
    """Write the report of `coll` under `out`; returns the path of report.md.

    `preamble`: Markdown right after the header; `extra`: more sections (callables ctx -> Section)
    before '## Files' (a study's tuned-hyperparameters section, dropbn/report/study_report.py); `claim_set`:
    the claims checked (claim_file.ClaimSet; None: the default file); `registration`: theirs, if any."""
    ctx = S.Context.of(coll, baseline, sources)
    ctx.claim_set, ctx.registration = claim_set, registration
    out = Path(out)
    w = Writer(fresh_folder(out))
    try:
        _write(w, ctx, preamble, extra, coll)
        swap_in(w.out, out)
    except BaseException as e:
        shutil.rmtree(w.out, ignore_errors=True)
        if isinstance(e, OSError):  # disk full, permissions ...: the old report stays
            raise DropbnError(f"report: cannot write {out} ({e.strerror or type(e).__name__}); "
                              f"the previous report, if any, is unchanged") from None
        raise
    return out / "report.md"


def _write(w: Writer, ctx, preamble: str, extra, coll: Collection) -> None:
    md: list[str] = []
    intro = (lambda ctx: S.Section([preamble])) if preamble else None
    for section in (SECTIONS[0], *([intro] if intro else []), *SECTIONS[1:], *extra):
        s = section(ctx)
        if s is None:
            continue
        for t in s.tables:
            w.table(t)
        for f in s.figures:
            w.figure(f)
        md += s.md
    md.append("## Files\n")
    md.append("\n".join(f"- `{f}`" for f in sorted(set(w.files + ["runs.csv"]))) + "\n")
    w.text("runs.csv", runs_csv(coll.runs))
    w.text("report.md", "\n".join(md))


STALE_SECONDS = 3600  # a temp folder of a report call this old was left by a killed call


def fresh_folder(out: Path) -> Path:
    """A new empty folder beside `out` (same file system, so it can be renamed over it), named like
    the temp files of atomic writes: .<name>.<random>.tmp."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.parent / f".{out.name}.{secrets.token_hex(4)}{TMP_SUFFIX}"
        tmp.mkdir()
    except OSError as e:
        raise DropbnError(f"report: cannot write into {out.parent} ({e.strerror or type(e).__name__})") from None
    return tmp


def swap_in(new: Path, out: Path) -> None:
    """`new` becomes `out` whole (dropbn/base/folders.py); then old temp folders of killed calls go."""
    replace_folder(new, out, aside=f".{out.name}.{secrets.token_hex(4)}.old{TMP_SUFFIX}")
    _remove_leftovers(out)


def _remove_leftovers(out: Path) -> None:
    """Temp folders of report calls that were killed mid-write (older than STALE_SECONDS: a call
    still writing keeps its own)."""
    now = time.time()
    for p in out.parent.glob(f".{out.name}.*{TMP_SUFFIX}"):
        try:
            if p.is_dir() and now - p.stat().st_mtime > STALE_SECONDS:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


# Where data lived on the machine that trained: runs.csv keeps only the file or folder name, so a
# committed report carries no absolute path of one machine (the runs' identity uses data.fingerprint).
MACHINE_PATH_COLUMNS = tuple(f"cfg.{k}" for k in ("data.path", *LOCAL_PATHS))


def runs_csv(runs: pd.DataFrame) -> str:
    r = runs.copy()
    r["label"] = r["label"].astype(str)
    for c in MACHINE_PATH_COLUMNS:
        if c in r:
            r[c] = r[c].map(lambda v: Path(v).name if isinstance(v, str) and Path(v).is_absolute() else v)
    for c in r.columns:
        if r[c].map(lambda v: isinstance(v, (dict, list))).any():
            r[c] = r[c].map(lambda v: json.dumps(v) if isinstance(v, (dict, list)) else v)
    return r.to_csv(index=False)
