"""The report's sections: each function takes the report's Context and returns a Section
(its markdown, and the tables and figures it refers to), or None when it does not apply.

render.SECTIONS lists them in report order; render.py only assembles and writes them.
The sections that appear only when a study varies something (learning rate,
training-set size, dropout rate, placement) or has diagnostics are in
optional.py.
"""
from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, field

import pandas as pd

from . import figures as F
from . import claims as C
from . import image_sample as IS
from . import measures as M
from .. import stats
from ..stats import exact
from . import tables as T
from .architecture import mlp_name, resnet_name, setup_parts
from .collect import Collection, Facet, facet
from .markdown import fmt_p, md_table, num, slug

ARTICLE_NOTES = """\
The article this study re-measures gets three things wrong in its code; dropbn does them the standard way:

- Its "dropout" formula is a plain ReLU layer: nothing is dropped at random, so it measures no dropout at all.
  dropbn uses `torch.nn.Dropout` (inverted dropout: units zeroed with probability p during training, the rest scaled by 1/(1−p)).
- Its BatchNorm forgets running statistics: it normalises with the current batch's mean and variance even at test time.
  dropbn uses `torch.nn.BatchNorm1d/2d`, which keeps running estimates during training and uses them in evaluation.
- Its dropout stays on at test time. dropbn evaluates every epoch in eval mode: dropout off, batch norm with running statistics.
"""

SETUP_KEYS = [("data.train_size", "training images"), ("data.val_size", "validation images"),
              ("data.augment", "augmentation"), ("model.hidden", "MLP widths"), ("model.channels", "conv channels"),
              ("model.fc", "dense widths"), ("optim.name", "optimizer"), ("optim.lr", "lr"),
              ("optim.momentum", "momentum"), ("optim.weight_decay", "weight decay"),
              ("train.epochs", "epochs"), ("train.steps", "optimisation steps (train.epochs unused)"),
              ("train.batch_size", "batch size"), ("train.schedule", "lr schedule")]


@dataclass
class Table:
    name: str
    df: pd.DataFrame
    index: bool = True
    latex: bool = False       # also tables/<name>.tex


@dataclass
class Figure:
    name: str
    png: bytes

    @property
    def path(self) -> str:
        return f"figures/{self.name}.png"


@dataclass
class Section:
    """One part of report.md: its markdown blocks, and the tables and figures it refers to."""
    md: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.md.append(text)

    def table(self, name: str, df: pd.DataFrame, index: bool = True, latex: bool = False) -> None:
        self.tables.append(Table(name, df, index, latex))

    def figure(self, name: str, png: bytes) -> str:
        """Adds the figure; returns its path relative to the report, for the markdown."""
        self.figures.append(Figure(name, png))
        return self.figures[-1].path


@dataclass
class Context:
    """What every section reads: the runs, the per-configuration statistics and the baselines."""
    coll: Collection
    baseline: str                  # the --baseline spec, e.g. reg=none
    sources: list
    title: str
    order: list[str]               # configuration labels in report order
    cmap: dict                     # label -> colour
    gs: pd.DataFrame               # tables.group_stats
    base: dict                     # context -> baseline label (tables.baselines)
    curves: pd.DataFrame           # per-epoch curves of completed runs, with their configuration
    facet: Facet | None            # small multiples for the curves when there are many configurations
    claim_set: object = None       # claim_file.ClaimSet: the claims checked (None: the default file)
    registration: object = None    # registration.Registration, or None: not pre-registered
    _claims: object = None

    @property
    def claims_table(self) -> "C.ClaimsTable":
        """The claims check, computed once (the verdicts at a glance and the detailed table share it)."""
        if self._claims is None:
            reg = self.registration.digests if self.registration is not None else None
            self._claims = C.claims(self.coll, self.base, self.claim_set, reg)
        return self._claims

    @classmethod
    def of(cls, coll: Collection, baseline: str, sources) -> "Context":
        runs = coll.runs
        order = [str(c) for c in runs["label"].cat.categories]
        curves = coll.curves.merge(runs[runs["status"] == "completed"][["run", "label"]], on="run")
        curves["configuration"] = curves["label"].astype(str)
        return cls(coll=coll, baseline=baseline, sources=list(sources), title=title_of(runs), order=order,
                   cmap=F.colors(order), gs=T.group_stats(coll), base=T.baselines(coll, T.parse_baseline(baseline)),
                   curves=curves, facet=facet(runs, coll.dims))

    @property
    def runs(self) -> pd.DataFrame:
        return self.coll.runs


