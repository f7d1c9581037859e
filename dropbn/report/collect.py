"""Run folders -> one tidy table (one row per run) plus the per-epoch curves.

A run folder is any folder holding summary.json, metrics.csv or .hydra/.
Without summary.json it is an unfinished run; a summary.json that cannot be
parsed, or whose numbers are not numbers, makes the folder 'skipped' (with the
reason).  Metrics that hold NaN or an infinity are named in the row's
`nonfinite` (the report lists those runs).  Nothing is written here.

Configurations: the config keys (flattened, 'reg.dropout') that take more than
one value across the runs -- except the seed and keys that never change results
(dropbn.record.identity.REPORT_IGNORED) -- define the configurations.  Each gets a short human label built
from its regularisation kind ('none', 'dropout', 'batchnorm', 'both',
'dropout_before_bn', ...) plus any varying value the kind does not already
determine ('both, lr=0.3').
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from ..base.datasets import DATASETS
from ..base.errors import DropbnError
from ..record.identity import REPORT_IGNORED, among, flatten, fmt_value
from ..record.layout import MODEL_TXT
from ..record.reader import load_summary, metrics_path, read_hydra_config, read_metrics as read_metrics_rows
from ..record.scan import find_runs
from ..record.summary import Summary, diagnostic_columns, vs_column
from .architecture import compact

ENV_FIELDS = ("platform", "cpu_count", "threads", "parallel_runs")  # summary.json env fields kept as env_* columns
LIST_COLUMNS = (vs_column("layers"), vs_column("train_layers"))  # per-layer lists (JSON text in runs.csv)
REG_KEYS = ("reg.norm", "reg.dropout", "reg.input_dropout", "reg.order", "reg.conv_dropout")  # what the kind is made of
SHORT = {"optim.lr": "lr", "data.train_size": "n_train", "reg.dropout": "p", "reg.order": "order",
         "reg.dropout_blocks": "dropout_blocks", "reg.norm": "norm", "data.name": "data",
         "model.hidden": "hidden", "model.name": "model", "optim.name": "optim", "model.act": "act",
         "model.skip": "skip", "model.depth": "depth", "reg.conv_dropout": "conv p"}
NORM_NAMES = {"batch": "batchnorm", "layer": "layernorm", "group": "groupnorm"}
# summary.json columns that hold numbers (typed int or float in dropbn.record.summary.Summary)
NUMBER_COLUMNS = tuple(f.name for f in fields(Summary)
                       if f.metadata["column"] and str(f.type).split("|")[0].strip() in ("int", "float"))


@dataclass
class Collection:
    runs: pd.DataFrame                      # one row per run (see run_row)
    curves: pd.DataFrame                    # one row per (run, epoch): metrics.csv stacked
    skipped: list = field(default_factory=list)   # (folder, reason)
    varying: list = field(default_factory=list)   # config keys that vary (not REPORT_IGNORED)
    dims: list = field(default_factory=list)      # varying keys shown in labels (not fixed by kind)


# ---------------------------------------------------------------- reading one run

def _num_classes(folder: Path, data_name) -> int | None:
    try:
        for line in (folder / MODEL_TXT).read_text().splitlines():
            m = re.match(r"^head\S*\s.*\((\d+),\)", line)
            if m:
                return int(m.group(1))
    except OSError:
        pass
    facts = DATASETS.get(data_name)
    return facts.num_classes if facts else None


def read_metrics(folder: Path) -> pd.DataFrame | None:
    try:
        df = pd.read_csv(metrics_path(folder))
    except (OSError, ValueError, pd.errors.EmptyDataError):
        return None
    return df if "epoch" in df.columns else None


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def not_a_number(summary: dict) -> str | None:
    """The first summary.json number that is not one (e.g. "final_test_acc": "n/a"), as `key=value`."""
    for k in NUMBER_COLUMNS:
        v = summary.get(k)
        if v is not None and not _is_number(v):
            return f"{k}={json.dumps(v)[:40]}"
    return None


def nonfinite(summary: dict | None, folder: Path) -> list[str]:
    """The metrics holding NaN or an infinity: summary.json columns, and metrics.csv columns."""
    bad = [k for k in NUMBER_COLUMNS if _is_number((summary or {}).get(k)) and not math.isfinite(summary[k])]
    cols = set()
    for row in read_metrics_rows(folder) or []:
        for k, v in row.items():
            try:
                if k and not math.isfinite(float(v)):
                    cols.add(k)
            except (TypeError, ValueError):
                pass
    return bad + [f"metrics.csv {c}" for c in sorted(cols)]


def read_run(root: Path, folder: Path) -> tuple[dict | None, pd.DataFrame | None, str | None]:
    """(row, metrics, skip reason) for one run folder."""
    config = None
    summary, unreadable = load_summary(folder)
    if unreadable:
        return None, None, unreadable
    if summary is not None:
        wrong = not_a_number(summary)
        if wrong:
            return None, None, f"summary.json: {wrong} is not a number"
        config = summary.get("config")
    if config is None:
        config = read_hydra_config(folder)
    metrics = read_metrics(folder)
    if summary is None and metrics is None and config is None:
        return None, None, "no summary.json, readable metrics.csv or .hydra/config.yaml"

    rel = folder.relative_to(root) if folder != root else Path(".")
    name = root.name if str(rel) == "." else f"{root.name}/{rel.as_posix()}"
    status = (summary or {}).get("status") or "unfinished"
    if status == "running":
        status = "unfinished"
    row = {"run": name, "path": str(folder), "study": root.name, "status": status}
    cfg = flatten(config or {})
    if summary:
        s = Summary.from_json(summary)
        row.update(s.columns())
        row["train_size_used"] = (s.data_sizes or {}).get("train")
        row["diverged_at"] = s.diverged_at
        env = s.env or {}
        row["git_commit"], row["device_used"] = env.get("git_commit"), env.get("device")
        row.update({f"env_{k}": env.get(k) for k in ENV_FIELDS})
        row.update(diagnostic_columns(s.diagnostics))
    else:
        row["seed"] = cfg.get("seed")
        row["epochs"] = cfg.get("train.epochs")
        row["target_acc"] = cfg.get("train.target_acc")
        row["epochs_completed"] = int(len(metrics)) if metrics is not None else 0
    row["nonfinite"] = nonfinite(summary, folder)
    row["has_config"] = config is not None
    row["num_classes"] = _num_classes(folder, cfg.get("data.name"))
    row["detail"] = status_detail(row)
    for k, v in cfg.items():
        row[f"cfg.{k}"] = fmt_value(v)
    row["kind"] = reg_kind(cfg) if config is not None else "unknown config"
    return row, metrics, None


def status_detail(row) -> str:
    s = row["status"]
    if s == "diverged" and isinstance(row.get("diverged_at"), dict):
        d = row["diverged_at"]
        return f"diverged at epoch {d.get('epoch')}, step {d.get('step')} ({d.get('reason')})"
    if s == "unfinished":
        return f"unfinished: {row.get('epochs_completed') or 0}/{row.get('epochs') or '?'} epochs in metrics.csv"
    return s


# ---------------------------------------------------------------- configurations

def _rate(v) -> float:
    try:
        return float(v or 0.0)
    except (TypeError, ValueError):
        return 0.0


def reg_kind(cfg: dict) -> str:
    """'none', 'dropout', 'batchnorm', 'both', 'dropout_after_bn', 'dropout_before_bn' (or layernorm /
    groupnorm variants). With batch norm and dropout: 'dropout_before_bn' when dropout comes before the
    norm in the block, 'dropout_after_bn' when it follows the norm directly (e.g. [act,norm,dropout],
    the matched partner of [act,dropout,norm]), 'both' otherwise (the standard [norm,act,dropout]).
    Dropout on the input pixels (reg.input_dropout) is dropout too: a net with it and no hidden dropout
    is 'dropout' (or 'both' with batch norm), so that Srivastava et al.'s arm (input 0.2, hidden 0.5)
    and its control (neither) are one comparison, not two contexts. Dropout in conv blocks
    (reg.conv_dropout: the CNN's, a ResNet's between its convs) is block dropout like reg.dropout."""
    norm = str(cfg.get("reg.norm", "none"))
    rate = _rate(cfg.get("reg.dropout")) or _rate(cfg.get("reg.conv_dropout"))
    inputs = _rate(cfg.get("reg.input_dropout"))
    has_norm, has_drop = norm not in ("none", "None"), rate > 0 or inputs > 0
    nname = NORM_NAMES.get(norm, f"{norm}norm")
    if not has_norm:
        return "dropout" if has_drop else "none"
    if not has_drop:
        return nname
    if rate == 0:  # dropout on the input pixels only: no dropout inside the blocks, so no placement
        return "both" if norm == "batch" else f"{nname}+dropout"
    order = list(cfg.get("reg.order") or [])
    before = "dropout" in order and "norm" in order and order.index("dropout") < order.index("norm")
    if norm == "batch":
        if before:
            return "dropout_before_bn"
        right_after = "dropout" in order and "norm" in order and order.index("dropout") == order.index("norm") + 1
        return "dropout_after_bn" if right_after else "both"
    return f"dropout_before_{nname}" if before else f"{nname}+dropout"


KIND_ORDER = ["none", "dropout", "batchnorm", "both", "dropout_after_bn", "dropout_before_bn"]


def kind_rank(kind: str) -> int:
    return KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)


def varying_keys(runs: pd.DataFrame) -> list[str]:
    cols = [c for c in runs.columns if c.startswith("cfg.") and not among(c[4:], REPORT_IGNORED)]
    known = runs[runs["has_config"]]
    return [c[4:] for c in cols if known[c].fillna("<missing>").nunique() > 1]


def label_dims(runs: pd.DataFrame, varying: list[str]) -> list[str]:
    """Varying keys not determined by the reg kind (those go into labels)."""
    known = runs[runs["has_config"]]
    dims = []
    for k in varying:
        per_kind = known.groupby("kind")[f"cfg.{k}"].agg(lambda s: s.fillna("<missing>").nunique())
        if k not in REG_KEYS or (per_kind > 1).any():
            dims.append(k)
    return dims


def make_label(row, dims, drop=()) -> str:
    parts = [] if "kind" in drop else [row["kind"]]
    for k in dims:
        if k not in drop:
            v = row.get(f"cfg.{k}", "null")
            if k == "data.train_size" and v == "null":
                v = "full"
            if k == "model.hidden":
                v = compact(v)
            parts.append(f"{SHORT.get(k, k)}={v}")
    return ", ".join(parts) if parts else "all"


def _sort_value(v: str):
    try:
        return (0, float(v), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(v))


def sort_key_for(row, dims, drop=()):
    """Stable order: other settings first (numeric when possible), then kind (baseline first)."""
    return tuple(_sort_value(row.get(f"cfg.{k}")) for k in dims if k not in drop) + (kind_rank(row["kind"]), row["kind"])


def ordered_labels(runs: pd.DataFrame, dims, drop=(), label_col=None) -> list[str]:
    seen = {}
    for _, r in runs.iterrows():
        lab = r[label_col] if label_col else make_label(r, dims, drop)
        if lab not in seen:
            seen[lab] = sort_key_for(r, dims, drop)
    return sorted(seen, key=lambda k: seen[k])


@dataclass(frozen=True)
class Facet:
    """Small multiples: one panel per value of `key` (a varying config key, or 'kind'), one line per series."""
    key: str
    panels: list            # panel titles, in order
    series: list            # line labels (the configuration label without `key`), in order
    of: dict                # configuration label -> (panel, series)


def facet(runs: pd.DataFrame, dims, max_lines: int = 6) -> Facet | None:
    """None for up to max_lines configurations (one panel holds them); otherwise the split into
    panels that leaves the fewest lines in the fullest panel (then the fewest panels)."""
    firsts = runs.drop_duplicates("label")
    firsts = firsts[firsts["has_config"]]
    if len(firsts) <= max_lines:
        return None
    best = None
    for key in [*dims, "kind"]:
        of = {str(r["label"]): (str(r["kind"]) if key == "kind" else f"{SHORT.get(key, key)}={r.get('cfg.' + key)}",
                                make_label(r, dims, drop=(key,))) for _, r in firsts.iterrows()}
        panels = list(dict.fromkeys(p for p, _ in of.values()))
        if len(panels) < 2:
            continue
        fullest = max(sum(1 for p, _ in of.values() if p == q) for q in panels)
        if best is None or (fullest, len(panels)) < best[0]:
            series = ordered_labels(firsts, dims, drop=(key,))
            best = ((fullest, len(panels)), Facet(key, panels, series, of))
    return best[1] if best else None


# ---------------------------------------------------------------- everything

def collect(roots, progress: bool | None = None, log=print, ignore=()) -> Collection:
    """`ignore`: config keys that do not define configurations even when they vary
    (a study's tuned keys: each variant has its own value)."""
    scan = find_runs(roots)
    found, skipped = scan.found, scan.skipped
    if not found:
        where = ", ".join(str(r) for r in roots)
        raise DropbnError(f"no run folders (summary.json / metrics.csv / .hydra) under {where}")
    rows, curves = [], []
    show = len(found) > 20 if progress is None else progress
    for root, folder in tqdm(found, desc="reading runs", unit="run", disable=not show, leave=False):
        row, metrics, why = read_run(root, folder)
        if why:
            skipped.append((str(folder), why))
            continue
        rows.append(row)
        if metrics is not None and len(metrics):
            m = metrics.copy()
            m.insert(0, "run", row["run"])
            curves.append(m)
    if not rows:
        raise DropbnError("no readable runs: " + "; ".join(f"{p}: {w}" for p, w in skipped[:3]))
    curves_df = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=["run", "epoch"])
    return finish(pd.DataFrame(rows), curves_df, skipped, ignore)


