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
    """`dropbn ARGS` as its own process (the console script): for the checks where the process is
    the point (signals, kills, concurrency, launchers, a fresh interpreter's imports and output)."""
    import subprocess

    e = dict(os.environ, **(env or {}))
    return subprocess.run([DROPBN, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=e)


def call_cli(args, cwd, env=None):
    """`dropbn ARGS` in this process: dropbn.cli.main with what the console script would give, a
    CompletedProcess of the exit code and of everything written to file descriptors 1 and 2 (prints,
    logging, Hydra's messages, warnings, and the output of any child process it starts). It saves the
    torch + Hydra import of a new process (seconds each), and is for checks where a process proves no
    more than the call. The process state a call changes is put back afterwards: working folder,
    environment, sys.argv, signal handlers, logging, warning filters, torch's thread count. Logging
    and warnings start as in a fresh interpreter (no handlers, root at WARNING; the default filters).
    No time limit: a hang shows as a hanging test."""
    import logging
    import subprocess
    import tempfile
    import traceback
    import warnings

    from dropbn.cli import main

    saved = _ProcessState()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        streams, fds = (sys.stdout, sys.stderr), (os.dup(1), os.dup(2))
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        sys.stdout = open(1, "w", encoding="utf-8", buffering=1, closefd=False)
        sys.stderr = open(2, "w", encoding="utf-8", buffering=1, closefd=False)
        code = 0
        try:
            os.chdir(cwd)
            os.environ.update(env or {})
            logging.root.handlers = []  # as in a new process: WARNING and above through logging.lastResort
            logging.root.setLevel(logging.WARNING)
            with warnings.catch_warnings():
                _fresh_warning_filters()
                warnings.showwarning = _show_warning
                main([str(a) for a in args])
        except SystemExit as e:
            if isinstance(e.code, int) or e.code is None:
                code = e.code or 0
            else:
                print(e.code, file=sys.stderr)
                code = 1
        except Exception:  # uncaught in a process: its traceback on stderr, exit status 1
            traceback.print_exc()
            code = 1
        finally:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
                stream.close()
            sys.stdout, sys.stderr = streams
            for fd, saved_fd in zip((1, 2), fds):
                os.dup2(saved_fd, fd)
                os.close(saved_fd)
            saved.restore()
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(["dropbn", *map(str, args)], code,
                                           out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace"))


def _fresh_warning_filters() -> None:
    """A new interpreter's warning filters (CPython's defaults, without -W options)."""
    import warnings

    warnings.resetwarnings()
    warnings.filterwarnings("default", category=DeprecationWarning, module="__main__", append=True)
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
        warnings.simplefilter("ignore", category, append=True)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    import warnings

    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


class _ProcessState:
    """What a dropbn call may change in its process, saved on creation and put back by restore()."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)

    def __init__(self):
        import logging

        self.cwd = os.getcwd()
        self.environ = dict(os.environ)
        self.argv = list(sys.argv)
        self.handlers = {s: signal.getsignal(s) for s in self.SIGNALS}
        self.threads = torch.get_num_threads()
        self.loggers = {name: self._logger_state(logging.getLogger(name))
                        for name in [None, *logging.Logger.manager.loggerDict]
                        if name is None or isinstance(logging.Logger.manager.loggerDict[name], logging.Logger)}
        self.disable = logging.root.manager.disable

    @staticmethod
    def _logger_state(lg):
        return list(lg.handlers), lg.level, lg.propagate, lg.disabled

    def restore(self) -> None:
        import logging

        os.chdir(self.cwd)
        os.environ.clear()
        os.environ.update(self.environ)
        sys.argv = self.argv
        for s, h in self.handlers.items():
            if signal.getsignal(s) is not h and h is not None:
                signal.signal(s, h)
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        for name, lg in list(logging.Logger.manager.loggerDict.items()):
            if isinstance(lg, logging.Logger) and name not in self.loggers:
                lg.handlers, lg.disabled = [], False  # a logger first met in the call: as it was created
        for name, (handlers, level, propagate, disabled) in self.loggers.items():
            lg = logging.getLogger(name)
            lg.handlers, lg.propagate, lg.disabled = handlers, propagate, disabled
            lg.setLevel(level)
        logging.disable(self.disable)