def title_of(runs: pd.DataFrame) -> str:
    data = ", ".join(dict.fromkeys(str(d) for d in runs.get("data", pd.Series(dtype=object)).dropna())) \
        or ", ".join(dict.fromkeys(runs.get("cfg.data.name", pd.Series(dtype=object)).dropna().astype(str)))
    models = []
    for _, r in runs.drop_duplicates([c for c in ("cfg.model.name", "cfg.model.hidden", "cfg.model.channels",
                                                    "cfg.model.fc", "cfg.model.skip", "cfg.model.depth",
                                                    "cfg.model.width", "cfg.model.preact", "cfg.model.shortcut")
                                      if c in runs]).iterrows():
        name = str(r.get("cfg.model.name", "model"))
        if name == "mlp":
            models.append(mlp_name(r))
        elif name == "resnet":
            models.append(resnet_name(r))
        elif name == "cnn":
            models.append(f"CNN conv {r.get('cfg.model.channels')} fc {r.get('cfg.model.fc')}")
        elif name != "nan":
            models.append(name)
    return f"{data or 'unknown data'} · {', '.join(dict.fromkeys(models)) or 'unknown model'}"


def setup_line(runs: pd.DataFrame, varying: set) -> str:
    """The settings every run shares (data size, model widths, optimizer, epochs, ...), as prose."""
    parts = []
    for key, name in SETUP_KEYS:
        col = f"cfg.{key}"
        if key in varying or col not in runs:
            continue
        vals = {str(v) for v in runs[col] if not (isinstance(v, float) and math.isnan(v))}
        if len(vals) != 1:
            continue
        v = vals.pop()
        if v in ("None", "null", "nan", "<NA>"):
            if key != "data.train_size":
                continue
            v = "all"
        parts.append(f"{name} {v}")
    return ", ".join(parts + setup_parts(runs, varying))


# ---------------------------------------------------------------- the sections, in report order

def header(ctx: Context) -> Section:
    s, runs = Section(), ctx.runs
    s.add(f"# dropout vs. batch norm, measured — {ctx.title}\n")
    counts = runs["status"].value_counts()
    s.add(f"Generated {_dt.datetime.now().isoformat(timespec='seconds')} by `dropbn report` from "
          + ", ".join(f"`{src}`" for src in ctx.sources) + ".\n")
    s.add(f"**{len(runs)} runs** in {len(ctx.order)} configuration(s): "
          + ", ".join(f"{int(counts.get(st, 0))} {st}" for st in T.STATUSES) + ".")
    varying = list(ctx.coll.varying)
    s.add("Settings that vary (besides the seed): " + (", ".join(f"`{k}`" for k in varying) if varying else "none")
          + ". Every number is mean ± 95% confidence half-width over seeds (t distribution) with the number "
            "of runs n; per-configuration statistics describe completed runs, the claims check also counts "
            "diverged runs (see its rule).")
    s.add(f"Baseline: `{ctx.baseline}` (compared with configurations sharing every other varying setting).\n")
    setup = setup_line(runs, set(varying))
    if setup:
        s.add(f"Setup (the same for every run): {setup}.\n")
    commits = sorted({str(c) for c in runs.get("git_commit", pd.Series(dtype=object)).dropna()})
    devices = sorted({str(c) for c in runs.get("device_used", pd.Series(dtype=object)).dropna()})
    if commits or devices:
        s.add("Code versions (git): " + (", ".join(f"`{c}`" for c in commits) or "unknown")
              + "; devices: " + (", ".join(devices) or "unknown") + ".\n")
    return s


