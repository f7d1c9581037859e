"""Planning a study (no training): the compared variants, the search space that applies to each,
checked up front, and the sweeps (arguments and run folder names) of each stage."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from ..base.errors import ConfigError, DropbnError
from ..base.parallel import joblib_workers, own_allocations
from ..config.compose import Composer
from ..config.precheck import OverrideError, check_group_choices, explain, expand_jobs, override_dirname
from ..config.schema import RULES
from ..config.validation import FREE_FORM_KEYS, unknown_key_hint, validate
from ..record.identity import folder_name
from . import selection as S
from .overrides import fmt_point, merge_overrides, ov_value, to_py
from .spec import parse_spec

STAGE_TUNE, STAGE_FINAL = S.TUNE, S.FINAL
MAX_CHECKED_POINTS = 10000                       # up-front validation of every grid point up to this


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
class Sweep:
    """One `dropbn train -m` call: its arguments and the run folders it makes."""

    stage: str
    variant: Variant
    args: list
    jobs: list                      # [(point_key tuple, seed, run folder name)]


def _whole_mapping(o) -> bool:
    """`study.variants={...}` (or study.search, study.final_overrides): the whole mapping, as written.
    Hydra would merge it into the preset's, keeping the preset's keys (`study.variants={}` compared the
    default variants), and it cannot add a key to the preset's (`{optim: [sgd, adam]}` failed)."""
    return o.key_or_group in FREE_FORM_KEYS and not o.is_delete() and isinstance(o.value(), dict)


