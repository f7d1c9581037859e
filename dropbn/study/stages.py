"""The stages of `dropbn study` on a Plan: tune -> select (selected.yaml) -> final, then the report it is given."""
from __future__ import annotations

import shlex
import time

import yaml

from . import selection as S
from ..config import registration as R
from ..config.claims_file import load as load_claims
from ..record.layout import atomic_write_text
from .overrides import fmt_point, ov_value
from .plan import STAGE_TUNE, Plan, Sweep
from .search_optuna import tune_optuna
from .sweeps import log, run_stage


class Study(Plan):
    """`dropbn study`: the plan (made on construction, nothing trained), then run() its stages."""

    def tune(self) -> dict:
        """-> {variant name: [{"point": {...}, "runs": [{"seed", "run"}], "trial": n?}]} in search order."""
        grid = self.tune_sweeps()
        run_stage(self.dir, list(grid.values()), workers=self.workers)  # every grid, then the wait for others
        cands = {}
        for v in self.variants:
            if v.name in grid:
                cands[v.name] = self.candidates(v, v.grid(), grid[v.name].jobs)
            else:
                cands[v.name] = tune_optuna(self, v)
        return cands

    def select(self, cands: dict) -> dict:
        """Score and rank every variant's candidates; plan the final runs; write selected.yaml."""
        spec = self.spec
        out_variants = []
        self.finals: list[Sweep] = []
        for v in self.variants:
            ranked = S.score_variant(self.dir / STAGE_TUNE, cands[v.name], spec.select)
            best = ranked[0]
            epochs, why = S.final_epochs(best)
            extra = self.final_extra(v, epochs)
            sw = self.final_sweep(v, best)
            self.finals.append(sw)
            by_index = sorted(ranked, key=lambda p: p.index)
            trials = {i: c.get("trial") for i, c in enumerate(cands[v.name])}
            recs = []
            for p in by_index:
                r = S.point_record(p)
                if trials.get(p.index) is not None:
                    r["trial"] = trials[p.index]
                recs.append(r)
            out_variants.append({
                "name": v.name, "overrides": v.overrides,
                "searched": [k for k, _ in v.search],
                "skipped": dict(v.skipped),
                "selected": {
                    "point": best.point, "overrides": v.point_overrides(best.point),
                    spec.select: {"mean": S.rounded(best.mean), "ci95": S.rounded(best.ci95), "n": best.n},
                    "best_epoch": best.best_epoch, "tune_epochs": best.epochs, "final_epochs": epochs,
                    "epochs_rule": why, "lost_seeds": best.lost, "candidates": len(ranked),
                },
                "final_overrides": v.overrides + v.point_overrides(best.point) + extra,
                "final_runs": [{"seed": s, "run": f} for _, s, f in sw.jobs],
                "candidates": recs,
            })
        doc = {
            "study": self.name,
            "command": "dropbn study " + shlex.join(self.argv),
            "select": spec.select, "direction": S.METRIC_DIRECTION[spec.select],
            "rule": S.rule_text(spec.select),
            "searcher": spec.searcher, **({"trials": spec.trials} if spec.searcher == "optuna" else {}),
            "search_space": {k: [ov_value(x) for x in vals] for k, vals in spec.search},
            "tune_seeds": spec.tune_seeds, "final_seeds": spec.final_seeds,
            "val_size": int(self.variants[0].cfg.data.val_size),
            "final_val_size": spec.final_val_size,
            "final_overrides": {k: ov_value(x) for k, x in spec.final_overrides},
            "schedule": self.schedule,
            "overrides": self.passed,
            "variants": out_variants,
        }
        # the claims, fixed before the final stage trains (kept from an earlier call once a final run exists)
        doc[R.KEY] = R.for_study(R.read_yaml(self.dir / S.SELECTED), self.dir / S.FINAL, load_claims(spec.claims))
        atomic_write_text("# dropbn study: the selection (validation metrics only). Written by `dropbn study`;\n"
                          "# point values are override text, as passed to `dropbn train`.\n"
                          + yaml.dump(doc, Dumper=_NoAliases, sort_keys=False, allow_unicode=True, width=110),
                          self.dir / S.SELECTED)
        return doc

    def final(self) -> None:
        run_stage(self.dir, self.finals, workers=self.workers)

    def run(self, report) -> int:
        """Tune, select, final, then `report(study folder, claims files)` -> the report's path (the study
        command passes dropbn.report.study_report.build: the study package does not import the report)."""
        t0 = time.monotonic()
        try:
            n_tune = sum(len(v.grid()) if self.spec.searcher == "grid" else self.optuna_budget(v)
                         for v in self.variants) * len(self.spec.tune_seeds)
            log(f"{self.name}: {len(self.variants)} variant(s), {self.spec.searcher} search, "
                f"{n_tune} tune run(s), {len(self.variants) * len(self.spec.final_seeds)} final run(s) in {self.dir}")
            for v in self.variants:
                keys = ", ".join(f"{k} ({len(vals)})" for k, vals in v.search) or "nothing (epoch only)"
                skip = "; skipped: " + "; ".join(v.skipped.values()) if v.skipped else ""
                log(f"  {v.name}: searches {keys}{skip}")
            for key in self.unused:
                log(f"  study.search.{key} applies to no variant (each rejects it): not searched")
            cands = self.tune()
            doc = self.select(cands)
            log(f"selected ({self.spec.select}, mean over tune seeds) -> {self.dir / S.SELECTED}")
            print(selection_table(doc), flush=True)
            self.final()
            path = report(self.dir, self.spec.claims)
            log(f"report: {path}")
            log(f"done in {time.monotonic() - t0:.0f} s")
            return 0
        finally:
            self.hy.close()


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data):
        return True


def selection_table(doc: dict) -> str:
    metric = doc["select"]
    scale = 100 if metric == "val_acc" else 1
    rows = [("variant", "selected", f"{metric} (mean ± 95% CI, n)", "best epoch", "final epochs", "candidates")]
    for v in doc["variants"]:
        s = v["selected"]
        m = s[metric]
        score = "–" if m["mean"] is None else f"{m['mean'] * scale:.2f}" + (
            f" ± {m['ci95'] * scale:.2f}" if m["ci95"] is not None else "") + f" (n={m['n']})"
        rows.append((v["name"], fmt_point(s["point"]), score, str(s["best_epoch"]),
                     str(s["final_epochs"] or s["tune_epochs"]), str(s["candidates"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)
