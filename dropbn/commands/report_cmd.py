"""`dropbn report DIR [DIR ...] [--out OUT] [--baseline reg=none] [--claims FILE ...]`.

OUT defaults to DIR/report for a single sweep folder, and to a sibling
`<DIR>-report` when DIR is itself one run folder (a report never writes into
a run folder).  With several DIRs, --out is required.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..base.errors import DropbnError
from ..record.scan import is_run_dir

DESCRIPTION = """Collect every run under the given folders and write a comparison report:
report.md (the article's comparison table measured, a claims check, per-configuration
statistics, published numbers next to ours, failed / diverged / unfinished runs), tables/*.csv|.tex,
runs.csv and figures/*.png."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # a user error: one line, exit 2 (via DropbnError)
        raise DropbnError(f"report: {message}")


def parser() -> argparse.ArgumentParser:
    from ..report.collect import KIND_ORDER  # the report's kinds, named in one place
    p = _Parser(prog="dropbn report", description=DESCRIPTION)
    p.add_argument("dirs", nargs="+", metavar="DIR", help="sweep folder(s) or run folder(s), searched recursively")
    p.add_argument("--out", metavar="OUT", help="output folder (default: DIR/report for one sweep folder; "
                                                "required with several DIRs)")
    p.add_argument("--baseline", default="reg=none", metavar="KEY=VALUE",
                   help=f"which configuration is the baseline: reg=<kind> ({', '.join(KIND_ORDER)}) "
                        "or any config key, e.g. optim.lr=0.1 (default: reg=none)")
    p.add_argument("--claims", action="append", default=[], metavar="FILE",
                   help="a claims file (repeatable; replaces the default, the study's or sweep's registered "
                        "claims; pass configs/claims/article.yaml too to combine them; docs/claims.md)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar while reading runs")
    return p


def default_out(dirs: list[Path]) -> Path:
    if len(dirs) > 1:
        raise DropbnError("report: several DIRs given: choose where the report goes with --out OUT")
    d = dirs[0]
    if is_run_dir(d):
        return d.parent / f"{d.name}-report"
    return d / "report"


def main(argv=None) -> Path:
    args = parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    # pandas, scipy and matplotlib take seconds to import (`--help` 0.2 s instead of 5+ s): only now
    from ..report import render
    from ..report.collect import collect
    from ..report.tables import parse_baseline

    dirs = [Path(d) for d in args.dirs]
    for d in dirs:
        if not d.is_dir():
            raise DropbnError(f"report: {d}: no such folder")
    parse_baseline(args.baseline)
    from ..report import study_report as study
    from ..config.registration import claims_for

    claim_set, registration = claims_for(dirs, args.claims)  # a bad file: one line, exit 2, before any run is read

    if len(dirs) == 1 and study.is_study_dir(dirs[0]):  # claims from final/, tuned section from tune/
        path = study.build(dirs[0], Path(args.out) if args.out else None, args.baseline,
                           progress=False if args.no_progress else None, claims=args.claims)
        print(path)
        return path
    out = Path(args.out) if args.out else default_out(dirs)
    print(f"reading runs under {', '.join(str(d) for d in dirs)} ...", file=sys.stderr)
    coll = collect(dirs, progress=False if args.no_progress else None)
    render.check_out(out, coll.runs["path"])
    counts = coll.runs["status"].value_counts().to_dict()
    print(f"{len(coll.runs)} runs ({', '.join(f'{v} {k}' for k, v in counts.items())}), "
          f"{coll.runs['label'].nunique()} configurations; varying: {', '.join(coll.varying) or 'nothing'}",
          file=sys.stderr)
    for p, why in coll.skipped:
        print(f"skipped {p}: {why}", file=sys.stderr)
    path = render.build(coll, out, args.baseline, sources=[str(d) for d in dirs], claim_set=claim_set,
                        registration=registration)
    print(path)
    return path
