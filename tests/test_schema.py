"""The schema (dropbn/config/schema.py) and the YAML tree agree; presets list only what differs;
every allowed name comes from the registry of the module that implements it, and works."""
import dataclasses

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from dropbn.train import data, models, optimize
from dropbn.config.validation import CONFIG_DIR, FREE_FORM_KEYS, validate
from dropbn.base.datasets import DATASETS
from dropbn.config.schema import GROUPS, RULES, OneOf
from tests.conftest import compose

OPTIONS = {g: sorted(p.stem for p in (CONFIG_DIR / g).glob("*.yaml")) for g in GROUPS}
EXPS = sorted(p.stem for p in (CONFIG_DIR / "exp").glob("*.yaml"))
TRAIN_DEFAULTS = {k: v for d in yaml.safe_load((CONFIG_DIR / "train.yaml").read_text())["defaults"]
                  if isinstance(d, dict) for k, v in d.items() if k in GROUPS}


def leaves(node, prefix=""):
    for k, v in node.items():
        if isinstance(v, dict) and f"{prefix}{k}" not in FREE_FORM_KEYS:  # study mappings are values
            yield from leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def test_composed_keys_are_exactly_the_schema_keys():
    cfg = OmegaConf.to_container(compose("+exp=compare_cifar10_cnn"))
    assert [k for k, _ in leaves(cfg)] == list(RULES)


@pytest.mark.parametrize("group,option", [(g, o) for g, opts in OPTIONS.items() for o in opts])
def test_group_options_use_the_schema_and_set_only_what_differs(group, option):
    doc = yaml.safe_load((CONFIG_DIR / group / f"{option}.yaml").read_text()) or {}
    assert doc.pop("defaults") == [f"/{group}_schema@_here_", "_self_"]
    defaults = {f.name: f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(GROUPS[group])}
    for key, value in doc.items():
        assert value != defaults[key], f"{group}/{option}.yaml repeats the default {key}={value!r}"


@pytest.mark.parametrize("exp", EXPS)
def test_experiment_presets_set_only_what_differs(exp):
    doc = yaml.safe_load((CONFIG_DIR / "exp" / f"{exp}.yaml").read_text())
    chosen = [next(iter(d.items())) for d in doc.pop("defaults", [])]
    picks = [f"{k.split()[-1].lstrip('/')}={v}" for k, v in chosen]
    for pick in picks:
        group, _, option = pick.partition("=")
        assert TRAIN_DEFAULTS[group] != option, f"{exp} repeats the default {pick}"
    doc.pop("hydra", None)
    base = OmegaConf.to_container(compose(*picks))
    for key, value in leaves(doc):
        assert OmegaConf.select(OmegaConf.create(base), key) != value, f"{exp} repeats the default {key}"


def test_choices_name_their_registries():
    choices = {k: r for k, r in RULES.items() if isinstance(r, OneOf)}
    assert {k: r.registry for k, r in choices.items()} == {
        "data.name": "dropbn.train.data:SOURCES", "model.name": "dropbn.train.models:BUILDERS",
        "reg.norm": "dropbn.train.models:NORMS", "reg.dropout_blocks": "dropbn.train.models:DROPOUT_BLOCKS",
        "optim.name": "dropbn.train.optimize:OPTIMIZERS", "train.schedule": "dropbn.train.optimize:SCHEDULES",
        "train.objective": "dropbn.record.objective:OBJECTIVES", "model.act": "dropbn.train.activations:ACTIVATIONS",
        "model.init": "dropbn.train.activations:INITS", "model.shortcut": "dropbn.train.resnet:SHORTCUTS",
        "reg.dropout_kind": "dropbn.train.activations:DROPOUT_KINDS"}
    assert RULES["reg.order"].registry == "dropbn.train.models:ORDER_TOKENS"
    assert choices["reg.norm"].names == list(models.NORMS)


def test_every_data_set_has_a_source():
    assert set(DATASETS) < set(data.SOURCES)
    assert all(data.SOURCES[name].facts is facts for name, facts in DATASETS.items())


@pytest.mark.parametrize("name", list(optimize.OPTIMIZERS))
def test_every_optimizer_builds(name):
    cfg = compose(f"optim.name={name}")
    validate(cfg)
    opt = optimize.build_optimizer(cfg, [torch.nn.Parameter(torch.zeros(2))])
    assert type(opt).__name__.lower() == name and opt.param_groups[0]["lr"] == cfg.optim.lr


@pytest.mark.parametrize("name", list(optimize.SCHEDULES))
def test_every_schedule_builds_and_steps(name):
    cfg = compose(f"train.schedule={name}", "train.epochs=4", "train.step_every=1", "train.step_gamma=0.5")
    validate(cfg)
    opt = optimize.build_optimizer(cfg, [torch.nn.Parameter(torch.zeros(2))])
    sched = optimize.build_scheduler(cfg, opt, optimize.Budget.of(cfg.train, per_pass=10))
    for _ in range(2):
        opt.step()
        sched.step()
    lr = opt.param_groups[0]["lr"]
    assert (lr == cfg.optim.lr) == (name == "none")


@pytest.mark.parametrize("norm", list(models.NORMS))
@pytest.mark.parametrize("model", list(models.BUILDERS))
def test_every_norm_builds_in_every_model(norm, model):
    order = "[norm,act,dropout]" if norm != "none" else "[act,dropout]"
    cfg = compose(f"model={model}", "data=cifar10", f"reg.norm={norm}", f"reg.order={order}", "reg.norm_groups=4")
    validate(cfg)
    net = models.build_model(cfg.model, cfg.reg, (3, 32, 32), 10)
    assert ("norm" in models.layer_kinds(net)) == (norm != "none")
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
