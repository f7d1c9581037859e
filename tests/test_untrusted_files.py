"""Reading a results folder never executes it (issue 27): a checkpoint.pt or data cache entry whose
pickle would call os.system is refused (one line naming the file) by every command that reads it,
YAML is read with safe loaders only, and a report is replaced whole, never patched."""
from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from dropbn import cli
from dropbn.record.layout import CHECKPOINT, SUMMARY
from dropbn.train import data as D
from dropbn.train import readers
from dropbn.train.checkpoint import load_checkpoint
from dropbn.record.run_dir import RunDir
from dropbn.base.errors import DataError
from dropbn.base.signals import MAIN_PID_ENV

from .conftest import DATA_DIR, ROOT, needs_mnist
from .test_data import dcfg, make_imagefolder

SWEEP = ("name=u", "data=imagefolder", "model.hidden=[16]", "train.batch_size=8", "train.eval_train_size=null",
         "train.progress=false", "train.diagnostics=false", "device=cpu", "train.threads=1", "train.epochs=1")


def mnist_folder(root: Path, n_train: int = 12, n_test: int = 6, digits: int = 3) -> Path:
    """A tiny image folder of real MNIST digits: train/<digit>/*.png and test/<digit>/*.png."""
    from PIL import Image

    raw = DATA_DIR / "MNIST" / "raw"
    for split, n in (("train", n_train), ("test", n_test)):
        img, lab = (raw / f for f in D.IDX_FILES[split])
        x, y = readers.read_idx(img, 3), readers.read_idx(lab, 1)
        for d in range(digits):
            (root / split / str(d)).mkdir(parents=True)
            for i in (y == d).nonzero()[0][:n]:
                Image.fromarray(x[i]).save(root / split / str(d) / f"{i}.png")
    return root