class Plan:
    """A study's plan from its command-line overrides: spec, variants, where its runs go. Composing and
    validating every variant, search point and final setting here means a bad input fails before any training."""

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

    def _plan(self) -> None:
        hy = self.hy
        parsed = hy.parse(self.argv)  # malformed overrides, named one by one
        check_group_choices(parsed, hy.loader)
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
        whole = [o for o in parsed if _whole_mapping(o)]  # composed apart: Hydra would merge them
        hcfg = hy.compose([line for line, o in zip(self.argv, parsed) if o not in whole], hydra=True)
        params = OmegaConf.select(hcfg, "hydra.sweeper.params")
        if params:
            raise DropbnError(f"study: the config sets hydra.sweeper.params ({', '.join(params)}): a study runs "
                              f"its own sweeps; use a study preset (configs/exp/tuned_*.yaml) or move the "
                              f"values into study.variants / study.search")
        # a stage's sweeps side by side (sweeps.run_stage): under joblib they share its n_jobs workers; under
        # SLURM every sweep is submitted at once (each run has its own allocation; the cluster queues them)
        launcher = OmegaConf.to_container(hcfg.hydra.launcher, resolve=False) if "launcher" in hcfg.hydra else {}
        n_jobs = launcher.get("n_jobs")
        self.workers = joblib_workers(n_jobs) if n_jobs is not None else \
            (math.inf if own_allocations(launcher) else None)
        zd = hcfg.hydra.job.config.override_dirname
        self.exclude_keys = list(zd.exclude_keys)
        self.item_sep, self.kv_sep = zd.item_sep, zd.kv_sep
        base = hcfg.copy()
        with open_dict(base):
            del base["hydra"]
            for o in whole:  # the mapping as written replaces the preset's
                OmegaConf.update(base, o.key_or_group, o.value(), merge=False, force_add=True)
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
            steps = OmegaConf.select(cfg, "train.steps")
            if steps is not None:  # selection reads validation curves per whole epoch (study/selection.py)
                raise ConfigError("train.steps", steps, "dropbn study budgets its runs in epochs: it selects "
                                                        "an epoch on validation (set train.steps=null and "
                                                        "train.epochs=N)")
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
        """Whether a search key applies to this variant: the values its configuration accepts are searched,
        each one it rejects is skipped for it (`v.skipped["key=value"]`, e.g. train.batch_size=1 with batch
        norm), and a key whose every value is rejected because of another key is skipped for it
        (`v.skipped["key"]`, e.g. a dropout rate without dropout). A value its key's own rule rejects
        (optim.lr=-1) is invalid whatever the variant: an error."""
        v.prefix[key] = "" if self.hy.is_group(key) or \
            OmegaConf.select(v.cfg, key, default=_ABSENT) is not _ABSENT else "+"
        kept, rejected = [], {}
        for x in values:
            try:
                validate(self._with(v, [(key, ov_value(x))]))
            except ConfigError as e:
                if e.key == key and key in RULES and not RULES[key].ok(to_py(self.hy.value(ov_value(x)))):
                    raise ConfigError(f"study.search.{key}", x, e.allowed) from None
                rejected[f"{key}={ov_value(x)}"] = str(e)
            else:
                kept.append(x)
        if not kept:
            v.skipped[key] = next(iter(rejected.values()))
            return False
        v.skipped.update(rejected)
        v.search.append((key, kept))
        return True

    def _check_points(self, v: Variant) -> None:
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
        extra = self.final_extra(v, None)
        if not extra:
            return
        point = v.grid()[0] if v.search else {}
        cfg = self.hy.compose(merge_overrides(self.passed + v.overrides + v.point_overrides(point), extra,
                                              self.hy.parser))
        try:
            validate(cfg)
        except DropbnError as e:
            raise DropbnError(f"study: final runs of {v.name}: {e}") from None

    def final_extra(self, v: Variant, epochs: int | None) -> list[str]:
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

    def optuna_budget(self, v: Variant) -> int:
        """Distinct points Optuna evaluates for a variant: study.trials, or its whole space if smaller."""
        return min(self.spec.trials, math.prod(len(vals) for _, vals in v.search) if v.search else 1)

    def sweep(self, stage: str, v: Variant, body: list[str], search_keys: list[str], seeds: list[int]) -> Sweep:
        seed = [f"seed={','.join(str(s) for s in seeds)}"]
        where = [f"out_root={ov_value(str(self.dir))}", f"name={stage}"]
        if stage == STAGE_TUNE:
            where.append("train.eval_test=false")  # tuning never computes a test metric
        args = body + seed + where
        jobs = []
        for job in expand_jobs(args, True, self.hy.loader):
            parsed = self.hy.parser.parse_overrides(job)
            app = [o for o in parsed if not o.is_hydra_override()]
            folder = folder_name(override_dirname(app, self.exclude_keys, self.item_sep, self.kv_sep),
                                 v.cfg.data.path, v.cfg.data.cache_dir)  # as the run's own resolver names it
            values = {o.key_or_group: o for o in app}
            point = tuple(ov_value(values[k].value()) for k in search_keys)
            jobs.append((point, int(values["seed"].value()), folder))
        return Sweep(stage, v, args, jobs)

    def point_sweep(self, stage: str, v: Variant, point: dict, seeds: list[int], extra=()) -> Sweep:
        body = merge_overrides(self.passed + v.overrides + v.point_overrides(point), list(extra), self.hy.parser)
        return self.sweep(stage, v, body, list(point), seeds)

    def tune_sweeps(self) -> dict[str, Sweep]:
        """{variant name: its tune sweep} for the variants searched on a grid (all but Optuna's)."""
        out = {}
        for v in self.variants:
            if self.spec.searcher == "optuna" and v.search:
                continue
            keys = [k for k, _ in v.search]
            body = self.passed + v.overrides + [f"{v.prefix[k]}{k}={','.join(ov_value(x) for x in vals)}"
                                                for k, vals in v.search]
            out[v.name] = self.sweep(STAGE_TUNE, v, body, keys, self.spec.tune_seeds)
        return out

    def final_sweep(self, v: Variant, best: S.PointScore) -> Sweep:
        """The final runs of a variant at its selected point (`best`, ranked first by the selection)."""
        epochs, _why = S.final_epochs(best)
        return self.point_sweep(STAGE_FINAL, v, best.point, self.spec.final_seeds, self.final_extra(v, epochs))

    def final_epochs(self, v: Variant, best: S.PointScore | None) -> int:
        """train.epochs of the variant's final runs; before the selection (best None), the tune budget,
        which the selection can only shorten."""
        epochs = dict(self.spec.final_overrides).get("train.epochs")
        if epochs is None and best is not None:
            epochs = S.final_epochs(best)[0]
        return int(epochs if epochs is not None else v.cfg.train.epochs)

    def candidates(self, v: Variant, points: list[dict], jobs: list) -> list[dict]:
        """The tune runs of each point, in tune-seed order: [{"point": {...}, "runs": [{"seed", "run"}]}]."""
        keys = [k for k, _ in v.search]
        out = []
        for p in points:
            t = tuple(p[k] for k in keys)
            runs = [{"seed": s, "run": f} for pt, s, f in jobs if pt == t]
            out.append({"point": p, "runs": sorted(runs, key=lambda r: self.spec.tune_seeds.index(r["seed"]))})
        return out


class _Absent:
    pass


_ABSENT = _Absent()


def _no_sweeps(argv: list[str]) -> None:
    parser = OverridesParser.create()
    for line in argv:
        try:
            (o,) = parser.parse_overrides([line])
        except Exception:
            continue  # malformed: the pre-check names it
        if o.is_sweep_override():
            raise DropbnError(f"study: {line}: a sweep; dropbn study runs its own sweeps: put compared "
                              f"values in study.variants and tuned ones in study.search")

