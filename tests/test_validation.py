"""Validation before any work: every bad input is one line `<key>=<value>: <what is
allowed>` on stderr with exit code 2 and no traceback, including Hydra's own errors
(unknown keys, unknown group options, malformed overrides) and every job of a sweep.

Most cases run the pre-check in-process (dropbn.config.precheck.check_args, what `dropbn
train` calls first); a handful go through the whole `dropbn train` command (dropbn.cli.main,
called in this process; tests/test_train.py has the one-line error of a real process)."""
from __future__ import annotations

import os
import shutil

import pytest
import torch

from dropbn.base.errors import DropbnError
from dropbn.config.precheck import check_args

from .conftest import DATA_DIR, call_cli, needs_mnist

CPU_ONLY = not torch.cuda.is_available()
NO_MPS = not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())

# (command-line args, substrings the one-line message must contain); {tmp} is a fresh folder holding
# the file {tmp}/afile
BAD = [
    # Hydra's own errors
    (["foo=1"], ["foo=1", "unknown key"]),
    (["train.epoch=3"], ["train.epoch=3", "unknown key", "did you mean train.epochs"]),
    (["+train.foo=1"], ["train.foo=1", "unknown key"]),
    (["+bar.baz=1"], ["bar", "unknown key"]),
    (["reg=bogus"], ["reg=bogus", "allowed: batchnorm, both, dropout"]),
    (["+exp=nope"], ["+exp=nope", "allowed:", "quickstart"]),
    (["model=transformer"], ["model=transformer", "allowed: cnn, mlp"]),
    (["hydra/launcher=bogus"], ["hydra/launcher=bogus", "allowed:", "joblib"]),
    (["optim.lr=["], ["optim.lr=[", "malformed override"]),
    (["model.hidden=[64,"], ["model.hidden=[64,", "malformed override"]),
    (["seed=1,2"], ["seed=1,2", "needs -m"]),
    # types and ranges
    (["optim.lr=0"], ["optim.lr=0", "(0.0, inf)"]),
    (["optim.lr=-1"], ["optim.lr=-1", "must be a number"]),
    (["optim.lr=abc"], ["optim.lr='abc'", "must be a number"]),
    (["reg.dropout=1.0"], ["reg.dropout=1.0", "[0.0, 1.0)"]),
    (["reg.dropout=-0.1"], ["reg.dropout=-0.1", "[0.0, 1.0)"]),
    (["optim.momentum=1.5"], ["optim.momentum=1.5", "[0.0, 1.0)"]),
    (["train.epochs=0"], ["train.epochs=0", "integer >= 1"]),
    (["train.epochs=2.5"], ["train.epochs=2.5", "integer"]),
    (["train.batch_size=0"], ["train.batch_size=0", "integer >= 1"]),
    (["data.train_size=100", "train.batch_size=128"], ["train.batch_size=128", "<= the training-set size (100)"]),
    (["train.batch_size=70000"], ["train.batch_size=70000", "<= the training-set size (60000)"]),
    (["data.train_size=70000"], ["data.train_size=70000", "<= 60000"]),
    (["data.val_size=60000"], ["data.val_size=60000", "< 60000"]),
    (["train.batch_size=1"], ["train.batch_size=1", "batch norm needs batches of at least 2"]),
    (["train.progress=maybe"], ["train.progress='maybe'", "true or false"]),
    (["model.hidden=[]"], ["model.hidden=[]", "non-empty list of positive integers"]),
    (["model.hidden=[64,0]"], ["model.hidden=[64, 0]", "positive integers"]),
    (["model.hidden=[64,a]"], ["model.hidden=[64, 'a']", "positive integers"]),
    (["model.hidden=64"], ["model.hidden=64", "non-empty list"]),
    (["train.steps=0"], ["train.steps=0", "integer >= 1 or null"]),
    (["train.eval_every_steps=1.5"], ["train.eval_every_steps=1.5", "integer >= 1 or null"]),
    (["train.claim_timeout=0"], ["train.claim_timeout=0", "(0.0, inf)"]),
    (["train.tensorboard=maybe"], ["train.tensorboard='maybe'", "true or false"]),
    # non-finite numbers, wherever a number is configured (the schema's number rule)
    (["optim.lr=nan"], ["optim.lr=nan", "must be a number in (0.0, inf)"]),
    (["optim.lr=inf"], ["optim.lr=inf", "must be a number in (0.0, inf)"]),
    (["optim.lr=-inf"], ["optim.lr=-inf", "must be a number"]),
    (["optim.weight_decay=inf"], ["optim.weight_decay=inf", "must be a number in [0.0, inf)"]),
    (["optim.momentum=nan"], ["optim.momentum=nan", "[0.0, 1.0)"]),
    (["train.target_acc=nan"], ["train.target_acc=nan", "(0.0, 1.0]"]),
    (["train.step_gamma=nan"], ["train.step_gamma=nan", "(0.0, 1.0]"]),
    (["reg.max_norm=nan"], ["reg.max_norm=nan", "or null"]),
    (["reg.max_norm=inf"], ["reg.max_norm=inf", "or null"]),
    (["reg.dropout=nan"], ["reg.dropout=nan", "[0.0, 1.0)"]),
    (["train.claim_timeout=inf"], ["train.claim_timeout=inf", "(0.0, inf)"]),
    (["~optim.lr"], ["~optim.lr", "cannot be deleted"]),
    # numbers beyond what they become where used: float32 for training, int64 for seeds and sizes
    (["optim.lr=1e39"], ["optim.lr=1e+39", "(0.0, inf); at most 3.402823e+38 (float32, as training uses it)"]),
    (["optim.weight_decay=1e300"], ["optim.weight_decay=1e+300", "at most 3.402823e+38 (float32"]),
    (["seed=18446744073709551616"], ["seed=18446744073709551616", "at most 9223372036854775807 (int64"]),
    (["-m", "data.split_seed=0,9223372036854775808"], ["data.split_seed=9223372036854775808", "(int64"]),
    # allowed names
    (["device=tpu"], ["device='tpu'", "allowed: auto, cpu, cuda"]),
    (["device=cuda:x"], ["device='cuda:x'", "allowed: auto, cpu, cuda, cuda:N, mps"]),
    (["device=cuda:"], ["device='cuda:'", "allowed:"]),
    # devices this machine lacks, checked before anything runs (jobs that run here)
    (["device=cuda:99"], ["device=cuda:99: ", "CUDA device"]),
    (["-m", "seed=0,1", "device=cuda:99"], ["device=cuda:99: ", "CUDA device"]),
    *([(["device=cuda"], ["device=cuda: no CUDA device is available here", "device=cpu"]),
       (["device=cuda:1"], ["device=cuda:1: no CUDA device"]),
       (["-m", "hydra/launcher=parallel", "seed=0,1", "device=cuda"], ["device=cuda: no CUDA device"])]
      if CPU_ONLY else []),
    *([(["device=mps"], ["device=mps: MPS", "not available"])] if NO_MPS else []),
    (["optim.name=lbfgs"], ["optim.name='lbfgs'", "allowed: sgd, adam, rmsprop"]),
    (["train.schedule=linear"], ["train.schedule='linear'", "allowed: none, cosine, step"]),
    (["reg.norm=instance"], ["reg.norm='instance'", "allowed: none, batch, layer, group"]),
    (["train.objective=loss"], ["train.objective='loss'", "allowed: val_acc, best_val_acc, val_loss"]),
    (["data.name=svhn"], ["data.name='svhn'", "allowed: mnist, fashion_mnist, cifar10"]),
    (["name=a/b"], ["name='a/b'", "plain folder name"]),
    # reg.order
    (["reg.order=[norm,act,act]"], ["reg.order=", "at most once"]),
    (["reg.order=[norm,dropout]"], ["reg.order=", "contain act"]),
    (["reg.order=[norm,act,pool]"], ["reg.order=", "norm, act, dropout"]),
    (["reg=batchnorm", "reg.order=[act]"], ["reg.order=['act']", "reg.norm=batch needs 'norm'"]),
    (["reg=dropout", "reg.order=[norm,act,dropout]"], ["reg.order=", "contains 'norm' but reg.norm=none"]),
    (["reg=both", "reg.order=[norm,act]"], ["reg.order=", "'dropout' is not in the order"]),
    (["reg.norm=group", "reg.norm_groups=7", "model.hidden=[64]"], ["reg.norm_groups=7", "must divide every width"]),
    (["model=cnn", "model.channels=[8,8,8,8,8]"], ["model.channels=", "below 1 pixel"]),
    # paths
    (["data=imagefolder"], ["data.path=None", "needs a folder"]),
    (["data=imagefolder", "data.path=/no/such/archive.tar.gz"], ["data.path='/no/such/archive.tar.gz'", "no such file"]),
    (["out_root={tmp}/afile"], ["out_root=", "afile", "is a file; must be a folder path"]),
    (["out_root={tmp}/afile/sub/deeper"], ["out_root=", "is below the file", "afile"]),
    (["data.cache_dir={tmp}/afile/c"], ["data.cache_dir=", "is below the file"]),
    # every job of a sweep, including an +exp preset's hydra.sweeper.params
    (["-m", "optim.lr=0.1,-1"], ["optim.lr=-1", "must be a number"]),
    (["-m", "reg=none,bogus"], ["reg=bogus", "allowed:"]),
    (["-m", "+exp=compare_mnist_mlp", "train.batch_size=100000"], ["train.batch_size=100000", "training-set size"]),
    (["-m", "+exp=lr_mnist_mlp", "train.epochs=3,0"], ["train.epochs=0", "integer >= 1"]),
]