class Payload:
    """Unpickling this runs `touch MARKER`: what a hostile results folder would carry."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def dropbn(capsys, monkeypatch, *args) -> tuple[int, list[str]]:
    """`dropbn ARGS` in this process: (exit code, stderr lines)."""
    monkeypatch.setenv(MAIN_PID_ENV, "")  # `train -m` sets it for its workers; restored after the test
    handler = signal.getsignal(signal.SIGTERM)
    try:
        cli.main(list(args))
        rc = 0
    except SystemExit as e:
        rc = e.code or 0
    finally:
        signal.signal(signal.SIGTERM, handler)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return rc, [line for line in err.splitlines() if line.strip()]


def error_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("dropbn: error: ")]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Two finished runs of a real 1-epoch sweep on MNIST digits, trained in this process (`dropbn
    train -m`), with a data cache of their own."""
    out = tmp_path_factory.mktemp("untrusted")
    args = ["train", "-m", *SWEEP, f"data.path={mnist_folder(out / 'digits')}", f"data.cache_dir={out / 'cache'}",
            f"out_root={out}", "seed=0,1"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(MAIN_PID_ENV, "")
        handler = signal.getsignal(signal.SIGTERM)
        try:
            cli.main(args)
        except SystemExit as e:
            assert not e.code
        finally:
            signal.signal(signal.SIGTERM, handler)
    runs = sorted(p.parent for p in (out / "u").glob(f"*/{SUMMARY}"))
    assert len(runs) == 2
    return args, runs

def plant(path: Path, marker: Path) -> None:
    """Add a reduce payload to the torch file `path`, keeping everything it held."""
    obj = torch.load(path, weights_only=True)
    obj["payload"] = Payload(marker)
    torch.save(obj, path)


@needs_mnist
def test_no_command_runs_a_pickled_call_in_a_checkpoint_or_the_data_cache(sweep, tmp_path, capsys, monkeypatch):
    again, (run0, run1) = sweep
    sweep_dir = run0.parent
    entry = next((sweep_dir.parent / "cache").glob("imagefolder-*.pt"))
    monkeypatch.setenv("DROPBN_CACHE_DIR", str(entry.parent))  # diagnose's: runs record no cache folder
    mark_ckpt, mark_cache = tmp_path / "ckpt_ran", tmp_path / "cache_ran"
    plant(run0 / CHECKPOINT, mark_ckpt)
    plant(entry, mark_cache)

    # skip: the same sweep over its finished runs
    rc, lines = dropbn(capsys, monkeypatch, *again)
    assert rc == 2 and error_lines(lines) == [
        f"dropbn: error: {run0 / CHECKPOINT} is corrupt (it holds a pickled posix.system, which dropbn never "
        f"writes; not loaded); train.force=true restarts the run, or delete the checkpoint"]
    # status and report read no checkpoint; diagnose reads both files
    assert dropbn(capsys, monkeypatch, "status", str(sweep_dir))[0] == 0
    assert dropbn(capsys, monkeypatch, "report", str(sweep_dir), "--no-progress")[0] == 0
    rc, lines = dropbn(capsys, monkeypatch, "diagnose", str(sweep_dir), "--threads", "1")
    assert rc == 2 and any(f"{run0 / CHECKPOINT} is corrupt" in line for line in lines), lines
    # run1's data: the entry was not loaded but rebuilt, and run1 is diagnosed
    assert "payload" not in torch.load(entry, weights_only=True)
    assert "diagnostics" in RunDir(run1).read_summary()

    # resume: both runs unfinished, the cache hostile again
    plant(entry, mark_cache)
    for run in (run0, run1):
        (run / SUMMARY).unlink()
    rc, lines = dropbn(capsys, monkeypatch, *again[:-1], "seed=1")
    assert rc == 0 and RunDir(run1).read_summary()["status"] == "completed"
    rc, lines = dropbn(capsys, monkeypatch, *again[:-1], "seed=0")
    assert rc == 2 and len(error_lines(lines)) == 1 and f"{run0 / CHECKPOINT} is corrupt" in lines[-1]
    assert not mark_ckpt.exists() and not mark_cache.exists()

    # a clean entry is read as it was written
    assert isinstance(torch.load(entry, weights_only=True)["train"][0], torch.Tensor)
    assert load_checkpoint(RunDir(run1))["epoch"] == 1


def test_a_cache_entry_that_is_not_one_of_dropbns_is_rebuilt_not_run(tmp_path, caplog):
    make_imagefolder(tmp_path / "imgs")
    cfg = dcfg(name="imagefolder", path=str(tmp_path / "imgs"), cache_dir=str(tmp_path / "c"))
    truth = D.load_raw(cfg)
    entry = next((tmp_path / "c").glob("imagefolder-*.pt"))
    marker = tmp_path / "ran"
    for junk, why in (({**truth, "x": Payload(marker)}, "is unreadable (it holds a pickled posix.system"),
                      ([1, 2, 3], "does not hold train, test and classes; rebuilding it"),
                      ({"train": 1, "test": 2, "classes": []}, "does not hold train, test and classes")):
        torch.save(junk, entry)
        caplog.clear()
        with caplog.at_level("WARNING", logger="dropbn"):
            again = D.load_raw(cfg)
        assert torch.equal(again["train"][0], truth["train"][0]) and again["classes"] == truth["classes"]
        assert f"data cache entry {entry} {why}" in caplog.text
    assert not marker.exists()


def test_a_cifar_batch_is_unpickled_without_running_anything(tmp_path):
    import pickle

    import numpy as np

    files = [tmp_path / f for f in D.CIFAR_FILES]
    for i, f in enumerate(files):  # CIFAR-10's format: a dict with a uint8 array and a list of labels
        f.write_bytes(pickle.dumps({"data": np.full((2, 3072), i, np.uint8), "labels": [i % 10, 1]}, protocol=2))
    arrays = readers.read_cifar(files, None)
    assert arrays["train"][0].shape == (10, 3, 32, 32) and arrays["test"][1].tolist() == [5, 1]
    marker = tmp_path / "ran"
    files[0].write_bytes(pickle.dumps({"data": Payload(marker), "labels": [1]}, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_1: UnpicklingError: it holds a pickled posix.system, "
                                        r"not a CIFAR-10 batch; not loaded"):
        readers.read_cifar(files, None)
    assert not marker.exists()


# ---------------------------------------------------------------- YAML
UNSAFE_YAML = re.compile(r"yaml\.(load|load_all|unsafe_load|unsafe_load_all|full_load|full_load_all)\(|"
                         r"UnsafeLoader|FullLoader|yaml\.Loader\b|weights_only=False|pickle\.loads?\(")


def test_the_code_reads_yaml_and_pickles_only_with_safe_loaders():
    """dropbn, its scripts and its tests (this file's pattern aside) read no file with an unsafe loader."""
    here = Path(__file__).resolve()
    files = [p for d in ("dropbn", "scripts", "tests") for p in sorted((ROOT / d).rglob("*.py")) if p.resolve() != here]
    offenders = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}"
                 for p in files for i, line in enumerate(p.read_text().splitlines(), 1) if UNSAFE_YAML.search(line)]
    assert offenders == []


def test_a_hostile_yaml_tag_is_refused_not_run(tmp_path, capsys, monkeypatch):
    marker = tmp_path / "ran"
    hostile = f"optim:\n  lr: !!python/object/apply:os.system ['touch {marker}']\n"
    (tmp_path / "evil.yaml").write_text(hostile)
    with pytest.raises(yaml.YAMLError):
        OmegaConf.load(tmp_path / "evil.yaml")
    with pytest.raises(yaml.YAMLError):
        yaml.safe_load(hostile)
    # a config tree (DROPBN_CONFIG_DIR) whose optimizer preset carries the tag
    import shutil

    from dropbn.config import precheck
    from dropbn.config.validation import CONFIG_DIR

    tree = tmp_path / "configs"
    shutil.copytree(CONFIG_DIR, tree)
    (tree / "optim" / "sgd.yaml").write_text(f"name: sgd\nlr: !!python/object/apply:os.system ['touch {marker}']\n")
    monkeypatch.setattr(precheck, "CONFIG_DIR", tree)  # what DROPBN_CONFIG_DIR sets at import
    rc, lines = dropbn(capsys, monkeypatch, "train", f"out_root={tmp_path}", "train.epochs=1")
    assert rc == 2 and error_lines(lines) == [
        "dropbn: error: could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system'"]
    assert not marker.exists()
