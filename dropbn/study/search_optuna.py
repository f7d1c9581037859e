"""`study.searcher=optuna`: a variant's search points drawn by Optuna's TPE sampler, resumable from
`<out_root>/<name>/optuna.db` (Optuna is optional: imported only by this searcher)."""
from __future__ import annotations

import hashlib
import json
import math
import random
import zlib

from . import selection as S
from .overrides import fmt_point, ov_value
from .plan import STAGE_TUNE, Plan, Variant
from .spec import optuna_module
from .sweeps import log, run_stage


def study_name(st: Plan, v: Variant) -> str:
    """The Optuna study of a variant: its name and a hash of everything that defines its search."""
    ident = json.dumps([st.passed, v.overrides, [(k, [ov_value(x) for x in vals]) for k, vals in v.search],
                        st.spec.tune_seeds, st.spec.select], sort_keys=True)
    return f"{v.name} {hashlib.sha1(ident.encode()).hexdigest()[:10]}"


def tune_optuna(st: Plan, v: Variant) -> list[dict]:
    """Evaluate st.optuna_budget(v) distinct points (finishing an interrupted trial first) -> candidates."""
    optuna = optuna_module()
    TrialState = optuna.trial.TrialState
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    st.dir.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{(st.dir / 'optuna.db').resolve()}"
    direction = "maximize" if S.METRIC_DIRECTION[st.spec.select] == "max" else "minimize"
    sampler = optuna.samplers.TPESampler(seed=zlib.crc32(v.name.encode()))
    ost = optuna.create_study(study_name=study_name(st, v), storage=storage, load_if_exists=True,
                              direction=direction, sampler=sampler)
    dists = {k: optuna.distributions.CategoricalDistribution([ov_value(x) for x in vals])
             for k, vals in v.search}
    keys = [k for k, _ in v.search]
    finished = (TrialState.COMPLETE, TrialState.FAIL)
    budget = st.optuna_budget(v)
    for t in ost.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # cut off by an interruption
        if not all(k in t.params for k in keys):  # killed before its point was drawn
            ost.tell(t.number, state=TrialState.FAIL)
            continue
        log(f"tune {v.name}: finishing optuna trial {t.number} of an interrupted call")
        optuna_trial(st, ost, v, t.number, {k: t.params[k] for k in keys})
    rng = random.Random(zlib.crc32(v.name.encode()))
    repeats = 0
    while True:
        done = {tuple(t.params[k] for k in keys): t for t in ost.get_trials(deepcopy=False, states=finished)
                if all(k in t.params for k in keys)}
        if len(done) >= budget:
            break
        if repeats >= 3:  # the sampler keeps proposing evaluated points: try an unevaluated one
            left = [p for p in v.grid() if tuple(p[k] for k in keys) not in done]
            ost.enqueue_trial(rng.choice(left))
            repeats = 0
        t = ost.ask(dists)
        p = {k: t.params[k] for k in keys}
        old = done.get(tuple(p.values()))
        if old is not None:  # a repeat: same runs, same value; it does not count toward the budget
            repeats += 1
            if old.state == TrialState.COMPLETE:
                ost.tell(t.number, old.value)
            else:
                ost.tell(t.number, state=TrialState.FAIL)
            continue
        repeats = 0
        log(f"tune {v.name}: optuna point {len(done) + 1}/{budget} (trial {t.number}): {fmt_point(p)}")
        optuna_trial(st, ost, v, t.number, p)
    seen, cands = set(), []
    for t in sorted(ost.get_trials(deepcopy=False, states=finished), key=lambda t: t.number):
        if not all(k in t.params for k in keys):
            continue
        p = {k: t.params[k] for k in keys}
        key = tuple(p.values())
        if key in seen:
            continue
        seen.add(key)
        sw = st.point_sweep(STAGE_TUNE, v, p, st.spec.tune_seeds)
        c = st.candidates(v, [p], sw.jobs)[0]
        c["trial"] = t.number
        cands.append(c)
    return cands


def optuna_trial(st: Plan, ost, v: Variant, number: int, point: dict) -> None:
    """Train a trial's runs (unless done) and tell Optuna its mean validation metric."""
    sw = st.point_sweep(STAGE_TUNE, v, point, st.spec.tune_seeds)
    run_stage(st.dir, [sw])
    c = st.candidates(v, [point], sw.jobs)[0]
    TrialState = optuna_module().trial.TrialState
    ps = S.score_variant(st.dir / STAGE_TUNE, [c], st.spec.select)[0]
    if ps.lost or not math.isfinite(ps.mean):
        ost.tell(number, state=TrialState.FAIL)
    else:
        ost.tell(number, ps.mean)