def article_notes(ctx: Context) -> Section:
    return Section(md=["## About the article's code\n", ARTICLE_NOTES])


def comparison(ctx: Context) -> Section:
    s = Section(md=["## The article's comparison table, measured\n"])
    for c, tab in T.comparison_table(ctx.gs, ctx.base).items():
        name = "comparison" if c == "all" else f"comparison_{slug(c)}"
        s.table(name, tab, latex=True)
        if c != "all":
            s.add(f"### {c}\n")
        if ctx.base.get(c) is None:
            s.add(f"_No baseline (`{ctx.baseline}`) among these configurations: relative rows left empty._\n")
        s.add(md_table(tab, index_name="measured"))
        s.add(f"Table: `tables/{name}.csv`, `tables/{name}.tex`.\n")
    return s


def claims_rule(m: int, unreachable: int = 0, min_effects: dict | None = None, registered: bool = False) -> str:
    """The verdict rule as the report states it, with the family size m (and how many of its tests cannot
    reach alpha with their runs) and the minimal effects (default: those of the default claims file)."""
    effects = "; ".join(f"{k}: {e.text}" for k, e in (min_effects or C.load_claims().min_effects).items())
    dead = (f" {unreachable} of the {m} cannot reach p < {stats.ALPHA} with the runs at hand (the smallest p "
            "their test can give with these arm sizes and ties is larger); they stay in the family, which makes "
            "the adjustment more conservative than it needs to be." if unreachable else "")
    return (
        f"**Rule.** Every {'confirmatory ' if registered else ''}row below with a p value belongs to one family "
        f"of **m = {m}** tests (all contexts and "
        f"test types); its p values are adjusted with Holm's step-down method (`p_holm`).{dead} "
        f"At alpha = {stats.ALPHA}: "
        "**supported** = p_holm < alpha and the difference has the sign the claim predicts; **not supported** = "
        "p_holm < alpha and the opposite sign; **inconclusive** = otherwise, including rows whose test gives no "
        "p value or cannot reach alpha with the runs at hand. An inconclusive row is not evidence of no "
        "difference: its 95% confidence interval says which differences the data still allow.\n\n"
        "**Tests.** Accuracy and gap: Welch's t-test with the Welch 95% CI of a − b and Hedges' g. Accuracy "
        "claims count every run that completed or diverged, a diverged run at chance accuracy (intention to "
        "treat); crashed and unfinished runs are left out and counted in the note. Seconds per epoch: Welch on "
        "log seconds, shown as the ratio a / b of geometric means. Epochs and seconds to the target: an exact "
        f"permutation test on ranks valid for censored data ({exact.RANK_TEST}; all runs had the same budget); "
        "where every run of both arms reached the target, the note adds the Hodges-Lehmann shift with the Moses "
        "95% CI that inverts the Mann-Whitney test. "
        "Stability: the Brown-Forsythe test of equal spread, shown as the ratio of standard deviations a / b "
        "with the 95% CI that assumes normal accuracies (the F distribution; the test does not assume it, so "
        "near alpha the two can disagree). Trainability (rows T…): a run fails to train when it "
        f"diverged or ended below chance accuracy + {M.CHANCE_MARGIN * 100:g} pp; Fisher's exact test of the "
        "failed fractions, or, pooling several contexts as strata, the exact stratified test; the 95% CI of "
        "the difference in failed fractions is Newcombe's score interval with continuity correction (on the "
        "counts pooled over the strata, where strata are pooled).\n\n"
        "**Which interval decides.** Verdicts use the seed-only interval (over the runs' accuracies on this "
        "one test set). For accuracy rows claims.csv adds the interval that also treats the test images as a "
        "sample (`images_*`, from the runs' predictions; below the table: which supported rows hold under it). "
        "Timing rows are tested only where every run of both arms trained alone on the same kind of machine "
        f"(`env.parallel_runs` = 1); otherwise they read **{C.UNEQUAL}** and stay out of the family.\n\n"
        "**Power.** An inconclusive row states the seeds per arm that would detect the minimal effect at 80% "
        f"power with a test at alpha/m, from the observed spread. Minimal effects — {effects}. A TOST note "
        "(difference within ± the minimal effect at alpha/m) is added where it holds; it is never a verdict.\n"
    )


