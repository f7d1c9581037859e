"""Readers of the on-disk formats: IDX files, CIFAR-10's pickled batches, image folders.

Each reader takes the files a source names (see dropbn.train.data.SOURCES) and the data config,
and returns uint8 arrays: {"train": (x, y), "test": (x, y)} with x of shape (N, C, H, W),
plus "classes" when the files name them. numpy and PIL only; no torch.
"""
from __future__ import annotations

import gzip
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..base.errors import DataError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff"}
# what a CIFAR-10 batch pickles besides plain containers: numpy arrays (and latin-1 bytes)
ARRAY_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                 ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _ArrayUnpickler(pickle.Unpickler):
    """Rebuilds dicts, lists, strings, numbers and numpy arrays; refuses any other object, so
    reading a pickled batch never executes it."""

    def find_class(self, module, name):
        if (module, name) in ARRAY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it holds a pickled {module}.{name}, not a CIFAR-10 batch; not loaded")


def _open_maybe_gz(path: Path) -> bytes:
    if path.exists():
        return path.read_bytes()
    gz = path.with_name(path.name + ".gz")
    with gzip.open(gz, "rb") as f:
        return f.read()


def read_idx(path: Path, expect_dims: int) -> np.ndarray:
    """Parse an IDX file (uint8 payload), checking magic and size."""
    try:
        raw = _open_maybe_gz(path)
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    if len(raw) < 4 + 4 * expect_dims:
        raise DataError(f"corrupt IDX file {path}: only {len(raw)} bytes")
    zero, dtype, ndim = raw[0] << 8 | raw[1], raw[2], raw[3]
    if zero != 0 or dtype != 0x08 or ndim != expect_dims:
        raise DataError(f"corrupt IDX file {path}: bad magic {raw[:4].hex()} "
                        f"(expected 0000080{expect_dims})")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    payload = raw[4 + 4 * ndim:]
    if len(payload) != int(np.prod(dims)):
        raise DataError(f"corrupt IDX file {path}: header says {dims} = {int(np.prod(dims))} "
                        f"bytes, file has {len(payload)}")
    return np.frombuffer(payload, dtype=np.uint8).reshape(dims).copy()


def read_idx_pairs(files: list[Path], cfg) -> dict:
    """IDX files: train images, train labels, test images, test labels."""
    out = {}
    for split, (img, lab) in zip(("train", "test"), zip(files[::2], files[1::2])):
        x = read_idx(img, 3)
        y = read_idx(lab, 1)
        if len(x) != len(y):
            raise DataError(f"corrupt data in {img.parent}: {len(x)} images but {len(y)} labels ({split})")
        out[split] = (x[:, None], y)
    return out


def read_cifar(files: list[Path], cfg) -> dict:
    """CIFAR-10's pickled batches; the one named test_batch is the test split."""
    xs, ys = {"train": [], "test": []}, {"train": [], "test": []}
    for f in files:
        try:
            with open(f, "rb") as fh:
                d = _ArrayUnpickler(fh, encoding="latin1").load()
            x = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            y = np.asarray(d["labels"], dtype=np.int64)
        except Exception as e:
            raise DataError(f"corrupt CIFAR-10 file {f}: {type(e).__name__}: {e}") from None
        split = "test" if f.name == "test_batch" else "train"
        xs[split].append(x)
        ys[split].append(y)
    return {s: (np.concatenate(xs[s]), np.concatenate(ys[s])) for s in xs}


def _decode_image(data: bytes, where: str, image_size):
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("RGB") if im.mode not in ("L", "RGB") else im.copy()
    except Exception as e:
        raise DataError(f"unreadable image {where}: {type(e).__name__}") from None
    if image_size:
        im = im.resize((image_size, image_size))
    a = np.asarray(im, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def _iter_imagefolder(path: Path):
    """Yield (split, class, where, bytes) for every image in a folder or archive."""
    if path.is_dir():
        for split in ("train", "test"):
            for f in sorted((path / split).rglob("*")):
                if f.suffix.lower() in IMAGE_EXTS and f.is_file():
                    rel = f.relative_to(path / split)
                    yield split, rel.parts[0], str(f), f.read_bytes()
        return
    try:
        with tarfile.open(path, "r:*") as tar:
            for m in tar:
                parts = Path(m.name).parts
                # accept an optional top folder: [top/]train/<class>/<file>
                for k in range(len(parts)):
                    if parts[k] in ("train", "test") and len(parts) - k >= 3:
                        break
                else:
                    continue
                if not m.isfile() or Path(m.name).suffix.lower() not in IMAGE_EXTS:
                    continue
                yield parts[k], parts[k + 1], f"{path}:{m.name}", tar.extractfile(m).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"cannot read archive {path}: {type(e).__name__}: {e}") from None


def read_imagefolder(files: list[Path], cfg) -> dict:
    """An image-folder tree or archive (files[0]): [top/]{train,test}/<class>/<image>;
    classes are the sorted folder names of train/."""
    path, image_size = files[0], cfg.get("image_size")
    imgs = {"train": [], "test": []}
    labels = {"train": [], "test": []}
    for split, cls, where, data in tqdm(_iter_imagefolder(path), desc=f"decode {path.name}",
                                        unit="img", leave=False, mininterval=1.0):
        imgs[split].append(_decode_image(data, where, image_size))
        labels[split].append(cls)
    for split in ("train", "test"):
        if not imgs[split]:
            raise DataError(f"no images under {path}/{split}/<class>/ (expected train/<class>/* "
                            f"and test/<class>/*)")
    classes = sorted(set(labels["train"]))
    extra = sorted(set(labels["test"]) - set(classes))
    if extra:
        raise DataError(f"test classes {extra} of {path} have no training images")
    shapes = {a.shape for s in imgs.values() for a in s}
    if len(shapes) > 1:
        raise DataError(f"images under {path} differ in size ({sorted(shapes)[:3]} ...); "
                        f"set data.image_size to resize them")
    index = {c: i for i, c in enumerate(classes)}
    out = {s: (np.stack(imgs[s]), np.asarray([index[c] for c in labels[s]], dtype=np.int64))
           for s in imgs}
    out["classes"] = classes
    return out
