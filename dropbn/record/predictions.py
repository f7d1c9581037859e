"""predictions.npz: the predicted class of every test and validation image of a run, torch-free.

Written by the training loop at the end of a run (dropbn.train.loop.finish), read by the report to
pair runs image by image (dropbn.stats.crossed). `read_predictions` gives, one value per image in
the data set's order:

    labels("test"), labels("val")         the true classes
    get("test", "final"), ...             predictions at the last metrics row
    get("test", "picked"), ...            predictions at the validation-picked epoch (summary.best_epoch);
                                          absent without a validation split
and final_epoch, picked_epoch (NaN when none), num_classes, data_fingerprint (the data's content
fingerprint, as in the recorded config) and test_fingerprint (sha256 of the test labels): runs are
paired only when their test fingerprints agree. A run with train.eval_test=false (a study's tune
stage) has no test arrays.

On disk (numpy's compressed .npz, read with allow_pickle=False, so reading never executes code) a
prediction is stored as its offset from the label, (prediction - label) mod num_classes, in
`<split>_<when>_offset`: 0 wherever the run is right (10.5 KB for a run at 90% test accuracy).
"""
from __future__ import annotations

import hashlib
import io
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .layout import atomic_write_bytes

SPLITS = ("test", "val")


def labels_fingerprint(labels) -> str:
    a = np.ascontiguousarray(np.asarray(labels, dtype=np.int64))
    return hashlib.sha256(a.tobytes()).hexdigest()[:16]


@dataclass
class Predictions:
    """A run's predictions.npz: arrays by name ("test_final", "val_labels", ...) and its scalars."""

    arrays: dict = field(default_factory=dict)
    num_classes: int = 0
    final_epoch: float = math.nan
    picked_epoch: float = math.nan
    data_fingerprint: str = ""
    test_fingerprint: str = ""

    def get(self, split: str, when: str) -> np.ndarray | None:
        return self.arrays.get(f"{split}_{when}")

    def labels(self, split: str) -> np.ndarray | None:
        return self.arrays.get(f"{split}_labels")


def write_predictions(path, labels: dict, final: dict, picked: dict | None, final_epoch, picked_epoch,
                      data_fingerprint: str, num_classes: int) -> None:
    """labels, final, picked: {split: 1-d integer array} (picked None without a validation split)."""
    arrays = {}
    for split, y in labels.items():
        if y is None:
            continue
        arrays[f"{split}_labels"] = _compact(y)
        for when, preds in (("final", final), ("picked", picked)):
            if preds is not None and preds.get(split) is not None:
                offset = (np.asarray(preds[split], dtype=np.int64) - np.asarray(y, dtype=np.int64)) % num_classes
                arrays[f"{split}_{when}_offset"] = _compact(offset)
    scalars = {"num_classes": np.int64(num_classes), "final_epoch": np.float64(final_epoch),
               "picked_epoch": np.float64(math.nan if picked_epoch is None else picked_epoch),
               "data_fingerprint": np.str_(data_fingerprint or ""),
               "test_fingerprint": np.str_(labels_fingerprint(labels["test"]) if labels.get("test") is not None
                                           else "")}
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays, **scalars)
    atomic_write_bytes(buf.getvalue(), path)


def read_predictions(path) -> Predictions:
    """The run's predictions; ValueError (with what is wrong) for a file that is not a valid one."""
    try:
        with np.load(Path(path), allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a readable predictions file ({e})") from None
    out = Predictions()
    try:
        out.num_classes = int(data.pop("num_classes"))
        out.final_epoch = float(data.pop("final_epoch", math.nan))
        out.picked_epoch = float(data.pop("picked_epoch", math.nan))
        out.data_fingerprint = str(data.pop("data_fingerprint", ""))
        out.test_fingerprint = str(data.pop("test_fingerprint", ""))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: a missing or malformed scalar ({e})") from None
    for k, a in data.items():
        if a.ndim != 1 or a.dtype.kind not in "iu":
            raise ValueError(f"{path}: {k} is not a 1-d integer array")
    for k in [k for k in data if k.endswith("_offset")]:
        split = k.split("_")[0]
        y = data.get(f"{split}_labels")
        if y is None or len(y) != len(data[k]) or out.num_classes < 1:
            raise ValueError(f"{path}: {k} does not match {split}_labels")
        out.arrays[k[:-len("_offset")]] = (y.astype(np.int64) + data[k]) % out.num_classes
    out.arrays.update({k: data[k].astype(np.int64) for k in data if k.endswith("_labels")})
    return out


def _compact(a) -> np.ndarray:
    a = np.asarray(a)
    return a.astype(np.uint8 if a.size == 0 or (a.min() >= 0 and a.max() < 256) else np.int16)
