"""Assemble and write the report: report.md, tables/*.csv|.tex, runs.csv, figures/*.png -- all atomically, all under OUT.

Each section (sections.py, optional.py) returns its markdown, tables and
figures; this module only puts them in order and writes them.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..base.errors import DropbnError
from ..record.identity import LOCAL_PATHS
from ..record.layout import atomic_write_bytes, atomic_write_text
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
    if o.exists() and not o.is_dir():
        raise DropbnError(f"report: --out {out} exists and is not a folder")


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
    w = Writer(out)
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
    return w.out / "report.md"


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
