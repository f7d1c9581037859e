"""`dropbn study +exp=NAME [overrides]`: a fair comparison in one command.

Stages (each one resumable; a finished study run again trains nothing):
  tune    each variant (`study.variants`: config keys -> lists, their product) at every point
          of its search space (`study.search`, the same mapping form) with `study.tune_seeds`,
          trained on the training split minus `data.val_size` validation images;
  select  per variant, the point (and epoch) with the best mean validation metric
          (dropbn/selection.py states the rule) -> `<out_root>/<name>/selected.yaml`;
  final   each variant at its selected point with fresh seeds `study.final_seeds`,
          evaluated on the test set;
  report  `<out_root>/<name>/report/`: the comparison from final/ plus the tuned section.

Each stage runs as ordinary sweeps, one per variant, through `dropbn train -m` in a child
process, with the user's overrides (so the configured Hydra launcher, skip and resume work as
for any sweep): `out_root=<out_root>/<name> name=tune|final`. No study.* override is passed down,
and `study` is a non-result key (dropbn.runs.NON_RESULT_KEYS), so study.* never enters a run's
folder name or identity.

A search key that a variant's validation rejects (a dropout rate for reg=none) is skipped for
that variant (selected.yaml and the report say which keys applied to which variant); every
variant otherwise gets the same space and budget. `study.searcher=optuna` samples
`study.trials` points per variant with Optuna's TPE sampler from the same lists, storing the
search in `<out_root>/<name>/optuna.db` so an interrupted search resumes.
"""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from . import selection as S
from .config import FREE_FORM_KEYS
from .errors import ConfigError, DropbnError, Interrupted

USAGE = """usage: dropbn study +exp=NAME [overrides]

Tune every compared variant on a validation split, select each one's best setting on
validation only, re-train it with fresh seeds on the test set and report:
  dropbn study +exp=tuned_mnist_mlp
  dropbn study +exp=tuned_mnist_mlp 'study.search.optim.lr=[0.03,0.1]' 'study.final_seeds=[100,101,102]'
Overrides are those of `dropbn train` (dropbn train --help lists them), plus the study.* keys:
  study.variants, study.search   config keys -> lists of values (keys not in a preset need +)
  study.tune_seeds, study.final_seeds, study.select (val_acc | val_loss),
  study.searcher (grid | optuna), study.trials, study.final_val_size, study.final_overrides
Output: <out_root>/<name>/{tune,final}/<run>/, selected.yaml, report/report.md.
Run the same command again to continue an interrupted study; a finished one trains nothing."""

STAGE_TUNE, STAGE_FINAL = "tune", "final"
SELECTS = tuple(S.METRIC_DIRECTION)
SEARCHERS = ("grid", "optuna")
# keys a study sets itself (or that do not change what a run computes): never searched or compared
NOT_SEARCHABLE = ("seed", "name", "out_root", "device", "data.root", "data.cache_dir", "data.download",
                  "train.force", "train.progress", "train.threads", "train.diagnostics")
DONE = ("completed", "diverged")                 # a run that a re-run would not change
TERMINAL = ("completed", "diverged", "failed")   # a run that ended (a failed one is retried next time)
MAX_CHECKED_POINTS = 10000                       # up-front validation of every grid point up to this


def log(msg: str) -> None:
    print(f"study: {msg}", flush=True)


# ---------------------------------------------------------------- override text

_PLAIN = re.compile(r"^[A-Za-z0-9_.\-/]+$")
_PARSER = None


def _parses_as_itself(s: str) -> bool:
    global _PARSER
    if _PARSER is None:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        _PARSER = OverridesParser.create()
    try:
        return _PARSER.parse_overrides([f"x={s}"])[0].value() == s
    except Exception:
        return False


