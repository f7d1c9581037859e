"""Bad values and hostile conditions are one line (issue 27): a data set too small for its batches,
a disk that fills up while a run writes its files, an export folder that is a file. Numbers beyond
float32 / int64 are rows of tests/test_validation.py's table."""
from __future__ import annotations

import errno
import json
import os

import pytest

from dropbn.base.errors import ConfigError, DropbnError
from dropbn.record.layout import SUMMARY
from dropbn.train import checkpoint
from dropbn.train import loop as T

from .conftest import compose, needs_mnist
from .test_report import make_run
from .test_untrusted_files import mnist_folder

IMAGES = ("data=imagefolder", "model.hidden=[8]", "train.batch_size=4", "train.eval_train_size=null",
          "train.progress=false", "train.diagnostics=false", "device=cpu", "train.threads=1", "train.epochs=1")


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """12 training and 6 test images of each of the digits 0-2, from MNIST."""
    return mnist_folder(tmp_path_factory.mktemp("digits") / "digits")


@needs_mnist
def test_an_image_folder_too_small_for_its_batches_is_one_line_before_training(digits, tmp_path):
    # 36 training images, 35 held out for validation: one left, fewer than a batch (it divided by zero)
    cfg = compose(*IMAGES, f"data.path={digits}", "data.val_size=35", f"data.cache_dir={tmp_path / 'c'}")
    with pytest.raises(ConfigError, match=r"^train.batch_size=4: must be <= the training-set size \(1: "
                                          r"imagefolder:digits's training images after data.val_size=35\)$"):
        T.run(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / SUMMARY).exists() and not (tmp_path / "run" / "checkpoint.pt").exists()


@needs_mnist
def test_a_full_disk_while_writing_run_files_is_one_line_and_a_failed_summary(digits, tmp_path, monkeypatch):
    def disk_full(data, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint, "atomic_write_bytes", disk_full)  # the checkpoint after epoch 1
    cfg = compose(*IMAGES, f"data.path={digits}", f"data.cache_dir={tmp_path / 'c'}")
    with pytest.raises(DropbnError) as e:
        T.run(cfg, tmp_path / "run")
    assert str(e.value) == (f"{tmp_path / 'run'}: the run stopped: OSError: No space left on device (summary.json "
                            f"says failed; once there is room, the same command resumes it from its last "
                            f"checkpoint, if any)")
    s = json.loads((tmp_path / "run" / SUMMARY).read_text())
    assert s["status"] == "failed" and s["error"] == "OSError: No space left on device"


def test_export_into_a_file_is_one_line(tmp_path):
    pytest.importorskip("tensorboard", reason="the tracking extra (tensorboard) is not installed")
    from dropbn.commands.export_cmd import main as export_main

    make_run(tmp_path / "s" / "seed=0")
    (tmp_path / "afile").write_text("not a folder")
    for out, why in (("afile", "is a file"), ("afile/sub", f"is below the file {tmp_path / 'afile'}")):
        with pytest.raises(DropbnError, match=f"^--out {tmp_path / out} {why}; must be a folder path"):
            export_main(["tensorboard", str(tmp_path / "s"), "--out", str(tmp_path / out)])