def finish(runs: pd.DataFrame, curves: pd.DataFrame, skipped: list, ignore=()) -> Collection:
    """One row per run -> the Collection: unique run names, derived columns, configurations and labels."""
    runs = runs.loc[:, ~runs.columns.duplicated()].copy()
    if runs["run"].duplicated().any():  # two roots with the same name
        runs["run"] = [f"{r} [{i}]" if d else r for i, (r, d) in
                       enumerate(zip(runs["run"], runs["run"].duplicated(keep=False)))]
    derive(runs)
    varying = [k for k in varying_keys(runs) if k not in ignore]
    dims = label_dims(runs, varying)
    runs["label"] = [make_label(r, dims) if r["has_config"] else "unknown config" for _, r in runs.iterrows()]
    order = ordered_labels(runs[runs["has_config"]], dims)
    if (~runs["has_config"]).any():
        order.append("unknown config")
    runs["label"] = pd.Categorical(runs["label"], categories=order, ordered=True)
    runs = runs.sort_values(["label", "seed", "run"], kind="stable").reset_index(drop=True)
    return Collection(runs=runs, curves=curves, skipped=skipped, varying=varying, dims=dims)


def derive(runs: pd.DataFrame) -> None:
    """Columns the report reads that older runs lack, in place:
    val_selected_test_acc: test accuracy at the epoch chosen on validation (NaN unless best_epoch_by is 'val');
    env_threads: the thread count, from train.threads where the run recorded none."""
    by = runs["best_epoch_by"] if "best_epoch_by" in runs else pd.Series(None, index=runs.index, dtype=object)
    acc = runs["test_acc_at_best_epoch"] if "test_acc_at_best_epoch" in runs else pd.Series(float("nan"), runs.index)
    runs["val_selected_test_acc"] = acc.where(by == "val").astype(float)
    cfg = runs["cfg.train.threads"] if "cfg.train.threads" in runs else pd.Series(None, index=runs.index, dtype=object)
    cfg = pd.to_numeric(cfg, errors="coerce")
    runs["env_threads"] = pd.to_numeric(runs.get("env_threads", cfg), errors="coerce").fillna(cfg)


