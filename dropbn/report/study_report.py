"""The report of a `dropbn study` folder (one holding selected.yaml).

Claims, tables and figures come from the final runs only (the run folders selected.yaml
lists under final/), through the usual report (render.build). On top of it: a preamble
stating the protocol, and a "Tuned hyperparameters" section built from the tune runs --
the search space and which keys applied to which variant, each variant's choice with its
validation score, every candidate, and a sensitivity figure per variant (validation metric
across the search space with 95% CI bands, and the mean validation curves).
The tune runs are scored again here with the study's own rule (dropbn/study/selection.py), so
the section shows what the tune records on disk say; if that differs from the recorded
choice, the report says so.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from matplotlib.ticker import MaxNLocator
import yaml

from ..study import selection as S
from ..base.errors import DropbnError
from . import figures as F
from . import render
from .markdown import md_table, slug
from .sections import Figure, Section, Table
from .collect import SHORT, collect

TUNE, FINAL = S.TUNE, S.FINAL


def is_study_dir(d) -> bool:
    return (Path(d) / S.SELECTED).is_file()


def load_selected(study_dir: Path) -> dict:
    p = Path(study_dir) / S.SELECTED
    try:
        doc = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise DropbnError(f"{p}: unreadable ({type(e).__name__}); run the study command again to rewrite it") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("variants"), list):
        raise DropbnError(f"{p}: not a dropbn study selection (no variants); run the study command again")
    return doc


def _key(line: str) -> str:
    return line.split("=", 1)[0].lstrip("+~")


def tuned_keys(sel: dict) -> set:
    """Keys the final runs set per variant besides the compared ones (they vary with the variant)."""
    keys = set()
    for v in sel["variants"]:
        own = {_key(o) for o in v["overrides"]}
        keys |= {_key(o) for o in v["final_overrides"]} - own
    return keys


def rescore(sel: dict, tune_dir: Path) -> dict:
    """{variant name: [PointScore] ranked best first}, from the tune run records."""
    return {v["name"]: S.score_variant(tune_dir, [{"point": c["point"], "runs": c["runs"]} for c in v["candidates"]],
                                       sel["select"])
            for v in sel["variants"]}


def build(study_dir, out=None, baseline: str = "reg=none", progress=None, claims=()) -> Path:
    """`claims`: claims files to check (none: the claims the study registered, else the default file)."""
    from ..config.registration import claims_for

    study_dir = Path(study_dir)
    sel = load_selected(study_dir)
    claim_set, registration = claims_for([study_dir], claims)
    final_dir, tune_dir = study_dir / FINAL, study_dir / TUNE
    expected = [final_dir / r["run"] for v in sel["variants"] for r in v["final_runs"]]
    present = [p for p in expected if p.is_dir()]
    if not present:
        raise DropbnError(f"{study_dir}: none of the {len(expected)} final runs of {S.SELECTED} exists yet; "
                          f"run the study command to finish the study")
    coll = collect(present, progress=progress, ignore=tuned_keys(sel))
    out = Path(out) if out else study_dir / "report"
    render.check_out(out, coll.runs["path"])
    scored = rescore(sel, tune_dir)
    missing = len(expected) - len(present)
    return render.build(coll, out, baseline, sources=[f"{final_dir} (the final runs of {S.SELECTED})"],
                        preamble=preamble(sel, scored, missing),
                        extra=[lambda ctx: tuned_section(sel, scored)], claim_set=claim_set,
                        registration=registration)


# ---------------------------------------------------------------- text

def metric_name(metric: str) -> str:
    return {"val_acc": "validation accuracy", "val_loss": "validation loss"}[metric]


def scale_of(metric: str) -> tuple[float, str]:
    return (100.0, " %") if metric == "val_acc" else (1.0, "")


def fmt_point(point: dict) -> str:
    return ", ".join(f"{SHORT.get(k, k)}={x}" for k, x in point.items()) or "defaults (nothing searched)"


def score_text(p: S.PointScore, metric: str) -> str:
    scale, _ = scale_of(metric)
    return S.fmt_score(p, scale, 2 if metric == "val_acc" else 4)


def preamble(sel: dict, scored: dict, missing: int) -> str:
    metric = sel["select"]
    fvs = sel.get("final_val_size")
    if fvs is None:
        final_data = f"kept the validation split ({sel['val_size']} images held out of training)"
    elif fvs == 0:
        final_data = "were retrained on all training images (`study.final_val_size=0`: no validation split)"
    else:
        final_data = f"held out {fvs} validation images (`study.final_val_size={fvs}`)"
    fo = sel.get("final_overrides") or {}
    extra = (" Final runs only: " + ", ".join(f"`{k}={x}`" for k, x in fo.items())
             + " (the tune runs used the preset's value)." if fo else "")
    choices = "; ".join(f"**{v['name']}**: {fmt_point(v['selected']['point'])}" for v in sel["variants"])
    text = (f"**A tuned study** (`dropbn study`): each variant runs at its own hyperparameters, chosen on a "
            f"validation split of {sel['val_size']} training images with tune seeds {sel['tune_seeds']} by the best "
            f"mean {metric_name(metric)} ({sel['searcher']} search). Everything below except the "
            f"[Tuned hyperparameters](#tuned-hyperparameters) section comes from the final runs only: fresh seeds "
            f"{sel['final_seeds']}, evaluated on the test set, which no tuning step read. The final runs "
            f"{final_data}.{extra} Selected: {choices}. Settings that vary only because each variant has its own "
            f"tuned value ({', '.join(f'`{k}`' for k in sorted(tuned_keys(sel))) or 'none'}) are part of the "
            f"variant, so variants are compared with each other directly.\n")
    if missing:
        text += f"\n_{missing} final run(s) listed in {S.SELECTED} are missing: the study has not finished._\n"
    return text


def tuned_section(sel: dict, scored: dict) -> Section:
    sec = Section()
    add = sec.add
    metric = sel["select"]
    space = sel.get("search_space") or {}
    add("## Tuned hyperparameters\n")
    add(f"Command: `{sel.get('command', 'dropbn study')}`.\n")
    # search space
    add("### Search space\n")
    if space:
        rows = []
        for k, values in space.items():
            used = [v["name"] for v in sel["variants"] if k in v["searched"]]
            skipped = [f"{v['name']} ({v['skipped'][k]})" for v in sel["variants"] if k in v.get("skipped", {})]
            rows.append({"key": f"`{k}`", "values": ", ".join(str(x) for x in values),
                         "searched in": ", ".join(used) or "–", "skipped in (validation rejects it)":
                         "; ".join(skipped) or "–"})
        add(md_table(pd.DataFrame(rows), index=False))
        budget = (f"{sel['searcher']} search: every point of the space" if sel["searcher"] == "grid" else
                  f"Optuna's TPE sampler over the listed values: {sel.get('trials')} distinct points per "
                  f"variant (all of them where its space is smaller; a point proposed again re-uses its runs "
                  f"and does not count)")
        add(f"{budget}, {len(sel['tune_seeds'])} tune seed(s) {sel['tune_seeds']} per point. Every variant gets "
            f"the same space and budget, except keys its configuration rejects (skipped above).\n")
    else:
        add("Nothing searched: the tune stage chose only the epoch count on validation.\n")
    # selection
    add("### Selection\n")
    add("**Rule.** " + sel.get("rule", S.rule_text(metric)) + "\n")
    rows, notes, edges = [], [], []
    for v in sel["variants"]:
        s = v["selected"]
        ranked = scored[v["name"]]
        best = ranked[0] if ranked else None
        recorded = next((p for p in ranked if p.point == s["point"]), None)
        rows.append({
            "variant": v["name"], "selected": fmt_point(s["point"]),
            f"{metric} (mean ± 95% CI, n)": score_text(recorded, metric) if recorded else "–",
            "best epoch / tune epochs": f"{s['best_epoch']} / {s['tune_epochs']}",
            "final epochs": s["final_epochs"] or s["tune_epochs"],
            "late change": late_text(recorded, metric) if recorded else "–",
            "candidates (with lost seeds)": f"{len(ranked)} ({sum(1 for p in ranked if p.lost)})",
        })
        notes.append(f"- {v['name']}: {s['epochs_rule']}.")
        edges += [f"- **{v['name']}: `{k}={s['point'][k]}` is the {end} value searched**: the best value may lie "
                  f"beyond the range, so this variant may be under-tuned; widen `study.search.{k}` to check."
                  for k, end in S.at_search_edge(s["point"], space)]
        if best is not None and best.point != s["point"]:
            notes.append(f"- **{v['name']}: the tune records now rank {fmt_point(best.point)} first, not the "
                         f"recorded choice** (tune runs changed after the selection); the final runs use the "
                         f"recorded choice. Run the study command again to re-select.")
    tab = pd.DataFrame(rows)
    sec.tables.append(Table("tuned", tab, index=False, latex=True))
    add(md_table(tab, index=False))
    add("_Late change_: how much the selected point's mean validation curve moved over the last quarter of "
        "the tune epochs; near zero means the budget let it flatten, a large gain means the runs were cut off "
        "while still improving (raise `train.epochs`).\n")
    add("Epoch counts:\n\n" + "\n".join(notes) + "\n")
    if edges:
        add("Choices at an end of a searched range (of three or more values):\n\n" + "\n".join(edges) + "\n")
    # candidates
    add("### Every candidate\n")
    crow = []
    for v in sel["variants"]:
        for p in sorted(scored[v["name"]], key=lambda p: p.rank):
            lost = [f"{r.status} (seed {r.seed})" for r in p.runs if r.lost]
            crow.append({"variant": v["name"], "rank": p.rank, "point": fmt_point(p.point),
                         f"{metric}": score_text(p, metric), "best epoch": p.best_epoch,
                         "lost seeds": ", ".join(lost) or "–"})
    ctab = pd.DataFrame(crow)
    sec.tables.append(Table("tuning_candidates", ctab, index=False))
    add(md_table(ctab, index=False))
    add("Table: `tables/tuning_candidates.csv`. Rank 1 is the selected point. A lost seed is a tune run that "
        "diverged, failed or is missing; its point ranks below every point without one.\n")
    # sensitivity figures
    add("### Sensitivity\n")
    add(f"Per variant: left, the {metric_name(metric)} at each point's best epoch across the search space "
        f"(mean over tune seeds, band: 95% CI, t distribution; star: the selected point); right, each "
        f"candidate's mean validation curve over epochs (bold: the selected point, dot: its best epoch).\n")
    for v in sel["variants"]:
        ranked = scored[v["name"]]
        if not ranked:
            continue
        fig = Figure(f"sensitivity_{slug(v['name'])}",
                     sensitivity_figure(v["name"], ranked, v["searched"], metric, v["selected"]["point"]))
        sec.figures.append(fig)
        add(f"![sensitivity of {v['name']}]({fig.path})\n")
    return sec


def late_text(p: S.PointScore, metric: str) -> str:
    g = p.late_gain()
    if g is None:
        return "–"
    scale, unit = scale_of(metric)
    digits = 2 if metric == "val_acc" else 4
    return f"{g[0] * scale:+.{digits}f}{' pp' if unit else ''} over the last {g[1]} epoch(s)"


# ---------------------------------------------------------------- figure

def _number(x: str):
    try:
        v = yaml.safe_load(str(x))
    except yaml.YAMLError:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        try:
            return float(str(x))
        except ValueError:
            return None
    return float(v)


def sensitivity_figure(name: str, ranked: list, searched: list, metric: str, chosen: dict) -> bytes:
    scale, unit = scale_of(metric)
    ylabel = f"{metric_name(metric)}{' (%)' if unit else ''}"
    fig, axes = F.grid(1, 2, width=6.2)
    a1, a2 = axes[0]
    xkey = searched[0] if searched else None
    others = searched[1:]
    xs = [p.point.get(xkey, "defaults") if xkey else "defaults" for p in ranked]
    nums = [_number(x) for x in xs]
    numeric = all(n is not None for n in nums)
    if numeric:
        pos = dict(zip(xs, nums))
    else:
        cats = list(dict.fromkeys(x for _, x in sorted(zip([p.index for p in ranked], xs))))
        pos = {x: i for i, x in enumerate(cats)}
    series = [", ".join(f"{SHORT.get(k, k)}={p.point[k]}" for k in others) or name for p in ranked]
    order = list(dict.fromkeys(s for _, s in sorted(zip([p.index for p in ranked], series))))
    cmap = F.colors(order)
    rows = [{"x": pos[x], "y": val, "series": s} for p, x, s in zip(ranked, xs, series) for val in p.values]
    if rows:
        F.line_band(a1, pd.DataFrame(rows), "x", "y", "series", order, cmap, scale=scale, markers=True,
                    legend=len(order) > 1)
    for p, x, s in zip(ranked, xs, series):
        if p.point == chosen and math.isfinite(p.mean):
            a1.scatter([pos[x]], [p.mean * scale], marker="*", s=220, color="black", zorder=5,
                       label=f"selected: {fmt_point(p.point)}")
        if p.lost:
            a1.annotate(f"{p.lost}/{len(p.runs)} lost", (pos[x], 0.02), xycoords=("data", "axes fraction"),
                        ha="center", fontsize=7, color="red")
    if numeric and min(nums) > 0 and max(nums) / min(nums) >= 10:
        a1.set_xscale("log")
    if not numeric:
        a1.set_xticks(list(pos.values()), list(pos.keys()), fontsize=8)
    F.finish(a1, f"{name}: {metric_name(metric)} across the search space",
             SHORT.get(xkey, xkey) if xkey else "(nothing searched)", ylabel)
    for p, s in sorted(zip(ranked, series), key=lambda t: -t[0].rank):
        if not p.curve:
            continue
        ep = sorted(p.curve)
        sel = p.point == chosen
        a2.plot(ep, [p.curve[e] * scale for e in ep], "-", color="black" if sel else cmap[s],
                alpha=1.0 if sel else 0.55, linewidth=2.2 if sel else 1.0,
                label=fmt_point(p.point) if (sel or len(ranked) <= 8) else None)
        if sel and p.best_epoch is not None:
            a2.plot([p.best_epoch], [p.curve[p.best_epoch] * scale], "o", color="black", zorder=5)
    a2.xaxis.set_major_locator(MaxNLocator(integer=True))
    F.finish(a2, f"{name}: mean validation curves", "epoch", ylabel)
    return F.close(fig, axes, f"{name}: sensitivity to the searched settings",
                   note=f"{F.BAND}; curves: mean over tune seeds")