def claims(ctx: Context) -> Section:
    s = Section(md=["## Claims check\n"])
    ct = ctx.claims_table
    cl = ct.df
    s.add(claims_rule(ct.m, ct.unreachable, (ctx.claim_set or C.load_claims()).min_effects,
                      ctx.registration is not None))
    if len(cl):
        s.table("claims", cl.astype(object).where(cl.notna(), "n/a"), index=False, latex=True)
        show = pd.DataFrame({
            "claim": [c + ("" if x == "all" else f" [{x}]") for c, x in zip(cl["claim"], cl["context"])],
            "the article says": cl["text"],
            "a vs b": cl["a"] + " vs " + cl["b"],
            "quantity": [f"{q.replace('_', ' ')} ({st})" for q, st in zip(cl["quantity"], cl["statistic"])],
            "a": [num(v) for v in cl["value_a"]], "b": [num(v) for v in cl["value_b"]],
            "a − b [95% CI]": [_diff_cell(r) for _, r in cl.iterrows()],
            "g": [num(v) for v in cl["hedges_g"]],
            "test": cl["test"],
            "p": [fmt_p(p) for p in cl["p_value"]], "p_holm": [fmt_p(p) for p in cl["p_holm"]],
            "n (a, b)": [f"{a}, {b}" for a, b in zip(cl["n_a"], cl["n_b"])],
            "verdict": [C.verdict_text(r) for _, r in cl.iterrows()],
            "registration": cl["registration"],
            "note": cl["note"],
        })
        s.add(md_table(show, index=False))
        s.add("Accuracies, gaps and failed fractions in percent / percentage points, epochs in epochs; "
              "'ratio' rows show a / b (geometric means for seconds per epoch, medians for seconds to target), "
              "'std' rows the ratio of standard deviations a / b. "
              "n/a: the column does not apply to the row's test, or the test is undefined. "
              "Table: `tables/claims.csv`, `tables/claims.tex`.\n")
    else:
        s.add("_No claim could be checked with these runs._\n")
    if len(cl):
        s.add(IS.summary(cl))
    if ct.skipped:
        s.add("Claims not checked:\n")
        s.add("\n".join(C.skipped_lines(ct.skipped)) + "\n")
    return s


def _diff_cell(r) -> str:
    d, lo, hi = r["diff"], r["diff_ci_low"], r["diff_ci_high"]
    if r["unit"] in ("ratio", "spread"):
        txt = f"×{d:.3f}" if math.isfinite(d) else "n/a"
        return txt + (f" [×{lo:.3f}, ×{hi:.3f}]" if math.isfinite(lo) else "")
    txt = num(d)
    return txt + (f" [{lo:.2f}, {hi:.2f}]" if math.isfinite(lo) and math.isfinite(hi) else "")


def per_configuration(ctx: Context) -> Section:
    s, gs = Section(md=["## Per-configuration summary\n"]), ctx.gs
    s.table("per_configuration", gs, index=False)
    cols = {"runs": gs["runs"], "completed": gs["completed"], "diverged": gs["diverged"],
            "failed": gs["failed"], "unfinished": gs["unfinished"],
            "final test acc.": [T.cell(r, "final_test_acc") for _, r in gs.iterrows()]}
    if (gs["val_selected_test_acc_n"] > 0).any():
        cols["test acc. at the epoch picked on validation"] = [T.cell(r, "val_selected_test_acc")
                                                             for _, r in gs.iterrows()]
    cols["best test acc. (oracle)"] = [T.cell(r, "best_test_acc") for _, r in gs.iterrows()]
    cols["train − test acc. (pp)"] = [T.cell(r, "generalization_gap") for _, r in gs.iterrows()]
    steady = T.steady_state(gs)
    cols["s / epoch" + (" (steady state)" if steady else " (incl. first epoch)")] = \
        [T.cell(r, "seconds_per_epoch") for _, r in gs.iterrows()]
    if steady:
        cols["first epoch (s)"] = [T.cell(r, "first_epoch_seconds") for _, r in gs.iterrows()]
    summ = pd.DataFrame(cols)
    summ.index = gs["configuration"].astype(str)
    s.table("per_configuration_formatted", summ, latex=True)
    s.add(md_table(summ, index_name="configuration"))
    s.add("'Best test acc. (oracle)' picks each run's best epoch on the test set itself: an optimistic number "
          "that enters no claim. Full statistics (mean, CI half-width, std, n for every metric): "
          "`tables/per_configuration.csv`; one row per run: `runs.csv`.\n")
    return s


