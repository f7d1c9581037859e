"""Config: where the YAML tree lives, Hydra resolvers, and up-front validation.

`validate(cfg)` checks every value before any data is read and raises
`ConfigError(key, value, allowed)`, which the CLI prints as one line (exit 2).
"""
from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from .errors import ConfigError

CONFIG_DIR = Path(os.environ.get("DROPBN_CONFIG_DIR") or Path(__file__).resolve().parent.parent / "configs")

DATASETS = ("mnist", "fashion_mnist", "cifar10", "imagefolder")
MODELS = ("mlp", "cnn")
NORMS = ("none", "batch", "layer", "group")
ORDER_TOKENS = ("norm", "act", "dropout")
OPTIMS = ("sgd", "adam", "rmsprop")
SCHEDULES = ("none", "cosine", "step")
DROPOUT_BLOCKS = ("all", "last")
# training images of the built-in data sets (before data.val_size is held out)
TRAIN_IMAGES = {"mnist": 60000, "fashion_mnist": 60000, "cifar10": 50000}


def dirname(override_dirname: str) -> str:
    """Folder name of a run: its overrides (Hydra's override_dirname), or 'run' if none."""
    return override_dirname.replace("/", "_") if override_dirname else "run"


def gpus_for(device) -> int | None:
    """GPUs a SLURM/submitit job asks for: 1 when device=cuda / cuda:N, else none."""
    return 1 if str(device).startswith("cuda") else None


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("dropbn_dirname"):
        OmegaConf.register_new_resolver("dropbn_dirname", dirname)
    if not OmegaConf.has_resolver("dropbn_gpus"):
        OmegaConf.register_new_resolver("dropbn_gpus", gpus_for)


