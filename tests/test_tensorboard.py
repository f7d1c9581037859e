"""train.tensorboard=true and `dropbn export tensorboard`, read back with TensorBoard's
own reader (EventAccumulator): per-epoch scalars equal metrics.csv, the hparams
plugin data sits in the run folder's own event file, a resumed run has each epoch
exactly once, an export equals the run's own events and never touches run folders,
and without tensorboard both fail with one line."""
from __future__ import annotations

import csv
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from dropbn.base.errors import DropbnError, Interrupted
from dropbn.base.signals import GracefulStop
from dropbn.commands.export_cmd import export
from dropbn.train.tensorboard import tag
from dropbn.train.loop import run

from .conftest import TINY, call_cli, compose, needs_mnist, run_cli

pytest.importorskip("tensorboard", reason="the tracking extra (tensorboard) is not installed")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

pytestmark = needs_mnist

PER_EPOCH = {"acc/train", "acc/val", "acc/test", "loss/train", "loss/val", "loss/test", "lr", "seconds/epoch"}


def read_events(folder: Path):
    ea = EventAccumulator(str(folder))
    ea.Reload()
    return ea


def scalars(ea) -> dict[str, list[tuple[int, float]]]:
    return {t: [(e.step, e.value) for e in ea.Scalars(t)] for t in ea.Tags()["scalars"]}


def hparams(ea) -> tuple[dict, list[str]]:
    """(hyperparameters of the session, metric tags of the experiment) from the hparams plugin data."""
    content = ea.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    exp = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    hp = {k: (v.string_value if v.HasField("string_value") else v.number_value)
          for k, v in start.session_start_info.hparams.items()}
    return hp, [m.name.tag for m in exp.experiment.metric_infos]


def metrics_csv(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def assert_events_match_run(ea, run_dir: Path):
    got = scalars(ea)
    rows = metrics_csv(run_dir)
    assert PER_EPOCH <= set(got)
    for column in rows[0]:
        t = tag(column)
        if t is None:
            continue
        assert [s for s, _ in got[t]] == [int(r["epoch"]) for r in rows], t  # each epoch once
        assert [v for _, v in got[t]] == pytest.approx([float(r[column]) for r in rows], rel=1e-6), t
    summary = json.loads((run_dir / "summary.json").read_text())
    hp, metric_tags = hparams(ea)
    assert hp["optim.lr"] == pytest.approx(summary["config"]["optim"]["lr"])
    assert hp["model.hidden"] == json.dumps(summary["config"]["model"]["hidden"], separators=(",", ":"))
    assert hp["reg.norm"] == summary["config"]["reg"]["norm"]
    assert hp["status"] == summary["status"]
    assert not {"out_root", "train.force", "train.tensorboard", "data.root"} & set(hp)  # where/how, not what
    assert {"summary/final_val_acc", "summary/final_test_acc", "summary/best_val_acc"} <= set(metric_tags)
    for m in metric_tags:
        assert got[m][-1][1] == pytest.approx(summary[m.removeprefix("summary/")], rel=1e-6)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    study = tmp_path_factory.mktemp("study")
    run_dir = study / "run-a"
    s = run(compose(*TINY, "train.epochs=2", "data.val_size=500", "train.tensorboard=true"), run_dir)
    assert s["status"] == "completed"
    return run_dir


def test_a_run_writes_scalars_and_hparams_into_its_own_event_file(trained):
    assert len(list(trained.glob("events.out.tfevents.*"))) == 1
    assert not [p for p in trained.iterdir() if p.is_dir()]  # no add_hparams subfolder
    assert_events_match_run(read_events(trained), trained)


def test_a_resumed_run_has_each_epoch_once(tmp_path):
    cfg = compose(*TINY, "train.epochs=3", "train.batch_size=32", "data.val_size=500", "train.tensorboard=true")

    def interrupt_after_first_epoch():
        for _ in range(6000):
            if (tmp_path / "metrics.csv").exists():
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.01)

    with GracefulStop():
        watcher = threading.Thread(target=interrupt_after_first_epoch)
        watcher.start()
        with pytest.raises(Interrupted):
            run(cfg, tmp_path)
        watcher.join()
    done = len(metrics_csv(tmp_path))
    assert 1 <= done < 3
    # as if killed after logging the next epoch but before its checkpoint: that epoch runs again
    stale = SummaryWriter(str(tmp_path))
    stale.add_scalar("acc/test", -1.0, done + 1)
    stale.close()
    time.sleep(1.1)  # event files are read in name order, which starts with the second they were opened
    s = run(cfg, tmp_path)  # resumes from the checkpoint
    assert s["status"] == "completed" and len(metrics_csv(tmp_path)) == 3
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 3
    assert_events_match_run(read_events(tmp_path), tmp_path)


def test_tensorboard_switched_on_for_a_resumed_run_gets_the_earlier_epochs(tmp_path):
    """train.tensorboard does not change what a run computes, so it may differ on resume."""
    base = (*TINY, "train.epochs=2", "data.val_size=500")
    run(compose(*base), tmp_path)
    (tmp_path / "summary.json").unlink()  # as if stopped after its last checkpoint
    import torch

    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ck["epoch"] == 2 and not list(tmp_path.glob("events.out.tfevents.*"))
    s = run(compose(*base, "train.tensorboard=true"), tmp_path)
    assert s["status"] == "completed"
    assert_events_match_run(read_events(tmp_path), tmp_path)


def test_export_writes_the_same_events_outside_the_run_folders(trained, tmp_path):
    before = sorted((p.name, p.stat().st_mtime_ns) for p in trained.iterdir())
    out = tmp_path / "tb"
    written = export([trained.parent], out)
    assert written == [out / trained.parent.name / trained.name]
    assert_events_match_run(read_events(written[0]), trained)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in trained.iterdir()) == before
    export([trained.parent], out)  # again: replaced, not appended
    assert len(list(written[0].glob("events.out.tfevents.*"))) == 1
    assert [p.name for p in out.iterdir()] == [trained.parent.name]  # no temp folders left
    with pytest.raises(DropbnError, match="never writes into run folders"):
        export([trained.parent], trained / "tb")
    with pytest.raises(DropbnError, match="no such folder"):
        export([tmp_path / "nothing"], out)
    with pytest.raises(DropbnError, match="no finished runs"):
        export([out], tmp_path / "tb2")


def test_export_command_line(trained, tmp_path):
    r = call_cli(["export", "tensorboard", str(trained.parent), "--out", str(tmp_path / "tb")], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "wrote TensorBoard events of 1 runs" in r.stdout
    assert_events_match_run(read_events(tmp_path / "tb" / trained.parent.name / trained.name), trained)


@pytest.mark.slow
def test_without_tensorboard_train_and_export_fail_with_one_line(tmp_path, trained):
    blocker = tmp_path / "block" / "tensorboard"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('tensorboard hidden for a test')\n")
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(blocker.parent), os.environ.get("PYTHONPATH")]))}
    r = run_cli(["train", *TINY, "train.epochs=1", "train.tensorboard=true", f"out_root={tmp_path / 'out'}"],
                cwd=tmp_path, env=env)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "dropbn: error: TensorBoard is not installed: pip install 'dropbn[tracking]' (or pip install tensorboard)"]
    r = run_cli(["export", "tensorboard", str(trained.parent), "--out", str(tmp_path / "tb")], cwd=tmp_path, env=env)
    assert r.returncode == 2 and "pip install 'dropbn[tracking]'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