def read_runs_csv(path) -> Collection:
    """A report's runs.csv (one row per run, as render.runs_csv writes it) back into a Collection, without
    the run folders: config values stay text, per-layer lists are parsed; no per-epoch curves."""
    try:
        runs = pd.read_csv(path, dtype={c: str for c in pd.read_csv(path, nrows=0).columns if c.startswith("cfg.")},
                           keep_default_na=True)
    except (OSError, ValueError, pd.errors.EmptyDataError) as e:
        raise DropbnError(f"{path}: not a readable runs.csv ({type(e).__name__})") from e
    missing = {"run", "status", "has_config", "kind"} - set(runs.columns)
    if missing:
        raise DropbnError(f"{path}: not a report's runs.csv (no column {', '.join(sorted(missing))})")
    for c in [c for c in runs.columns if c.startswith("cfg.")]:
        runs[c] = runs[c].fillna("null")
    for c in LIST_COLUMNS:
        if c in runs:
            runs[c] = [json.loads(v) if isinstance(v, str) and v.startswith("[") else [] for v in runs[c]]
    runs["has_config"] = runs["has_config"].astype(str).str.lower() == "true"
    return finish(runs.drop(columns=["label"], errors="ignore"), pd.DataFrame(columns=["run", "epoch"]), [])