register_resolvers()


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int(cfg, key, lo=None, hi=None, allow_none=False):
    v = OmegaConf.select(cfg, key)
    if v is None and allow_none:
        return None
    if not _is_int(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ConfigError(key, v, f"must be an integer {rng}" + (" or null" if allow_none else ""))
    return v


def _num(cfg, key, lo=None, hi=None, lo_open=False, hi_open=False, allow_none=False):
    v = OmegaConf.select(cfg, key)
    if v is None and allow_none:
        return None
    bad = not _is_num(v)
    if not bad:
        bad = (lo is not None and (v <= lo if lo_open else v < lo)) or \
              (hi is not None and (v >= hi if hi_open else v > hi))
    if bad:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        rng = f"in {left}{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}{right}"
        raise ConfigError(key, v, f"must be a number {rng}" + (" or null" if allow_none else ""))
    return v


def _choice(cfg, key, allowed):
    v = OmegaConf.select(cfg, key)
    if v not in allowed:
        raise ConfigError(key, v, f"allowed: {', '.join(allowed)}")
    return v


def _bool(cfg, key):
    v = OmegaConf.select(cfg, key)
    if not isinstance(v, bool):
        raise ConfigError(key, v, "must be true or false")
    return v


def _widths(cfg, key):
    v = OmegaConf.select(cfg, key)
    if not isinstance(v, (list, ListConfig)) or len(v) == 0 or not all(_is_int(w) and w >= 1 for w in v):
        raise ConfigError(key, OmegaConf.to_object(v) if isinstance(v, ListConfig) else v,
                          "must be a non-empty list of positive integers, e.g. [1024, 1024]")
    return list(v)


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError on the first bad value. Pure: reads no files but data.path."""
    _int(cfg, "seed", 0)
    dev = OmegaConf.select(cfg, "device")
    if not isinstance(dev, str) or not (dev in ("auto", "cpu", "mps", "cuda") or dev.startswith("cuda:")):
        raise ConfigError("device", dev, "allowed: auto, cpu, cuda, cuda:N, mps")
    name = OmegaConf.select(cfg, "name")
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ConfigError("name", name, "must be a plain folder name")
    out_root = OmegaConf.select(cfg, "out_root")
    if not isinstance(out_root, str) or not out_root:
        raise ConfigError("out_root", out_root, "must be a folder path")
    if Path(out_root).expanduser().is_file():
        raise ConfigError("out_root", out_root, "is a file; must be a folder (created if missing)")

    # data
    data = _choice(cfg, "data.name", DATASETS)
    tsize = _int(cfg, "data.train_size", 1, allow_none=True)
    _int(cfg, "data.val_size", 0)
    _int(cfg, "data.split_seed", 0)
    _bool(cfg, "data.augment")
    _bool(cfg, "data.download")
    _int(cfg, "data.image_size", 1, allow_none=True)
    for key in ("data.root", "data.cache_dir", "data.path"):
        v = OmegaConf.select(cfg, key)
        if v is not None and (not isinstance(v, str) or not v):
            raise ConfigError(key, v, "must be a path or null")
    # a data.root without the files is reported by the data layer (what is missing, where, how)
    cache_dir = OmegaConf.select(cfg, "data.cache_dir")
    if cache_dir and Path(cache_dir).expanduser().is_file():
        raise ConfigError("data.cache_dir", cache_dir, "is a file; must be a folder (created if missing)")
    n_images = TRAIN_IMAGES.get(data)
    if n_images is not None:
        vsize = cfg.data.val_size
        if vsize >= n_images:
            raise ConfigError("data.val_size", vsize, f"must be < {n_images} ({data} training images)")
        if tsize is not None and tsize > n_images - vsize:
            raise ConfigError("data.train_size", tsize, f"must be <= {n_images - vsize} ({data} training "
                                                        f"images minus data.val_size={vsize}) or null")
        if tsize is None:
            tsize = n_images - vsize
    if data == "imagefolder":
        p = OmegaConf.select(cfg, "data.path")
        if not p:
            raise ConfigError("data.path", p, "data=imagefolder needs a folder with train/<class>/* "
                                              "and test/<class>/* (or a .tar.gz of one)")
        if not Path(str(p)).expanduser().exists():
            raise ConfigError("data.path", p, "no such file or folder")

    # model
    model = _choice(cfg, "model.name", MODELS)
    if model == "mlp":
        _widths(cfg, "model.hidden")
    else:
        _widths(cfg, "model.channels")
        _widths(cfg, "model.fc")
        if data in ("mnist", "fashion_mnist"):
            n_stages = len(cfg.model.channels)
            if 28 >> n_stages < 1:
                raise ConfigError("model.channels", list(cfg.model.channels),
                                  f"{n_stages} pooling stages shrink 28x28 images below 1 pixel")

    # reg
    norm = _choice(cfg, "reg.norm", NORMS)
    order = OmegaConf.select(cfg, "reg.order")
    order_l = list(order) if isinstance(order, (list, ListConfig)) else order
    if (not isinstance(order_l, list) or any(t not in ORDER_TOKENS for t in order_l)
            or len(set(order_l)) != len(order_l) or "act" not in order_l):
        raise ConfigError("reg.order", order_l, "must list each of norm, act, dropout at most once "
                                                "and contain act, e.g. [norm, act, dropout]")
    for key in ("reg.dropout", "reg.input_dropout", "reg.conv_dropout"):
        _num(cfg, key, 0.0, 1.0, hi_open=True)
    _bool(cfg, "reg.channel_dropout")
    blocks = _choice(cfg, "reg.dropout_blocks", DROPOUT_BLOCKS)
    _num(cfg, "reg.max_norm", 0.0, lo_open=True, allow_none=True)
    groups = _int(cfg, "reg.norm_groups", 1)
    if norm != "none" and "norm" not in order_l:
        raise ConfigError("reg.order", order_l, f"reg.norm={norm} needs 'norm' in the order")
    if norm == "none" and "norm" in order_l:
        raise ConfigError("reg.order", order_l, "contains 'norm' but reg.norm=none; "
                                                "drop it or set reg.norm")
    has_dropout = cfg.reg.dropout > 0 or (model == "cnn" and cfg.reg.conv_dropout > 0)
    if has_dropout and "dropout" not in order_l:
        raise ConfigError("reg.order", order_l, "a dropout rate is set but 'dropout' is not in the order")
    if model == "cnn" and blocks == "last" and cfg.reg.conv_dropout > 0:
        raise ConfigError("reg.conv_dropout", cfg.reg.conv_dropout,
                          "must be 0 with reg.dropout_blocks=last (dropout only after the last block)")
    if norm == "group":
        widths = list(cfg.model.hidden) if model == "mlp" else list(cfg.model.channels) + list(cfg.model.fc)
        bad = [w for w in widths if w % groups]
        if bad:
            raise ConfigError("reg.norm_groups", groups, f"must divide every width; {bad[0]} is not a multiple")

    # optim
    _choice(cfg, "optim.name", OPTIMS)
    _num(cfg, "optim.lr", 0.0, lo_open=True)
    _num(cfg, "optim.momentum", 0.0, 1.0, hi_open=True)
    _num(cfg, "optim.weight_decay", 0.0)

    # train
    _int(cfg, "train.epochs", 1)
    bs = _int(cfg, "train.batch_size", 1)
    if tsize is not None and bs > tsize:
        raise ConfigError("train.batch_size", bs, f"must be <= the training-set size ({tsize})")
    if bs < 2 and (norm == "batch"):
        raise ConfigError("train.batch_size", bs, "batch norm needs batches of at least 2")
    _choice(cfg, "train.schedule", SCHEDULES)
    _int(cfg, "train.step_every", 1)
    _num(cfg, "train.step_gamma", 0.0, 1.0, lo_open=True)
    _num(cfg, "train.target_acc", 0.0, 1.0, lo_open=True)
    _int(cfg, "train.eval_train_size", 1, allow_none=True)
    _int(cfg, "train.eval_batch_size", 1)
    _int(cfg, "train.threads", 1, allow_none=True)
    for key in ("train.amp", "train.compile", "train.force", "train.progress", "train.diagnostics"):
        _bool(cfg, key)


_KNOWN_KEYS: set | None = None


def known_keys() -> set:
    """Every dotted key the YAML tree defines: train.yaml plus every option of every group."""
    global _KNOWN_KEYS
    if _KNOWN_KEYS is None:
        keys: set = set()

        def walk(node, prefix):
            for k, v in node.items():
                if prefix == "" and k in ("defaults", "hydra"):
                    continue
                full = f"{prefix}{k}"
                keys.add(full)
                if isinstance(v, dict):
                    walk(v, full + ".")

        walk(OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "train.yaml")), "")
        for group in sorted(p for p in CONFIG_DIR.iterdir() if p.is_dir() and p.name not in ("hydra", "exp")):
            keys.add(group.name)
            for f in sorted(group.glob("*.yaml")):
                node = OmegaConf.to_container(OmegaConf.load(f)) or {}
                walk({k: v for k, v in node.items() if k != "defaults"}, group.name + ".")
        _KNOWN_KEYS = keys
    return _KNOWN_KEYS


def unknown_key_hint(key: str) -> str:
    import difflib

    known = sorted(known_keys())
    parent = key.rpartition(".")[0]
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    siblings = [k.rpartition(".")[2] for k in known if k.rpartition(".")[0] == parent]
    hint = "unknown key"
    if close:
        hint += f"; did you mean {close[0]}?"
    if siblings:
        hint += f" (keys {'under ' + parent if parent else 'at the top level'}: {', '.join(siblings)})"
    return hint


# `dropbn study` mappings whose keys are config keys, not keys of this tree (dropbn/study.py checks them)
FREE_FORM_KEYS = ("study.variants", "study.search", "study.final_overrides")


def check_keys(cfg: DictConfig) -> None:
    """Struct mode for `+key=value` too: every key must be one the YAML tree defines."""
    known = known_keys()

    def walk(node, prefix):
        for k in node.keys():
            full = f"{prefix}{k}"
            if full in FREE_FORM_KEYS:
                continue
            if full not in known:
                v = node._get_node(k)._value() if hasattr(node, "_get_node") else node[k]
                v = OmegaConf.to_container(v) if isinstance(v, (DictConfig, ListConfig)) else v
                raise ConfigError(full, v, unknown_key_hint(full))
            child = node._get_node(k)
            if isinstance(child, DictConfig):
                walk(child, full + ".")

    walk(cfg, "")

