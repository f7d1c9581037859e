"""Every preset composes, and the composed values are the ones documented."""
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from dropbn.config.validation import CONFIG_DIR, validate
from tests.conftest import compose

GROUPS = {g: sorted(p.stem for p in (CONFIG_DIR / g).glob("*.yaml"))
          for g in ("data", "model", "reg", "optim")}
EXPS = sorted(p.stem for p in (CONFIG_DIR / "exp").glob("*.yaml"))


def test_groups_present():
    assert GROUPS["data"] == ["cifar10", "cifar10_jpeg", "fashion_mnist", "imagefolder", "mnist"]
    assert GROUPS["model"] == ["cnn", "mlp", "resnet"]
    assert {"none", "dropout", "batchnorm", "both"} <= set(GROUPS["reg"])
    assert GROUPS["optim"] == ["adam", "adamw", "rmsprop", "sgd"]
    assert "quickstart" in EXPS


@pytest.mark.parametrize("group,option", [(g, o) for g, opts in GROUPS.items() for o in opts])
def test_every_group_option_composes_and_validates(group, option, tmp_path):
    ov = [f"{group}={option}"]
    if option == "imagefolder":
        ov.append(f"data.path={tmp_path}")
    if group == "data" and option in ("cifar10", "cifar10_jpeg", "imagefolder"):
        ov.append("model=cnn")
    cfg = compose(*ov)
    validate(cfg)
    assert cfg[group].name == option if group != "reg" else True


@pytest.mark.parametrize("exp", EXPS)
def test_every_experiment_preset_composes(exp):
    cfg = compose(f"+exp={exp}")
    validate(cfg)
    assert cfg.name == exp


def test_reg_presets_mean_what_they_say():
    regs = {r: compose(f"reg={r}").reg for r in ("none", "dropout", "batchnorm", "both", "dropout_before_bn")}
    assert (regs["none"].norm, regs["none"].dropout) == ("none", 0.0)
    assert (regs["dropout"].norm, regs["dropout"].dropout) == ("none", 0.5)
    assert (regs["batchnorm"].norm, regs["batchnorm"].dropout) == ("batch", 0.0)
    assert (regs["both"].norm, regs["both"].dropout) == ("batch", 0.5)
    assert list(regs["both"].order) == ["norm", "act", "dropout"]
    assert list(regs["dropout_before_bn"].order) == ["act", "dropout", "norm"]


def test_dropout_after_bn_is_the_matched_partner_of_dropout_before_bn():
    """Report claim 8 compares the two: they differ in nothing but the swap of dropout and norm."""
    from dropbn.report.arms import swap
    from dropbn.record.identity import fmt_value
    before, after = (OmegaConf.to_container(compose(f"reg={r}").reg) for r in ("dropout_before_bn", "dropout_after_bn"))
    assert swap(fmt_value(before["order"]), "dropout", "norm") == fmt_value(after["order"])
    assert {k: v for k, v in before.items() if k != "order"} == {k: v for k, v in after.items() if k != "order"}


def test_quickstart_preset():
    cfg = compose("+exp=quickstart")
    assert (cfg.data.name, cfg.model.name, cfg.reg.norm, cfg.reg.dropout) == ("mnist", "mlp", "batch", 0.5)
    assert cfg.train.epochs <= 5


def test_sweep_presets_define_seeds():
    import yaml

    for exp in EXPS:
        if exp == "quickstart" or exp.startswith("tuned_"):  # study presets: seeds in study.* (test_study.py)
            continue
        doc = yaml.safe_load((CONFIG_DIR / "exp" / f"{exp}.yaml").read_text())
        params = doc["hydra"]["sweeper"]["params"]
        assert "seed" in params and len(str(params["seed"]).split(",")) >= 3, exp