def ov_value(v) -> str:
    """A Python value as Hydra override text (the inverse of Hydra's parser for these types)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(ov_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{ov_value(x)}" for k, x in v.items()) + "}"
    s = str(v)
    if _PLAIN.match(s) and _parses_as_itself(s):  # not a number, bool or null in disguise
        return s
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def to_py(node):
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, (DictConfig, ListConfig)) else node


def flatten_space(node, where: str) -> list[tuple[str, list]]:
    """{optim: {lr: [0.01, 0.1]}, reg: [none, both]} -> [("optim.lr", [0.01, 0.1]), ("reg", [none, both])]."""
    node = to_py(node)
    if node is None:
        return []
    if not isinstance(node, dict):
        raise ConfigError(where, node, "must be a mapping of config keys to lists of values, "
                                       "e.g. {optim: {lr: [0.01, 0.1]}}")
    out: list[tuple[str, list]] = []

    def walk(d: dict, prefix: str):
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                if not v:
                    raise ConfigError(f"{where}.{key}", v, "is an empty mapping: give config keys with lists of values")
                walk(v, key + ".")
            elif isinstance(v, list):
                if not v:
                    raise ConfigError(f"{where}.{key}", v, "must be a non-empty list of values")
                texts = [ov_value(x) for x in v]
                if len(set(texts)) != len(texts):
                    raise ConfigError(f"{where}.{key}", v, "lists a value twice")
                out.append((key, v))
            else:
                raise ConfigError(f"{where}.{key}", v, f"must be a list of values, e.g. "
                                                       f"'{where}.{key}=[{ov_value(v)}]'")

    walk(node, "")
    return out


def flatten_values(node, where: str) -> list[tuple[str, object]]:
    """{data: {train_size: null}} -> [("data.train_size", None)] (one value per key)."""
    node = to_py(node)
    if node is None:
        return []
    if not isinstance(node, dict):
        raise ConfigError(where, node, "must be a mapping of config keys to values, e.g. {data: {train_size: null}}")
    out = []

    def walk(d: dict, prefix: str):
        for k, v in d.items():
            if isinstance(v, dict) and v:
                walk(v, f"{prefix}{k}.")
            else:
                out.append((f"{prefix}{k}", v))

    walk(node, "")
    return out


# ---------------------------------------------------------------- the plan

@dataclass
class Variant:
    """One compared configuration and the search space that applies to it."""

    name: str                                  # "reg=none"
    overrides: list                            # ["reg=none"]
    cfg: DictConfig                            # base + variant, composed
    search: list = field(default_factory=list)       # [(key, [values])] that apply
    skipped: dict = field(default_factory=dict)      # key -> why it does not apply
    prefix: dict = field(default_factory=dict)       # key -> "" or "+" (absent from the config)

    def point_overrides(self, point: dict) -> list[str]:
        return [f"{self.prefix[k]}{k}={v}" for k, v in point.items()]

    def grid(self) -> list[dict]:
        keys = [k for k, _ in self.search]
        return [dict(zip(keys, combo)) for combo in
                itertools.product(*[[ov_value(x) for x in vals] for _, vals in self.search])]


@dataclass
class Spec:
    variants: list                 # [(key, [values])]
    search: list                   # [(key, [values])]
    tune_seeds: list
    final_seeds: list
    select: str
    searcher: str
    trials: int
    final_val_size: int | None
    final_overrides: list          # [(key, value)]


def _seeds(node, key: str) -> list[int]:
    v = to_py(node)
    if (not isinstance(v, list) or not v or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                    for s in v)):
        raise ConfigError(key, v, "must be a non-empty list of integers >= 0, e.g. [0, 1]")
    if len(set(v)) != len(v):
        raise ConfigError(key, v, "lists a seed twice")
    return list(v)


def parse_spec(cfg: DictConfig) -> Spec:
    """The study node, checked (one ConfigError naming key, value and what is allowed)."""
    st = cfg.get("study")
    if not isinstance(st, DictConfig):
        raise ConfigError("study", to_py(st), "missing: dropbn study needs the study node of configs/train.yaml")
    variants = flatten_space(st.get("variants"), "study.variants")
    if not variants:
        raise ConfigError("study.variants", to_py(st.get("variants")),
                          "must name at least one compared key, e.g. {reg: [none, dropout, batchnorm, both]}")
    search = flatten_space(st.get("search"), "study.search")
    tune = _seeds(st.get("tune_seeds"), "study.tune_seeds")
    final = _seeds(st.get("final_seeds"), "study.final_seeds")
    both = sorted(set(tune) & set(final))
    if both:
        raise ConfigError("study.final_seeds", final, f"must not share seeds with study.tune_seeds={tune} "
                                                      f"(both have {both}): final runs need fresh seeds")
    select = st.get("select")
    if select not in SELECTS:
        raise ConfigError("study.select", select, f"allowed: {', '.join(SELECTS)}")
    searcher = st.get("searcher")
    if searcher not in SEARCHERS:
        raise ConfigError("study.searcher", searcher, f"allowed: {', '.join(SEARCHERS)}")
    trials = st.get("trials")
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise ConfigError("study.trials", trials, "must be an integer >= 1")
    fvs = st.get("final_val_size")
    if fvs is not None and (not isinstance(fvs, int) or isinstance(fvs, bool) or fvs < 0):
        raise ConfigError("study.final_val_size", fvs, "must be null (keep data.val_size) or an integer >= 0 "
                                                       "(0 = retrain on all training images)")
    fo = flatten_values(st.get("final_overrides"), "study.final_overrides")
    keys = {k for k, _ in variants}
    for k, _ in search:
        if k in keys:
            raise ConfigError(f"study.search.{k}", dict(search)[k], "is also a study.variants key; a key is "
                                                                     "either compared or tuned")
    for k, v in fo:
        if k in keys or k in dict(search) or k in ("seed", "train.epochs", "data.val_size"):
            raise ConfigError(f"study.final_overrides.{k}", v,
                              "is set by the study itself (variants, search, seeds, the selected epoch count, "
                              "study.final_val_size)")
    for where, items in (("study.variants", variants), ("study.search", search), ("study.final_overrides", fo)):
        for k, v in items:
            if k in NOT_SEARCHABLE or k.startswith("study") or k.startswith("hydra"):
                raise ConfigError(f"{where}.{k}", v, "is not a setting of what a run computes; allowed: "
                                                     "model, data, reg, optim and train keys")
    if searcher == "optuna":
        optuna_module()
    return Spec(variants, search, tune, final, select, searcher, trials, fvs, fo)


def optuna_module():
    try:
        import optuna
    except ImportError:
        raise DropbnError("study.searcher=optuna needs Optuna: pip install 'dropbn[search]' "
                          "(or pip install optuna)") from None
    return optuna


# ---------------------------------------------------------------- composing with Hydra

class Composer:
    """Hydra's compose API on the real configs/ tree, kept open for the whole study."""

    def __init__(self):
        from hydra import initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.override_parser.overrides_parser import OverridesParser

        from .config import CONFIG_DIR

        self._stack = contextlib.ExitStack()
        self._stack.enter_context(initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3",
                                                        job_name="dropbn"))
        self.loader = GlobalHydra.instance().config_loader()
        self.parser = OverridesParser.create(config_loader=self.loader)
        self.config_dir = CONFIG_DIR

    def close(self):
        self._stack.close()

    def compose(self, overrides: list[str], hydra: bool = False) -> DictConfig:
        from hydra import compose

        from .precheck import OverrideError, explain

        try:
            return compose("train", list(overrides), return_hydra_config=hydra)
        except Exception as e:
            msg = str(e)
            m = re.search(r"To append to your config use (\+\S+)", msg)
            key = m.group(1).lstrip("+").partition("=")[0] if m else ""
            if m and key.startswith(tuple(k + "." for k in FREE_FORM_KEYS)):  # a mapping the preset lacks
                raise OverrideError(f"{key}: not in this preset's study node; add it with Hydra's +: "
                                    f"{m.group(1)}") from None
            raise OverrideError(explain(e, overrides, self.loader)) from None

    def parse(self, lines: list[str]) -> list:
        from .precheck import _parse_overrides

        return _parse_overrides(lines, self.loader)

    def value(self, text: str):
        """Override text -> the Python value Hydra would set."""
        return self.parser.parse_overrides([f"x={text}"])[0].value()

    def is_group(self, key: str) -> bool:
        return "." not in key and (self.config_dir / key).is_dir() and key not in ("exp", "hydra")

    def group_options(self, key: str) -> list[str]:
        return sorted(p.stem for p in (self.config_dir / key).glob("*.yaml"))


