"""`dropbn status`: where a sweep stands, read from its run folders; nothing runs, and only --study
(which validates the study's configs, as `dropbn study` does) loads torch.

    dropbn status results/NAME [DIR ...]     every run folder found under the folders
    dropbn status -m +exp=NAME seed=0,1      the runs `dropbn train` with these arguments would
                                             make (composed with Hydra, as the pre-check does),
                                             missing ones included
    dropbn status --study +exp=NAME [...]    every run of `dropbn study` with these arguments:
                                             its tune runs, then its final runs, named from the
                                             selection once the tune stage has ended (the same
                                             rule the study applies); before that, one line per
                                             variant and final seed, at the tune budget

Each run gets one state:

    completed  summary.json says so          diverged  summary.json says so (finished too)
    running    a live process holds its lease (claim, dropbn/record/lease.py): host:pid, heartbeat age
    failed     summary.json holds the error  partial   k/N epochs in metrics.csv, no live claim
    missing    no run folder yet

A summary line counts the states and estimates the time left: the epochs still to
train times the mean measured seconds per epoch (training + evaluation, metrics.csv),
divided by the number of live workers (distinct claim owners; 1 when none runs now). When
the runs of `-m` or `--study` have no measured epoch yet (new seeds or rates beside a finished
sweep), the seconds per epoch are those of the other runs in their sweep folder, and it says so.
Exit code 0 when every run is finished (completed or diverged), 1 otherwise.
"""
from __future__ import annotations

import math
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..base.errors import DropbnError
from ..record import lease
from ..record.reader import read_config, read_metrics, read_summary
from ..record.scan import find_runs
from ..record.states import FINISHED, MISSING, TERMINAL

STATES = ("completed", "diverged", "running", "partial", "failed", "missing")
EPOCH_COLUMNS = ("epoch_seconds", "eval_seconds")  # metrics.csv: one epoch's wall time, summed

USAGE = """usage: dropbn status DIR [DIR ...] | dropbn status [-m] [OVERRIDES ...]
       dropbn status --study +exp=NAME [OVERRIDES ...]

Show the state of every run of a sweep: completed, diverged, running (claimed by
host:pid), partial k/N epochs, failed (with its error), missing; and an ETA. Give result folders,
or the arguments of `dropbn train -m ...` (the sweep is composed, nothing runs), or after --study
the arguments of `dropbn study` (its tune and final runs, those not yet started included). Exit
code 0 when every run is finished (completed or diverged), 1 otherwise."""


@dataclass
class RunState:
    folder: Path
    state: str
    done: int = 0                     # epochs in metrics.csv
    epochs: int | None = None         # epochs the run trains (its config)
    detail: str = ""
    owner: str | None = None          # host:pid of a live claim
    seconds: list[float] = field(default_factory=list)  # measured seconds of each epoch

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def left(self) -> int | None:
        """Epochs still to train (None: unknown)."""
        if self.finished:
            return 0
        return None if self.epochs is None else max(0, self.epochs - self.done)


def _metrics(folder: Path) -> list[float]:
    """Seconds of each epoch in metrics.csv (training + evaluation)."""
    out = []
    for r in read_metrics(folder) or []:
        try:
            out.append(sum(float(r.get(c) or 0.0) for c in EPOCH_COLUMNS))
        except ValueError:
            out.append(math.nan)
    return out


def _planned_epochs(folder: Path, summary: dict | None) -> int | None:
    """train.epochs of the run: its summary's config, else Hydra's .hydra/config.yaml."""
    cfg = read_config(folder, summary)
    try:
        return int(cfg["train"]["epochs"])
    except (TypeError, KeyError, ValueError):
        return None


