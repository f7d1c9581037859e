"""The study.* settings of `dropbn study`, parsed and checked into a Spec (one ConfigError per problem)."""
from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

from . import selection as S
from ..base.errors import ConfigError, DropbnError
from .overrides import ov_value, to_py

SELECTS = tuple(S.METRIC_DIRECTION)
SEARCHERS = ("grid", "optuna")
# keys a study sets itself (or that do not change what a run computes): never searched or compared
NOT_SEARCHABLE = ("seed", "name", "out_root", "device", "data.root", "data.cache_dir", "data.download",
                  "train.force", "train.progress", "train.threads", "train.diagnostics", "train.eval_test")


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
    claims: list = ()              # claims files registered before the final runs (empty: the default file)


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
    claims = to_py(st.get("claims")) or []
    if not isinstance(claims, list) or not all(isinstance(x, str) and x for x in claims):
        raise ConfigError("study.claims", claims, "must be a list of claims files, e.g. [my_claims.yaml]")
    from ..config.claims_file import load
    load(claims)  # a bad claims file stops the study before any training (one line, exit 2)
    return Spec(variants, search, tune, final, select, searcher, trials, fvs, fo, list(claims))


def optuna_module():
    """Optuna, an optional dependency (imported here, when study.searcher=optuna asks for it)."""
    try:
        import optuna
    except ImportError:
        raise DropbnError("study.searcher=optuna needs Optuna: pip install 'dropbn[search]' "
                          "(or pip install optuna)") from None
    return optuna