def problems(ctx: Context) -> Section:
    s, runs = Section(md=["## Runs that did not complete, and skipped folders\n"]), ctx.runs
    bad = runs[runs["status"] != "completed"]
    if len(bad):
        s.add(md_table(pd.DataFrame({"run": bad["run"], "configuration": bad["label"].astype(str),
                                     "status": bad["status"], "detail": bad["detail"]}), index=False))
    else:
        s.add("All runs completed.\n")
    odd = runs[runs["nonfinite"].map(bool)] if "nonfinite" in runs else runs.iloc[:0]
    if len(odd):
        s.add("Runs with non-finite metrics (NaN or infinite values):\n")
        s.add("\n".join(f"- `{r['run']}`: {', '.join(r['nonfinite'])}" for _, r in odd.iterrows()) + "\n")
    if ctx.coll.skipped:
        s.add("Skipped folders (not read as runs):\n")
        s.add("\n".join(f"- `{p}`: {why}" for p, why in ctx.coll.skipped) + "\n")
    return s


def main_figures(ctx: Context) -> Section:
    s, gs, cmap, title = Section(md=["## Figures\n"]), ctx.gs, ctx.cmap, ctx.title
    if len(ctx.curves):
        f1 = s.figure("learning_curves", F.learning_curves(ctx.curves, ctx.order, cmap, title, ctx.facet))
        s.add(f"![learning curves]({f1})\n")
    f2 = s.figure("final_test_acc", F.bar_figure(gs, "final_test_acc", 100, cmap, title, "final test accuracy (%)",
                                                 zoom=True))
    f3 = s.figure("generalization_gap", F.bar_figure(gs, "generalization_gap", 100, cmap, title,
                                                     "train − test accuracy (pp)"))
    f4 = s.figure("seconds_per_epoch", F.bar_figure(gs, "seconds_per_epoch", 1, cmap, title, "seconds per epoch (s)"))
    s.add(f"![final test accuracy]({f2})\n\n![generalization gap]({f3})\n\n![seconds per epoch]({f4})\n")
    return s


def convergence(ctx: Context) -> Section:
    s, gs = Section(md=["## Convergence\n"]), ctx.gs
    conv = pd.DataFrame({
        "target": [f"{t * 100:g}%" if pd.notna(t) else "–" for t in gs["target_acc"]],
        "reached": [f"{r['reached_target']}/{r['completed']}" for _, r in gs.iterrows()],
        "epochs to target": [T.cell(r, "epochs_to_target") for _, r in gs.iterrows()],
        "seconds to target": [T.cell(r, "seconds_to_target") for _, r in gs.iterrows()],
        "test acc. after epoch 1": [T.cell(r, "first_epoch_test_acc") for _, r in gs.iterrows()],
    }, index=gs["configuration"].astype(str))
    s.table("convergence", conv, latex=True)
    s.add(md_table(conv, index_name="configuration"))
    s.add("Epochs / seconds to target: over the completed runs that reached it (descriptive; the claims "
          "check compares them with a rank test that also counts the runs that did not).\n")
    if len(ctx.curves):
        target = gs["target_acc"].dropna().unique()
        target = float(target[0]) if len(target) == 1 else None
        f5 = s.figure("test_acc_vs_time", F.acc_vs_time(ctx.curves, ctx.order, ctx.cmap, ctx.title, target,
                                                                 ctx.facet))
        s.add(f"![test accuracy vs. wall-clock time]({f5})\n")
    return s
