"""The run-folder contract between `dropbn train` and `dropbn report`: which config keys name,
resume and group runs (one definition, tied to configs/train.yaml), and the typed summary.json."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from hydra import compose as hcompose
from hydra import initialize_config_dir
from omegaconf import OmegaConf

from dropbn.config.validation import CONFIG_DIR
from dropbn.report.collect import collect
from dropbn.record.identity import (FOLDER_NAME_EXCLUDED, LAUNCH_KEYS, LOCAL_PATHS, NON_RESULT_KEYS,
                                    POOLED_IN_REPORT, REPORT_IGNORED, differing_keys, recorded_config, same_config)
from dropbn.record.summary import (COLUMNS, MODES, Diagnostics, Inference, Summary, VarianceShift, diagnostic_columns,
                            inf_column, vs_column)
from dropbn.train.loop import run

from .conftest import TINY, compose, needs_mnist

# a value for every non-result key, different from its default
NON_DEFAULT = {"name": "other", "out_root": "elsewhere", "device": "cpu", "train.force": "true",
               "train.progress": "false", "train.threads": "1", "train.eval_batch_size": "7", "train.eval_test": "false", "train.diagnostics": "false",
               "train.tensorboard": "true", "train.objective": "val_loss", "train.claim_timeout": "60",
               "data.root": "/r", "data.cache_dir": "/c", "data.download": "false", "data.path": "/p",
               "study": "{select: val_loss}", "report.claims": "[my_claims.yaml]"}


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


def test_identity_ignores_non_result_keys_and_holds_the_data_fingerprint():
    base = recorded_config(OmegaConf.to_container(compose(), resolve=True), "0123456789abcdef")
    for key, value in NON_DEFAULT.items():
        changed = OmegaConf.to_container(OmegaConf.merge(base, nested({key: value})), resolve=True)
        assert same_config(base, changed), key
    # the data takes part by what it holds (data.fingerprint), not by where it lives (data.path, data.root)
    other_data = recorded_config(base, "fedcba9876543210")
    assert differing_keys(base, other_data) == ["data.fingerprint"]
    seeded = dict(base, seed=base["seed"] + 1)
    assert differing_keys(base, seeded) == ["seed"]  # the seed changes results
    changed = OmegaConf.to_container(OmegaConf.merge(base, nested({"optim.lr": 0.5, "train.epochs": 7})))
    assert differing_keys(base, changed) == ["optim.lr", "train.epochs"]


def test_recorded_config_has_no_machine_local_paths():
    cfg = OmegaConf.to_container(compose("data.root=/some/where", "data.cache_dir=/else"), resolve=True)
    rec = recorded_config(cfg, "0123456789abcdef")
    assert rec["data"]["fingerprint"] == "0123456789abcdef"
    assert LOCAL_PATHS == ("data.root", "data.cache_dir") and rec["data"]["root"] is rec["data"]["cache_dir"] is None
    assert cfg["data"]["root"] == "/some/where"  # the input is not changed


def test_a_record_from_before_a_key_existed_still_matches():
    base = recorded_config(OmegaConf.to_container(compose(), resolve=True), "0123456789abcdef")
    old = json.loads(json.dumps(base))
    del old["train"]["steps"], old["data"]["fingerprint"]
    assert same_config(old, base) and same_config(base, old)


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


# ---------------------------------------------------------------- summary.json

def test_summary_round_trip_and_columns():
    s = Summary(status="completed", seed=1, final_test_acc=0.9, config={"a": 1})
    d = s.to_json()
    assert "final_val_acc" not in d and "diagnostics" not in d and "error" not in d  # optional, unset
    assert d["epochs_to_target"] is None and list(d)[:2] == ["status", "seed"]
    assert Summary.from_json({**d, "unknown": 3}) == s
    assert Summary.from_json({}).status is None
    assert "status" not in COLUMNS and "config" not in COLUMNS and {"final_val_acc", "seed"} <= set(COLUMNS)


@needs_mnist
def test_written_summary_is_the_schema_and_the_report_reads_it(tmp_path):
    s = run(compose(*TINY, "data.val_size=500", "train.epochs=1", "data.train_size=500",
                    "train.eval_train_size=500"), tmp_path / "r")
    on_disk = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert on_disk == s
    optional = {"diagnostics", "error"}
    assert list(on_disk) == [k for k in Summary.__dataclass_fields__ if k not in optional]
    row = collect([tmp_path], progress=False).runs.iloc[0]
    for k in COLUMNS:
        if on_disk[k] is None:
            assert pd.isna(row[k]), k
        else:
            assert row[k] == pytest.approx(on_disk[k]) if isinstance(on_disk[k], float) else row[k] == on_disk[k], k


def test_diagnostics_schema_gives_the_report_columns():
    vs = VarianceShift(layers=[{"name": "b.norm", "mean_ratio": 1.2, "max_ratio": 2.0}], worst_layer="b.norm",
                       worst_mean_ratio=1.2, worst_max_ratio=2.0, test_acc=0.9, test_acc_recalibrated=0.91)
    inf = Inference(bn_layers_folded=1, fold_max_abs_diff=1e-6, batch1_ms={"as_trained": 1.0, "folded": 0.5},
                    batch256_ms={"as_trained": 4.0, "folded": 3.0},
                    throughput={"as_trained": 64000.0, "folded": 85333.0})
    cols = diagnostic_columns(Diagnostics(vs, inf).to_json())
    assert cols[vs_column("worst_mean_ratio")] == 1.2 and cols[vs_column("layers")] == vs.layers
    assert cols[inf_column("batch256_ms", "folded")] == 3.0 and cols[inf_column("bn_layers_folded")] == 1
    assert len(cols) == len(VarianceShift.__dataclass_fields__) + 2 + 3 * len(MODES)
    assert cols[vs_column("train_layers")] == [] and cols[vs_column("train_worst_median_ratio")] is None  # older file
    no_bn = diagnostic_columns(Diagnostics(None, inf).to_json())
    assert not any(k.startswith("vs_") for k in no_bn) and inf_column("throughput", "as_trained") in no_bn
    assert diagnostic_columns(None) == {}


# ---------------------------------------------------------------- committed run records
REPO = CONFIG_DIR.parent if (CONFIG_DIR.parent / ".gitignore").is_file() else None


def git_ignored(path: str) -> bool:
    import subprocess
    r = subprocess.run(["git", "check-ignore", "--no-index", "-q", path], cwd=REPO)
    assert r.returncode in (0, 1), r
    return r.returncode == 0


@pytest.mark.skipif(REPO is None, reason="needs the repository's .gitignore (not an installed package)")
@pytest.mark.parametrize("stage", ["", "tune/", "final/"])
def test_gitignore_tracks_the_run_records_and_nothing_else(stage):
    from dropbn.record.layout import CHECKPOINT, HYDRA_HYDRA, RECORD_FILES, TRAIN_LOG
    run = f"results/some_study/{stage}optim.lr=0.1,seed=3"
    for name in RECORD_FILES:
        assert not git_ignored(f"{run}/{name}"), name
    for name in (CHECKPOINT, TRAIN_LOG, HYDRA_HYDRA, "claim.1.json", f".{CHECKPOINT}.x1y2.tmp",
                 ".submitit/1/log.out", "tensorboard/events.out.tfevents.1"):
        assert git_ignored(f"{run}/{name}"), name
    assert not git_ignored("results/some_study/selected.yaml")
    assert not git_ignored("results/some_study/report/report.md")
    assert git_ignored("results/some_study/optuna.db")


def test_finished_records_lists_finished_runs_only(tmp_path):
    from dropbn.record.layout import METRICS, RECORD_FILES, SUMMARY
    from dropbn.record.scan import finished_records
    for name, status, epochs in (("done", "completed", 2), ("nan", "diverged", 1), ("failed", "failed", 1),
                                 ("torn", "completed", 3)):
        d = tmp_path / "tune" / name
        (d / ".hydra").mkdir(parents=True)
        (d / SUMMARY).write_text(json.dumps({"status": status, "epochs_completed": epochs}))
        (d / METRICS).write_text("epoch,val_acc\n1,0.5\n2,0.6\n" if epochs != 1 else "epoch,val_acc\n1,0.5\n")
        for n in RECORD_FILES[2:]:
            (d / n).write_text("x")
        (d / "checkpoint.pt").write_text("x")
    (tmp_path / "tune" / "running" / ".hydra").mkdir(parents=True)
    (tmp_path / "tune" / "running" / METRICS).write_text("epoch\n1\n")
    got = {p.relative_to(tmp_path).as_posix() for p in finished_records(tmp_path)}
    # 'torn' says 3 epochs while its metrics end at 2: not a finished record
    assert got == {f"tune/{run}/{n}" for run in ("done", "nan") for n in RECORD_FILES}