@pytest.mark.parametrize("args,expect", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_naming_key_value_and_what_is_allowed(args, expect, monkeypatch, tmp_path):
    monkeypatch.delenv("DROPBN_SWEEP_JOBS", raising=False)
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(DropbnError) as e:
        given = [a.format(tmp=tmp_path) for a in args]
        check_args(given + ([] if any(a.startswith("out_root=") for a in given) else [f"out_root={tmp_path}"]))
    msg = str(e.value)
    assert "\n" not in msg
    for part in expect:
        assert part in msg, (part, msg)


def test_at_least_25_bad_inputs_are_covered():
    assert len(BAD) >= 25


@pytest.mark.parametrize("args,jobs", [
    ([], 1),
    (["+exp=quickstart"], 1),
    (["-m", "seed=0,1,2"], 3),
    pytest.param(["-m", "reg=glob(*)", "seed=range(0,2)"], 12, marks=pytest.mark.slow),  # 6 reg presets x 2 seeds
    pytest.param(["-m", "+exp=compare_mnist_mlp"], 18, marks=pytest.mark.slow),  # reg x seed from hydra.sweeper.params
    (["-m", "+exp=compare_mnist_mlp", "seed=0"], 6),          # the command line overrides a preset's sweep
    (["-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", "seed=0,1"], 2),
    (["--cfg", "job", "optim.lr=-1"], 1),                     # --cfg shows the config; values not judged
    (["--help"], 0), (["--info"], 0),
])
def test_good_command_lines_pass_and_every_sweep_job_is_checked(args, jobs, monkeypatch):
    monkeypatch.delenv("DROPBN_SWEEP_JOBS", raising=False)
    assert check_args(args) == jobs


# ------------------------------------------------------------ the whole command
def assert_one_line_exit_2(r, *parts):
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr and "HYDRA_FULL_ERROR" not in r.stderr, r.stderr
    assert lines[0].startswith("dropbn: error: "), lines[0]
    for p in parts:
        assert p in lines[0], (p, lines[0])


@pytest.mark.parametrize("args,parts", [
    (["foo=1"], ["foo=1: unknown key"]),
    (["train.epoch=3"], ["train.epoch=3: unknown key; did you mean train.epochs?"]),
    (["reg=bogus"], ["reg=bogus: allowed: "]),
    (["+exp=nope"], ["+exp=nope: allowed: "]),
    (["optim.lr=["], ["optim.lr=[: malformed override"]),
    (["-m", "optim.lr=0.1,-1"], ["optim.lr=-1: must be a number"]),
])
def test_cli_bad_input_exit_2_one_line(tmp_path, args, parts):
    r = call_cli(["train", *args, f"out_root={tmp_path}"], cwd=tmp_path)
    assert_one_line_exit_2(r, *parts)
    assert not any(tmp_path.iterdir())  # no run folder, no sweep folder: nothing ran


def test_cli_help_cfg_info_still_work(tmp_path):
    r = call_cli(["train", "--help"], cwd=tmp_path)
    assert r.returncode == 0 and "reg:" in r.stdout
    r = call_cli(["train", "--cfg", "job", "optim.lr=0.5"], cwd=tmp_path)
    assert r.returncode == 0 and "lr: 0.5" in r.stdout
    r = call_cli(["train", "--info", "config"], cwd=tmp_path)
    assert r.returncode == 0 and "Config search path" in r.stdout


@needs_mnist
def test_cli_corrupt_idx_file_is_one_line_exit_2(tmp_path):
    """A data root whose label file has a bad magic number: DataError end to end."""
    raw_src = DATA_DIR / "MNIST" / "raw"
    raw = tmp_path / "root" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        os.symlink(raw_src / name, raw / name)
    bad = bytearray((raw_src / "train-labels-idx1-ubyte").read_bytes())
    bad[2] = 0x0D  # dtype byte: float instead of uint8
    (raw / "train-labels-idx1-ubyte").write_bytes(bytes(bad))
    r = call_cli(["train", f"data.root={tmp_path / 'root'}", "data.download=false", f"data.cache_dir={tmp_path / 'c'}",
                 "train.epochs=1", "train.progress=false", f"out_root={tmp_path / 'out'}"], cwd=tmp_path)
    assert_one_line_exit_2(r, "corrupt IDX file", "train-labels-idx1-ubyte", "bad magic")


@needs_mnist
def test_truncated_idx_file_is_a_data_error(tmp_path):
    from omegaconf import OmegaConf

    from dropbn.train.data import load_raw
    from dropbn.base.errors import DataError

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
        shutil.copy(DATA_DIR / "MNIST" / "raw" / name, raw / name)
    src = (DATA_DIR / "MNIST" / "raw" / "t10k-images-idx3-ubyte").read_bytes()
    (raw / "t10k-images-idx3-ubyte").write_bytes(src[: len(src) // 2])
    cfg = OmegaConf.create(dict(name="mnist", root=str(tmp_path), path=None, cache_dir=str(tmp_path / "c"),
                                download=False, image_size=None))
    with pytest.raises(DataError, match="header says .* file has"):
        load_raw(cfg)