def merge_overrides(base: list[str], extra: list[str], parser) -> list[str]:
    """base + extra, where an extra override replaces a base override of the same key."""
    keys = {o.key_or_group for o in parser.parse_overrides(extra)} if extra else set()
    kept = [line for line, o in zip(base, parser.parse_overrides(base) if base else []) if o.key_or_group not in keys]
    return kept + list(extra)


# ---------------------------------------------------------------- the study

@dataclass
class Sweep:
    """One `dropbn train -m` call: its arguments and the run folders it makes."""

    stage: str
    variant: Variant
    args: list
    jobs: list                      # [(point_key tuple, seed, run folder name)]


class Study:
    def __init__(self, argv: list[str]):
        for a in argv:
            if a.startswith("-"):
                raise DropbnError(f"study: {a}: dropbn study takes config overrides only "
                                  f"(+exp=NAME key=value ...); see dropbn study --help")
        _no_sweeps(argv)
        self.argv = list(argv)
        self.hy = Composer()
        try:
            self._plan()
        except BaseException:
            self.hy.close()
            raise

    # ------------------------------------------------------------ planning (no training)

    def _plan(self) -> None:
        from .config import validate
        from .precheck import OverrideError, _check_group_choices, explain

        hy = self.hy
        parsed = hy.parse(self.argv)  # malformed overrides, named one by one
        _check_group_choices(parsed, hy.loader)
        self.passed: list[str] = []    # overrides passed down to every training sweep
        for line, o in zip(self.argv, parsed):
            key = o.key_or_group
            if key == "study" or key.startswith("study.") or key in ("name", "out_root"):
                continue
            if key == "seed":
                raise DropbnError(f"study: {line}: the study sets the seeds; use study.tune_seeds / study.final_seeds")
            if key == "train.force" and str(o.value()).lower() == "true":
                raise DropbnError(f"study: {line}: not supported; a study re-uses its finished runs. "
                                  f"Delete <out_root>/<name>/tune or final to train them again")
            self.passed.append(line)
        hcfg = hy.compose(self.argv, hydra=True)
        params = OmegaConf.select(hcfg, "hydra.sweeper.params")
        if params:
            raise DropbnError(f"study: the config sets hydra.sweeper.params ({', '.join(params)}): a study runs "
                              f"its own sweeps; use a study preset (configs/exp/tuned_*.yaml) or move the "
                              f"values into study.variants / study.search")
        zd = hcfg.hydra.job.config.override_dirname
        self.exclude_keys = list(zd.exclude_keys)
        self.item_sep, self.kv_sep = zd.item_sep, zd.kv_sep
        base = hcfg.copy()
        with open_dict(base):
            del base["hydra"]
        try:
            validate(base)  # the base config: every user override is valid on its own
        except DropbnError:
            raise
        except Exception as e:  # an interpolation that does not resolve, ...
            raise OverrideError(explain(e, self.argv, hy.loader)) from None
        self.spec = spec = parse_spec(base)
        self.name = str(base.name)
        self.out_root = str(base.out_root)
        self.dir = Path(self.out_root).expanduser() / self.name
        self.schedule = str(base.train.schedule)

        passed_keys = {o.key_or_group for o in hy.parse(self.passed)} if self.passed else set()
        tuned = [k for k, _ in spec.variants] + [k for k, _ in spec.search] + [k for k, _ in spec.final_overrides]
        for k in tuned:
            if k in passed_keys:
                raise DropbnError(f"study: {k} is set on the command line and by the study (study.variants, "
                                  f"study.search or study.final_overrides); set it in one place")
        for where, items in (("study.variants", spec.variants), ("study.search", spec.search)):
            for key, values in items:
                self._check_key(where, key, values)

        self.variants: list[Variant] = []
        keys = [k for k, _ in spec.variants]
        for combo in itertools.product(*[vals for _, vals in spec.variants]):
            ovs = []
            for k, v in zip(keys, combo):
                pre = "" if hy.is_group(k) or OmegaConf.select(base, k, default=_ABSENT) is not _ABSENT else "+"
                ovs.append(f"{pre}{k}={ov_value(v)}")
            name = ",".join(f"{k}={ov_value(v)}" for k, v in zip(keys, combo))
            cfg = hy.compose(self.passed + ovs)
            try:
                validate(cfg)
            except DropbnError as e:
                raise DropbnError(f"study: variant {name}: {e}") from None
            vs = OmegaConf.select(cfg, "data.val_size")
            if not isinstance(vs, int) or vs <= 0:
                raise ConfigError("data.val_size", vs, "must be > 0 for dropbn study: the tune stage selects on "
                                                       "a validation split held out from the training set "
                                                       "(e.g. data.val_size=5000)")
            self.variants.append(Variant(name, ovs, cfg))
        if len({v.name for v in self.variants}) != len(self.variants):
            raise ConfigError("study.variants", to_py(base.study.variants), "two variants are the same")
        self.unused = []  # search keys no variant's configuration accepts (e.g. a dropout rate, no dropout)
        for key, values in spec.search:
            if not any([self._applies(v, key, values) for v in self.variants]):
                self.unused.append(key)
        for v in self.variants:
            self._check_points(v)
            self._check_final(v)

    def _check_key(self, where: str, key: str, values: list) -> None:
        from .config import unknown_key_hint
        from .schema import RULES

        if self.hy.is_group(key):
            options = self.hy.group_options(key)
            for x in values:
                if not isinstance(x, str) or x not in options:
                    raise ConfigError(f"{where}.{key}", x, f"allowed: {', '.join(options)}")
        elif key not in RULES or key.startswith("study."):
            raise ConfigError(f"{where}.{key}", values, unknown_key_hint(key))

    def _with(self, v: Variant, items: list[tuple[str, str]]) -> DictConfig:
        """The variant's config with search overrides applied (group keys compose)."""
        if any(self.hy.is_group(k) for k, _ in items):
            return self.hy.compose(self.passed + v.overrides + [f"{v.prefix.get(k, '')}{k}={x}" for k, x in items])
        c = v.cfg.copy()
        for k, x in items:
            OmegaConf.update(c, k, self.hy.value(x), force_add=True)
        return c

    def _applies(self, v: Variant, key: str, values: list) -> bool:
        """Whether every value of a search key validates for this variant (else the key is skipped)."""
        from .config import validate

        v.prefix[key] = "" if self.hy.is_group(key) or \
            OmegaConf.select(v.cfg, key, default=_ABSENT) is not _ABSENT else "+"
        for x in values:
            try:
                validate(self._with(v, [(key, ov_value(x))]))
            except ConfigError as e:
                if e.key == key:  # the value itself is invalid, whatever the variant
                    raise ConfigError(f"study.search.{key}", x, e.allowed) from None
                v.skipped[key] = str(e)  # the variant's configuration rejects the key (another key's check)
                return False
        v.search.append((key, values))
        return True

    def _check_points(self, v: Variant) -> None:
        from .config import validate

        n = math.prod(len(vals) for _, vals in v.search) if v.search else 1
        if n > MAX_CHECKED_POINTS:
            return  # each value was checked on its own; the runs' pre-check covers the combinations
        for point in v.grid():
            try:
                validate(self._with(v, list(point.items())))
            except DropbnError as e:
                raise DropbnError(f"study: variant {v.name}, point {fmt_point(point)}: {e}") from None

    def _check_final(self, v: Variant) -> None:
        """The final runs' extra settings compose and validate (with the first search point)."""
        from .config import validate

        extra = self._final_extra(v, None)
        if not extra:
            return
        point = v.grid()[0] if v.search else {}
        cfg = self.hy.compose(merge_overrides(self.passed + v.overrides + v.point_overrides(point), extra,
                                              self.hy.parser))
        try:
            validate(cfg)
        except DropbnError as e:
            raise DropbnError(f"study: final runs of {v.name}: {e}") from None

    def _final_extra(self, v: Variant, epochs: int | None) -> list[str]:
        extra = []
        if epochs is not None and epochs != v.cfg.train.epochs:
            extra.append(f"train.epochs={epochs}")
        if self.spec.final_val_size is not None and self.spec.final_val_size != v.cfg.data.val_size:
            extra.append(f"data.val_size={self.spec.final_val_size}")
        for k, x in self.spec.final_overrides:
            pre = "" if OmegaConf.select(v.cfg, k, default=_ABSENT) is not _ABSENT else "+"
            extra.append(f"{pre}{k}={ov_value(x)}")
        return extra

    # ------------------------------------------------------------ sweeps

    def _sweep(self, stage: str, v: Variant, body: list[str], search_keys: list[str], seeds: list[int]) -> Sweep:
        from .config import dirname
        from .precheck import expand_jobs
        from hydra._internal.config_loader_impl import get_overrides_dirname

        seed = [f"seed={','.join(str(s) for s in seeds)}"]
        where = [f"out_root={ov_value(str(self.dir))}", f"name={stage}"]
        args = body + seed + where
        jobs = []
        for job in expand_jobs(args, True, self.hy.loader):
            parsed = self.hy.parser.parse_overrides(job)
            app = [o for o in parsed if not o.is_hydra_override()]
            folder = dirname(get_overrides_dirname(app, self.exclude_keys, self.item_sep, self.kv_sep))
            values = {o.key_or_group: o for o in app}
            point = tuple(ov_value(values[k].value()) for k in search_keys)
            jobs.append((point, int(values["seed"].value()), folder))
        return Sweep(stage, v, args, jobs)

    def _status(self, stage: str, folder: str) -> str:
        return S.read_val_run(self.dir / stage, folder, 0).status

    def run_sweep(self, sw: Sweep) -> None:
        """Train the sweep's missing runs (nothing when every run is done)."""
        todo = [j for j in sw.jobs if self._status(sw.stage, j[2]) not in DONE]
        what = f"{sw.stage} {sw.variant.name}"
        if not todo:
            log(f"{what}: all {len(sw.jobs)} run(s) done")
            return
        log(f"{what}: {len(todo)} of {len(sw.jobs)} run(s) to train")
        cmd = [*train_command(), "train", "-m", *sw.args]
        print(f"$ dropbn train -m {shlex.join(sw.args)}", flush=True)
        rc = run_child(cmd)
        if rc in (130, 143):
            raise Interrupted(f"study interrupted during {what}; run the same command again to continue",
                              rc - 128)
        if rc != 0:
            ended = [j for j in sw.jobs if self._status(sw.stage, j[2]) in TERMINAL]
            if len(ended) < len(sw.jobs):
                err = StageError(f"study stopped: {what}: dropbn train exited with code {rc} (its message is "
                                 f"above); {len(sw.jobs) - len(ended)} run(s) unfinished. Run the same command "
                                 f"again to continue")
                err.exit_code = rc if 0 < rc < 126 else 1
                raise err
            log(f"{what}: dropbn train exited with code {rc}, every run ended; failed runs lose the selection")

    # ------------------------------------------------------------ stages

    def tune(self) -> dict:
        """-> {variant name: [{"point": {...}, "runs": [{"seed", "run"}], "trial": n?}]} in search order."""
        cands = {}
        for v in self.variants:
            if self.spec.searcher == "optuna" and v.search:
                cands[v.name] = self._tune_optuna(v)
            else:
                keys = [k for k, _ in v.search]
                body = self.passed + v.overrides + [f"{v.prefix[k]}{k}={','.join(ov_value(x) for x in vals)}"
                                                    for k, vals in v.search]
                sw = self._sweep(STAGE_TUNE, v, body, keys, self.spec.tune_seeds)
                self.run_sweep(sw)
                cands[v.name] = self._candidates(v, [dict(zip(keys, p)) for p in _grid_tuples(v)], sw.jobs)
        return cands

    def _candidates(self, v: Variant, points: list[dict], jobs: list) -> list[dict]:
        keys = [k for k, _ in v.search]
        out = []
        for p in points:
            t = tuple(p[k] for k in keys)
            runs = [{"seed": s, "run": f} for pt, s, f in jobs if pt == t]
            out.append({"point": p, "runs": sorted(runs, key=lambda r: self.spec.tune_seeds.index(r["seed"]))})
        return out

    def _optuna_name(self, v: Variant) -> str:
        ident = json.dumps([self.passed, v.overrides, [(k, [ov_value(x) for x in vals]) for k, vals in v.search],
                            self.spec.tune_seeds, self.spec.select], sort_keys=True)
        return f"{v.name} {hashlib.sha1(ident.encode()).hexdigest()[:10]}"

    def _tune_optuna(self, v: Variant) -> list[dict]:
        optuna = optuna_module()
        from optuna.distributions import CategoricalDistribution
        from optuna.trial import TrialState

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.dir.mkdir(parents=True, exist_ok=True)
        storage = f"sqlite:///{(self.dir / 'optuna.db').resolve()}"
        direction = "maximize" if S.METRIC_DIRECTION[self.spec.select] == "max" else "minimize"
        sampler = optuna.samplers.TPESampler(seed=zlib.crc32(v.name.encode()))
        ost = optuna.create_study(study_name=self._optuna_name(v), storage=storage, load_if_exists=True,
                                  direction=direction, sampler=sampler)
        dists = {k: CategoricalDistribution([ov_value(x) for x in vals]) for k, vals in v.search}
        keys = [k for k, _ in v.search]
        finished = (TrialState.COMPLETE, TrialState.FAIL)
        budget = self.optuna_budget(v)
        for t in ost.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # cut off by an interruption
            if not all(k in t.params for k in keys):  # killed before its point was drawn
                ost.tell(t.number, state=TrialState.FAIL)
                continue
            log(f"tune {v.name}: finishing optuna trial {t.number} of an interrupted call")
            self._optuna_trial(ost, v, t.number, {k: t.params[k] for k in keys})
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
            self._optuna_trial(ost, v, t.number, p)
        seen, cands = set(), []
        for t in sorted(ost.get_trials(deepcopy=False, states=finished), key=lambda t: t.number):
            if not all(k in t.params for k in keys):
                continue
            p = {k: t.params[k] for k in keys}
            key = tuple(p.values())
            if key in seen:
                continue
            seen.add(key)
            sw = self._point_sweep(STAGE_TUNE, v, p, self.spec.tune_seeds)
            c = self._candidates(v, [p], sw.jobs)[0]
            c["trial"] = t.number
            cands.append(c)
        return cands

    def optuna_budget(self, v: Variant) -> int:
        """Distinct points Optuna evaluates for a variant: study.trials, or its whole space if smaller."""
        return min(self.spec.trials, math.prod(len(vals) for _, vals in v.search) if v.search else 1)

    def _point_sweep(self, stage: str, v: Variant, point: dict, seeds: list[int], extra=()) -> Sweep:
        body = merge_overrides(self.passed + v.overrides + v.point_overrides(point), list(extra), self.hy.parser)
        return self._sweep(stage, v, body, list(point), seeds)

    def _optuna_trial(self, ost, v: Variant, number: int, point: dict) -> None:
        sw = self._point_sweep(STAGE_TUNE, v, point, self.spec.tune_seeds)
        self.run_sweep(sw)
        c = self._candidates(v, [point], sw.jobs)[0]
        ps = S.score_variant(self.dir / STAGE_TUNE, [c], self.spec.select)[0]
        from optuna.trial import TrialState

        if ps.lost or not math.isfinite(ps.mean):
            ost.tell(number, state=TrialState.FAIL)
        else:
            ost.tell(number, ps.mean)

    def select(self, cands: dict) -> dict:
        """Score and rank every variant's candidates; plan the final runs; write selected.yaml."""
        spec = self.spec
        out_variants = []
        self.finals: list[Sweep] = []
        for v in self.variants:
            ranked = S.score_variant(self.dir / STAGE_TUNE, cands[v.name], spec.select)
            best = ranked[0]
            epochs, why = S.final_epochs(best)
            extra = self._final_extra(v, epochs)
            sw = self._point_sweep(STAGE_FINAL, v, best.point, spec.final_seeds, extra)
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
        from .runs import atomic_write_text

        atomic_write_text("# dropbn study: the selection (validation metrics only). Written by `dropbn study`;\n"
                          "# point values are override text, as passed to `dropbn train`.\n"
                          + yaml.dump(doc, Dumper=_NoAliases, sort_keys=False, allow_unicode=True, width=110),
                          self.dir / S.SELECTED)
        return doc

    def final(self) -> None:
        for sw in self.finals:
            self.run_sweep(sw)

    def report(self) -> Path:
        from .report.study import build

        return build(self.dir)

    def run(self) -> int:
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
            path = self.report()
            log(f"report: {path}")
            log(f"done in {time.monotonic() - t0:.0f} s")
            return 0
        finally:
            self.hy.close()


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data):
        return True


