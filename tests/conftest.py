"""Shared fixtures: real data from DROPBN_DATA_DIR (../shared/data in CI), a
private cache, and Hydra composition of the real configs/ tree."""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("DROPBN_DATA_DIR") or ROOT.parent / "shared" / "data")
DROPBN = str(Path(sys.executable).parent / "dropbn")

torch.set_num_threads(min(2, os.cpu_count() or 1))

# A pytest started in the background from a non-interactive shell (`pytest &`) inherits an ignored SIGINT,
# and so would every dropbn it starts: dropbn leaves an ignored SIGINT ignored, as a background job should.
# The Ctrl-C tests need it delivered, as in a terminal. A handled signal resets to default on exec.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def have_mnist() -> bool:
    return (DATA_DIR / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()


needs_mnist = pytest.mark.skipif(not have_mnist(), reason=f"MNIST not found under {DATA_DIR}")


def have_plugin(mod: str) -> bool:
    try:
        __import__(mod)
        return True
    except ImportError:
        return False


needs_joblib = pytest.mark.skipif(not have_plugin("hydra_plugins.hydra_joblib_launcher"),
                                  reason="hydra-joblib-launcher not installed (pip install -e '.[launchers]')")
needs_submitit = pytest.mark.skipif(not have_plugin("hydra_plugins.hydra_submitit_launcher"),
                                    reason="hydra-submitit-launcher not installed (pip install -e '.[launchers]')")


@pytest.fixture(scope="session", autouse=True)
def _env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    old = {k: os.environ.get(k) for k in ("DROPBN_DATA_DIR", "DROPBN_CACHE_DIR", "MPLBACKEND")}
    os.environ["DROPBN_DATA_DIR"] = str(DATA_DIR)
    os.environ.setdefault("DROPBN_CACHE_DIR", str(cache))
    os.environ["MPLBACKEND"] = "Agg"
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def compose(*overrides: str):
    """The config `dropbn train <overrides>` would see (hydra.* excluded)."""
    from hydra import compose as hcompose
    from hydra import initialize_config_dir

    from dropbn.config.validation import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hcompose(config_name="train", overrides=list(overrides))


TINY = ("data.train_size=2000", "train.eval_train_size=1000", "model.hidden=[64]",
        "train.progress=false", "train.diagnostics=false")


def run_cli(args, cwd, timeout=300, env=None):
    import subprocess

    e = dict(os.environ, **(env or {}))
    return subprocess.run([DROPBN, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=e)
