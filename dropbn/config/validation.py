"""Config: where the YAML tree lives, Hydra resolvers, and up-front validation.

`validate(cfg)` checks every value against the schema (dropbn/config/schema.py) before any
data is read and raises `ConfigError(key, value, allowed)`, which the CLI prints as
one line (exit 2).
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError

from . import model_rules
from ..base.datasets import check_batch_size
from ..base.errors import ConfigError
from ..record.folders import not_a_folder
from ..record.identity import folder_name
from .schema import GROUPS, RULES, Config


def _config_dir() -> Path:
    """$DROPBN_CONFIG_DIR, else the copy a wheel installs (dropbn/configs/), else the
    repository's top-level configs/ (a source checkout or an editable install)."""
    if os.environ.get("DROPBN_CONFIG_DIR"):
        return Path(os.environ["DROPBN_CONFIG_DIR"])
    here = Path(__file__).resolve().parent.parent  # dropbn/
    installed = here / "configs"
    return installed if installed.is_dir() else here.parent / "configs"


CONFIG_DIR = _config_dir()


def gpus_for(device) -> int | None:
    """GPUs a SLURM/submitit job asks for: 1 when device=cuda / cuda:N, else none."""
    return 1 if str(device).startswith("cuda") else None


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("dropbn_dirname"):
        OmegaConf.register_new_resolver("dropbn_dirname", folder_name)  # dropbn/record/identity.py
    if not OmegaConf.has_resolver("dropbn_gpus"):
        OmegaConf.register_new_resolver("dropbn_gpus", gpus_for)


register_resolvers()