class _Absent:
    pass


_ABSENT = _Absent()


class StageError(DropbnError):
    pass


def _no_sweeps(argv: list[str]) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for line in argv:
        try:
            (o,) = parser.parse_overrides([line])
        except Exception:
            continue  # malformed: the pre-check names it
        if o.is_sweep_override():
            raise DropbnError(f"study: {line}: a sweep; dropbn study runs its own sweeps: put compared "
                              f"values in study.variants and tuned ones in study.search")


def _grid_tuples(v: Variant) -> list[tuple]:
    return list(itertools.product(*[[ov_value(x) for x in vals] for _, vals in v.search]))


def fmt_point(point: dict) -> str:
    return ", ".join(f"{k}={x}" for k, x in point.items()) or "(defaults)"


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


# ---------------------------------------------------------------- child processes

def train_command() -> list[str]:
    """The same `dropbn` as this process: the console script beside this interpreter, else -m."""
    script = Path(sys.executable).with_name("dropbn")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "dropbn.cli"]


def child_env() -> dict:
    """This process's environment, with this dropbn package first on the import path."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_child(cmd: list[str]) -> int:
    """Run a training sweep; SIGINT reaches it with the terminal's process group, SIGTERM is forwarded.
    Returns its exit code (130/143 when it was stopped by SIGINT/SIGTERM)."""
    proc = subprocess.Popen(cmd, env=child_env())
    old = signal.getsignal(signal.SIGTERM)

    def forward(signum, frame):
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)

    in_main = _main_thread()
    if in_main:
        signal.signal(signal.SIGTERM, forward)
    try:
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:
                # Ctrl-C reaches the child too (same process group): it stops at its next step.
                # A SIGINT sent to this process alone is passed on if the child is still running.
                try:
                    rc = proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(signal.SIGINT)
                    try:
                        rc = proc.wait(timeout=300)
                    except (KeyboardInterrupt, subprocess.TimeoutExpired):
                        proc.kill()
                        proc.wait()
                        rc = 130
                except KeyboardInterrupt:
                    proc.kill()
                    proc.wait()
                    rc = 130
                return rc if rc in (130, 143) else 130
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, old)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


# ---------------------------------------------------------------- entry point

def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    return Study(argv).run()