def run_state(folder, epochs: int | None = None) -> RunState:
    """The state of the run in `folder` (which need not exist). `epochs`: the planned number of
    epochs when known (a composed sweep), else read from the folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return RunState(folder, MISSING, epochs=epochs)
    summary = read_summary(folder)
    seconds = _metrics(folder)
    st = RunState(folder, "partial", done=len(seconds), seconds=seconds,
                  epochs=epochs if epochs is not None else _planned_epochs(folder, summary))
    status = (summary or {}).get("status")
    if status in FINISHED:
        st.state = status
        st.detail = _finished_detail(summary)
        return st
    claim = lease.current(folder)
    dead = claim.dead_because() if claim is not None else None
    if claim is not None and dead is None:
        st.state, st.owner, st.detail = "running", claim.owner, claim.describe()
    elif status == "failed":
        st.state, st.detail = "failed", _first_line(summary.get("error"))
    elif claim is not None and dead != "released":
        st.detail = f"claim of {claim.owner} is dead: {dead}"
    return st


def _first_line(text) -> str:
    return next((line.strip() for line in str(text or "").splitlines() if line.strip()), "no error recorded")


def _finished_detail(summary: dict) -> str:
    if summary.get("status") == "diverged":
        d = summary.get("diverged_at") or {}
        return f"at epoch {d.get('epoch', '?')}, step {d.get('step', '?')} ({d.get('reason', '?')})"
    for key, label in (("final_test_acc", "test acc"), ("final_val_acc", "val acc")):  # tune runs: no test
        acc = summary.get(key)
        if isinstance(acc, (int, float)) and not isinstance(acc, bool):
            return f"{label} {acc:.4f}"
    return ""


# ---------------------------------------------------------------- which runs
def find_runs_here(roots) -> list[tuple[Path, Path]]:
    """[(root, run folder)] under each root: the runs the record scanner finds, a folder holding only a
    lease (claim) file included."""
    return find_runs(roots, leases=True, command="status").found


def _name(root: Path, folder: Path) -> str:
    rel = os.path.relpath(folder, root)
    return folder.name if rel == "." else rel


def sweep_states(args: list[str]) -> list[tuple[str, RunState]]:
    """The runs `dropbn train <args>` would make, by composing its jobs (Hydra: imported here,
    only on this path, for its start-up cost)."""
    from ..config.precheck import job_folders

    jobs = job_folders(args)
    folders = [f for f, _ in jobs]
    common = Path(os.path.commonpath([os.path.abspath(f) for f in folders])) if folders else Path(".")
    if len(folders) == 1:
        common = common.parent
    return [(_name(common, Path(os.path.abspath(f))), run_state(f, epochs=int(cfg.train.epochs)))
            for f, cfg in jobs]


def study_states(args: list[str]) -> list[tuple[str, RunState]]:
    """The runs `dropbn study <args>` trains (dropbn/study/plan.py: Hydra, imported on this path only).
    A variant's final runs are named once its tune runs have all ended, from the selection the study
    makes of them; before that each final seed is one planned row at the tune budget."""
    from ..study import selection as S
    from ..study.plan import STAGE_FINAL, STAGE_TUNE, Plan

    plan = Plan(args)
    try:
        if plan.spec.searcher == "optuna" and any(v.search for v in plan.variants):
            raise DropbnError("status --study: study.searcher=optuna draws its points as it goes, so its runs "
                              f"are not known in advance; use dropbn status {plan.dir}")
        tune = plan.tune_sweeps()
        rows, finals = [], []
        for v in plan.variants:
            jobs = tune[v.name].jobs
            rows += [(f"{STAGE_TUNE}/{f}", run_state(plan.dir / STAGE_TUNE / f, epochs=int(v.cfg.train.epochs)))
                     for _, _, f in jobs]
            if all(S.read_val_run(plan.dir / STAGE_TUNE, f, 0).status in TERMINAL for _, _, f in jobs):
                best = S.score_variant(plan.dir / STAGE_TUNE, plan.candidates(v, v.grid(), jobs), plan.spec.select)[0]
                epochs = plan.final_epochs(v, best)
                finals += [(f"{STAGE_FINAL}/{f}", run_state(plan.dir / STAGE_FINAL / f, epochs=epochs))
                           for _, _, f in plan.final_sweep(v, best).jobs]
            else:
                epochs = plan.final_epochs(v, None)
                finals += [(f"{STAGE_FINAL}/{v.name},seed={seed}",
                            RunState(plan.dir / STAGE_FINAL, MISSING, epochs=epochs,
                                     detail="planned: named by the selection once the tune runs have ended"))
                           for seed in plan.spec.final_seeds]
        return rows + finals
    finally:
        plan.hy.close()


def folder_states(roots: list[str]) -> list[tuple[str, RunState]]:
    found = find_runs_here(roots)
    if not found:
        raise DropbnError(f"status: no run folders under {', '.join(roots)}")
    return [(_name(root, f), run_state(f)) for root, f in found]


# ---------------------------------------------------------------- summary and ETA
def _duration(s: float) -> str:
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def sibling_seconds(states: list[RunState]) -> tuple[str, list[float]] | None:
    """(where, measured seconds of each epoch) of the other runs in the folders that hold these runs:
    the sweep folder, when new seeds or rates are planned beside runs that have trained; None if none."""
    own = {s.folder.resolve() for s in states}
    parents = sorted({s.folder.resolve().parent for s in states} - own)
    parents = [p for p in parents if p.is_dir()]
    seconds = [x for p in parents for _, f in find_runs_here([p]) if f.resolve() not in own
               for x in _metrics(f) if math.isfinite(x)]
    return (", ".join(os.path.relpath(p) for p in parents), seconds) if seconds else None


def eta(states: list[RunState], elsewhere: tuple[str, list[float]] | None = None) -> str:
    """The time left as one phrase: epochs left x mean measured s/epoch / live workers. When none of
    these runs has a measured epoch, `elsewhere` (sibling_seconds) gives the seconds, and the phrase
    says where they were measured."""
    if all(s.finished for s in states):
        return "nothing left to train"
    left = [s.left() for s in states]
    known = sum(x for x in left if x is not None)
    unknown = sum(x is None for x in left)
    epochs = _n(known, "epoch") + " left" + (f" (+ {_n(unknown, 'run')} of unknown length)" if unknown else "")
    measured, source = [x for s in states for x in s.seconds if math.isfinite(x)], ""
    if not measured and elsewhere:
        where, measured = elsewhere
        source = f" (measured on the other runs under {where})"
    if not measured:
        return f"{epochs}; ETA unknown until an epoch has been measured"
    per_epoch = sum(measured) / len(measured)
    workers = len({s.owner for s in states if s.owner})
    at = _n(workers, "live worker") if workers else "1 worker (none running now)"
    return f"{epochs} x {per_epoch:.1f} s/epoch{source} / {at}: ETA {_duration(known * per_epoch / max(1, workers))}"


def render(rows: list[tuple[str, RunState]], planned: bool = False) -> str:
    """The table and its summary line; `planned` (runs composed from arguments, not found in folders):
    with no measured epoch among them, the ETA reads the other runs of their sweep folder."""
    table = [("state", "epochs", "run", "detail")]
    for name, s in rows:
        epochs = "" if s.state == "missing" and s.epochs is None else f"{s.done}/{s.epochs if s.epochs is not None else '?'}"
        table.append((s.state, epochs, name, s.detail))
    widths = [max(len(r[i]) for r in table) for i in range(3)]
    lines = ["  ".join([*(c.ljust(w) for c, w in zip(r[:3], widths)), r[3]]).rstrip() for r in table]
    counts = Counter(s.state for _, s in rows)
    summary = ", ".join(f"{counts[k]} {k}" for k in STATES if counts[k])
    states = [s for _, s in rows]
    elsewhere = sibling_seconds(states) if planned and not any(s.seconds for s in states) else None
    lines.append(f"{_n(len(rows), 'run')}: {summary}; {eta(states, elsewhere)}")
    return "\n".join(lines)


def _is_train_args(argv: list[str]) -> bool:
    """`-m +exp=NAME seed=0,1` (arguments of dropbn train) rather than folders."""
    return any(a.startswith("-") or "=" in a for a in argv if a not in ("-h", "--help"))


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    planned = argv[0] == "--study" or _is_train_args(argv)
    if argv[0] == "--study":
        rows = study_states(argv[1:])
    else:
        rows = sweep_states(argv) if planned else folder_states(argv)
    print(render(rows, planned))
    return 0 if all(s.finished for _, s in rows) else 1