def _plain(v):
    return OmegaConf.to_container(v) if isinstance(v, (DictConfig, ListConfig)) else v


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError on the first bad value: keys the schema lacks, each key's rule, then the
    rules across keys. Pure: reads no files but data.path and out_root."""
    _fit_schema(cfg)
    # rules without a registry first: most typos are then reported without importing torch
    for key, rule in sorted(RULES.items(), key=lambda kv: bool(kv[1].registry)):
        v = _plain(OmegaConf.select(cfg, key))
        if not rule.ok(v):
            raise ConfigError(key, v, rule.allowed_for(v))
    _check_folders(cfg)
    # the registries import torch, so they are imported here, not with this module (see schema.py)
    from ..train.data import SOURCES
    from ..train.models import BUILDERS

    source, builder = SOURCES[cfg.data.name], BUILDERS[cfg.model.name]
    n_train = _check_data(cfg.data, source)
    _check_model(cfg.model, builder, source.facts)
    _check_reg(cfg.reg, cfg.model, builder)
    t = cfg.train
    if n_train is not None:
        check_batch_size(t.batch_size, n_train)
    if t.eval_every_steps is not None and t.steps is None:
        raise ConfigError("train.eval_every_steps", t.eval_every_steps,
                          "needs train.steps (a run in epochs evaluates after every epoch)")
    if t.batch_size < 2 and cfg.reg.norm == "batch":
        raise ConfigError("train.batch_size", t.batch_size, "batch norm needs batches of at least 2")
    model_rules.check(cfg)
    if t.steps is not None and t.warmup_epochs and n_train is not None:
        warm = t.warmup_epochs * -(-n_train // t.batch_size)
        if warm >= t.steps:
            raise ConfigError("train.warmup_epochs", t.warmup_epochs, f"is {warm} steps here; must be fewer "
                                                                      f"than train.steps ({t.steps})")


def _fit_schema(cfg: DictConfig) -> None:
    """Hydra opens struct mode for `+key=value`: merging into the schema finds a key it lacks."""
    try:
        OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.to_container(cfg))
    except ConfigKeyError as e:
        raise ConfigError(e.full_key, _plain(OmegaConf.select(cfg, e.full_key)),
                          unknown_key_hint(e.full_key)) from None


def _check_folders(cfg: DictConfig) -> None:
    """Folders dropbn creates: neither they nor a folder above them may be a file."""
    for key in ("out_root", "data.cache_dir"):
        v = OmegaConf.select(cfg, key)
        why = not_a_folder(v) if v else None
        if why:
            raise ConfigError(key, v, f"{why}; must be a folder path (created if missing)")


def _check_data(d: DictConfig, src) -> int | None:
    """The rules between data keys; returns the training-set size when it is known up front."""
    if src.path_help:  # a missing data.root is reported by the data layer (what is missing, where, how)
        if not d.path:
            raise ConfigError("data.path", d.path, f"data={d.name} needs {src.path_help}")
        if not Path(d.path).expanduser().exists():
            raise ConfigError("data.path", d.path, "no such file or folder")
    if src.facts is None:
        return None
    n = src.facts.train_images
    if d.val_size >= n:
        raise ConfigError("data.val_size", d.val_size, f"must be < {n} ({d.name} training images)")
    if d.train_size is not None and d.train_size > n - d.val_size:
        raise ConfigError("data.train_size", d.train_size, f"must be <= {n - d.val_size} ({d.name} training "
                                                           f"images minus data.val_size={d.val_size}) or null")
    return d.train_size if d.train_size is not None else n - d.val_size


def _check_model(m: DictConfig, builder, facts) -> None:
    for k in builder.widths:
        if m[k] is None:
            raise ConfigError(f"model.{k}", None, RULES[f"model.{k}"].allowed)
    if "channels" in builder.widths and facts is not None:
        size, stages = min(facts.shape[1:]), len(m.channels)
        if size >> stages < 1:
            raise ConfigError("model.channels", list(m.channels), f"{stages} pooling stages shrink "
                                                                  f"{size}x{size} images below 1 pixel")


def _check_reg(r: DictConfig, m: DictConfig, builder) -> None:
    order = list(r.order)
    if r.norm != "none" and "norm" not in order:
        raise ConfigError("reg.order", order, f"reg.norm={r.norm} needs 'norm' in the order")
    if r.norm == "none" and "norm" in order:
        raise ConfigError("reg.order", order, "contains 'norm' but reg.norm=none; drop it or set reg.norm")
    if (r.dropout > 0 or (builder.conv and r.conv_dropout > 0)) and "dropout" not in order:
        raise ConfigError("reg.order", order, "a dropout rate is set but 'dropout' is not in the order")
    if builder.conv and r.dropout_blocks == "last" and r.conv_dropout > 0 and m.name != "resnet":
        raise ConfigError("reg.conv_dropout", r.conv_dropout,
                          "must be 0 with reg.dropout_blocks=last (dropout only after the last block)")
    if r.norm == "group":
        widths = [w for k in builder.widths for w in m[k]]
        bad = [w for w in widths if w % r.norm_groups]
        if bad:
            raise ConfigError("reg.norm_groups", r.norm_groups, f"must divide every width; {bad[0]} is not a multiple")


def complete(node, group: str) -> DictConfig:
    """A config group's node (model, reg, ...) with the schema's defaults for the keys it lacks (a node
    written by hand, or recorded before the key existed)."""
    return OmegaConf.merge(OmegaConf.to_container(OmegaConf.structured(GROUPS[group])), node)


def type_error(key: str, value) -> ConfigError:
    """OmegaConf's (multi-line) error for a value of the wrong type, as the key's rule says it."""
    rule = RULES.get(key)
    return ConfigError(key, value, rule.allowed if rule else "wrong type")


def unknown_key_hint(key: str) -> str:
    known = sorted({*RULES, *(k.partition(".")[0] for k in RULES)})
    parent = key.rpartition(".")[0]
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    siblings = [k.rpartition(".")[2] for k in known if k.rpartition(".")[0] == parent]
    hint = "unknown key"
    if close:
        hint += f"; did you mean {close[0]}?"
    if siblings:
        hint += f" (keys {'under ' + parent if parent else 'at the top level'}: {', '.join(siblings)})"
    return hint


# `dropbn study` mappings whose keys are config keys, not keys of this tree (dropbn/study/spec.py checks them)
FREE_FORM_KEYS = ("study.variants", "study.search", "study.final_overrides")
