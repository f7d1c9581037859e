"""Rules across the keys of the ResNet and residual MLP (`model.depth`, `model.skip`, ...), the
optimizer's Nesterov momentum and the lr warm-up, checked by dropbn.config.validate after every key's
own rule. Each raises ConfigError (one line, exit 2).
"""
from __future__ import annotations

from ..base.errors import ConfigError

# model.* keys only model=resnet reads, with the default every other model must keep
RESNET_ONLY = {"depth": None, "width": 1, "preact": False, "shortcut": "pad", "zero_init_residual": None}


def check(cfg) -> None:
    _check_model(cfg.model, cfg.reg)
    _check_optim(cfg.optim)
    _check_warmup(cfg.train)


def _check_model(m, r) -> None:
    if m.name != "resnet":
        for k, default in RESNET_ONLY.items():
            if m[k] != default:
                raise ConfigError(f"model.{k}", m[k], f"only model=resnet reads it; with model={m.name} "
                                                       f"leave it at its default ({_show(default)})")
        if m.skip:
            _check_mlp_skip(m)
        return
    if m.depth is None or (m.depth - 2) % 6:
        raise ConfigError("model.depth", m.depth, "must be 6n+2 with n >= 1 for model=resnet "
                                                  "(8, 14, 20, 32, 44, 56, 110, ...)")
    if m.zero_init_residual and not m.skip:
        raise ConfigError("model.zero_init_residual", True, "needs model.skip=true: a plain net "
                                                            "(model.skip=false) has no residual branch")
    if r.norm == "group":
        from ..train.resnet import STAGE_CHANNELS, STEM_CHANNELS  # validate has imported torch's registries by now

        widths = [STEM_CHANNELS, *(c * m.width for c in STAGE_CHANNELS)]
        bad = [w for w in widths if w % r.norm_groups]
        if bad:
            raise ConfigError("reg.norm_groups", r.norm_groups, f"must divide every width; {bad[0]} is not a multiple")


def _check_mlp_skip(m) -> None:
    if m.name != "mlp":
        raise ConfigError("model.skip", True, f"model={m.name} has no residual form; residual nets are "
                                              "model=resnet and model=mlp")
    widths = list(m.hidden or [])
    if len(widths) < 2 or len(set(widths)) != 1:
        raise ConfigError("model.hidden", widths, "model.skip=true needs at least two hidden blocks of "
                                                  "equal width (blocks 2.. add their input), e.g. [256,256,256,256]")


def _check_optim(o) -> None:
    if o.nesterov and o.name != "sgd":
        raise ConfigError("optim.nesterov", True, f"is SGD's; optim={o.name} has no Nesterov option")
    if o.nesterov and o.momentum <= 0:
        raise ConfigError("optim.nesterov", True, "needs optim.momentum > 0")


def _check_warmup(t) -> None:
    if t.warmup_epochs and t.steps is None and t.warmup_epochs >= t.epochs:
        raise ConfigError("train.warmup_epochs", t.warmup_epochs,
                          f"must be < train.epochs ({t.epochs}): the schedule needs epochs after the warm-up")


def _show(v) -> str:
    return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
