"""The run-folder contract between `dropbn train` and `dropbn report`: which config keys name,
resume and group runs (one definition, tied to configs/train.yaml)."""
from __future__ import annotations

import json

import yaml
from hydra import compose as hcompose
from hydra import initialize_config_dir
from omegaconf import OmegaConf

from dropbn.config import CONFIG_DIR
from dropbn.report.collect import collect
from dropbn.runs import (FOLDER_NAME_EXCLUDED, LAUNCH_KEYS, NON_RESULT_KEYS, POOLED_IN_REPORT, REPORT_IGNORED,
                         RESUME_CHECKED, RESUME_IGNORED, same_config)

from .conftest import compose

# a value for every non-result key, different from its default
NON_DEFAULT = {"name": "other", "out_root": "elsewhere", "device": "cpu", "train.force": "true",
               "train.progress": "false", "train.threads": "1", "train.diagnostics": "false",
               "data.root": "/r", "data.cache_dir": "/c", "data.download": "false", "data.path": "/p"}


def folder_name(*overrides: str) -> str:
    """Hydra's override_dirname for `dropbn train <overrides>`: the run's folder name."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hcompose(config_name="train", overrides=list(overrides), return_hydra_config=True) \
            .hydra.job.override_dirname


def nested(flat: dict) -> dict:
    return OmegaConf.to_container(OmegaConf.from_dotlist([f"{k}={v}" for k, v in flat.items()]))


def test_yaml_exclude_keys_are_the_code_definition():
    tree = yaml.safe_load((CONFIG_DIR / "train.yaml").read_text())
    keys = tree["hydra"]["job"]["config"]["override_dirname"]["exclude_keys"]
    assert len(keys) == len(set(keys)) and set(keys) == set(FOLDER_NAME_EXCLUDED)


def test_every_non_result_key_is_a_config_key():
    cfg = compose()
    assert set(NON_DEFAULT) == set(NON_RESULT_KEYS)
    for key in (*NON_RESULT_KEYS, *POOLED_IN_REPORT):
        assert OmegaConf.select(cfg, key, default="<missing>") != "<missing>", key
    assert not set(LAUNCH_KEYS) & set(OmegaConf.to_container(cfg))  # launch keys are not config values


def test_folder_names_leave_out_non_result_keys_and_keep_the_seed():
    overrides = [f"{k}={v}" for k, v in NON_DEFAULT.items()]
    assert folder_name(*overrides, "seed=3", "optim.lr=0.2") == "optim.lr=0.2,seed=3"


def test_resume_ignores_non_result_keys_except_the_named_exception():
    base = OmegaConf.to_container(compose(), resolve=True)
    for key, value in NON_DEFAULT.items():
        changed = OmegaConf.to_container(OmegaConf.merge(base, nested({key: value})), resolve=True)
        assert same_config(base, changed) == (key not in RESUME_CHECKED), key
    # data.path: out of folder names and report grouping, but a different path is a different run on resume
    assert RESUME_CHECKED == ("data.path",) and "data.path" not in RESUME_IGNORED
    assert "data.path" in FOLDER_NAME_EXCLUDED and "data.path" in REPORT_IGNORED
    seeded = dict(base, seed=base["seed"] + 1)
    assert not same_config(base, seeded)  # the seed changes results


def test_report_groups_by_neither_seed_nor_non_result_keys(tmp_path):
    from .test_report import make_run

    for i, (key, value) in enumerate(NON_DEFAULT.items()):
        folder = make_run(tmp_path / "s" / f"run{i}", "none", seed=i % 3)
        s = json.loads((folder / "summary.json").read_text())
        s["config"] = OmegaConf.to_container(OmegaConf.merge(s["config"], nested({key: value})))
        (folder / "summary.json").write_text(json.dumps(s))
    make_run(tmp_path / "s" / "lr", "none", seed=0, lr=0.2)
    coll = collect([tmp_path / "s"], progress=False)
    assert coll.varying == ["optim.lr"]
