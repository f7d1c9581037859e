"""`pip install .` (not editable): the wheel holds every module and config file, and
installed into a fresh virtualenv it trains a run from an unrelated folder.

The wheel is built from a copy of the sources (the checkout stays clean). The fresh
virtualenv gets only the wheel (`--no-deps`); a .pth file lends it this
interpreter's site-packages for torch, Hydra & co. so nothing is downloaded. That
does not import the dropbn of this checkout: a path line in a .pth file does not run
the editable-install hooks in the folder it adds, and the venv's own site-packages
(with the wheel's dropbn) comes first on sys.path — asserted below.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import ROOT, needs_mnist

SOURCES = ("pyproject.toml", "README.md", "dropbn", "configs")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src, out = tmp / "src", tmp / "dist"
    src.mkdir()
    for name in SOURCES:
        p = ROOT / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(p, src / name)
    # the build backend from this environment when it has one (fast, offline); else pip's isolated build
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", *isolation, "-w", str(out),
                        str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    (whl,) = out.glob("dropbn-*.whl")
    return whl


@pytest.mark.slow
def test_wheel_holds_every_module_and_config_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"dropbn/{p.relative_to(ROOT / 'dropbn').as_posix()}" for p in (ROOT / "dropbn").rglob("*.py")}
    expected |= {f"dropbn/configs/{p.relative_to(ROOT / 'configs').as_posix()}"
                 for p in (ROOT / "configs").rglob("*.yaml")}
    missing = sorted(expected - names)
    assert not missing, ("missing from the wheel; list their folders under [tool.setuptools] packages "
                         f"in pyproject.toml: {missing}")
    assert any(n.endswith("entry_points.txt") for n in names)


def _fresh_venv(path: Path, wheel: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    py = path / "bin" / "python"
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q",
                        str(wheel)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    lend = [p for p in site.getsitepackages() if Path(p).is_dir()]
    Path(purelib, "_dropbn_test_deps.pth").write_text("\n".join(lend) + "\n")
    return path


@needs_mnist
@pytest.mark.slow
def test_installed_wheel_trains_from_another_folder(wheel, tmp_path):
    venv = _fresh_venv(tmp_path / "venv", wheel)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DROPBN_CONFIG_DIR")}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import dropbn.config.validation as c; print(c.__file__); print(c.CONFIG_DIR)"],
                           cwd=elsewhere, capture_output=True, text=True, env=env, check=True).stdout.split()
    assert all(Path(p).is_relative_to(venv) for p in where), where  # the wheel's code and configs
    assert (Path(where[1]) / "train.yaml").is_file()

    r = subprocess.run([str(venv / "bin" / "dropbn"), "train", "+exp=quickstart", "train.epochs=1",
                        "data.train_size=500", "model.hidden=[32]", "train.eval_train_size=500",
                        "train.diagnostics=false", "train.progress=false", f"out_root={tmp_path / 'out'}"],
                       cwd=elsewhere, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    (summary,) = (tmp_path / "out").rglob("summary.json")
    s = json.loads(summary.read_text())
    assert s["status"] == "completed" and s["epochs_completed"] == 1
    assert s["config"]["model"]["hidden"] == [32]
    assert not any(elsewhere.iterdir())  # nothing written into the working folder
