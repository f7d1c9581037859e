"""Data: files on disk -> uint8 tensors (cached) -> resident tensors -> batches.

Each split is decoded once into a uint8 tensor of shape (N, C, H, W) and cached
in a cache folder (never the data root, which may be read-only); a cache entry,
once built, is read without a lock, so a read-only cache works. During
training the tensors stay resident on the training device; batches are drawn by
indexing a seeded permutation and normalised on the fly. No per-sample Python,
no PIL in the loop.
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from filelock import FileLock

from . import readers
from ..base.datasets import DATASETS, DatasetFacts
from ..base.errors import DataError, first_line
from .checkpoint import atomic_torch_save, load_problem, safe_torch_load
from ..record.identity import fingerprint as content_fingerprint
from ..record.identity import resolve_cache_dir
from ..record.layout import TMP_SUFFIX

CACHE_VERSION = 1
# torchvision's file layouts under the data root
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
log = logging.getLogger("dropbn")


@dataclass
class Split:
    x: torch.Tensor  # uint8 (N, C, H, W)
    y: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device) -> "Split":
        return Split(self.x.to(device), self.y.to(device))

    def subset(self, idx: torch.Tensor) -> "Split":
        return Split(self.x[idx], self.y[idx])


@dataclass
class Data:
    name: str
    label: str          # human name for reports, e.g. "CIFAR-10 (JPEG q75 mirror)"
    classes: list
    train: Split
    test: Split
    val: Split | None
    mean: torch.Tensor  # per channel, in [0, 1] units
    std: torch.Tensor

    @property
    def shape(self) -> tuple:
        return tuple(self.train.x.shape[1:])

    def sizes(self) -> dict:
        return {"train": len(self.train), "val": len(self.val) if self.val is not None else 0,
                "test": len(self.test)}


# ---------------------------------------------------------------- locations
def resolve_root(root) -> Path:
    """data.root if set, else $DROPBN_DATA_DIR, else ./data."""
    if root:
        return Path(root).expanduser()
    return Path(os.environ.get("DROPBN_DATA_DIR") or "data").expanduser()


# ---------------------------------------------------------------- sources
@dataclass(frozen=True)
class Source:
    """A data.name: where its files are, how to read them, how to fetch them."""
    files: Callable[[Path, Any], list[Path]]  # (data root, data config) -> the files `read` needs
    read: Callable[[list[Path], Any], dict]   # (files, data config) -> arrays, see dropbn.train.readers
    facts: DatasetFacts | None = None         # None: classes and sizes come from the files
    torchvision: str | None = None            # the torchvision.datasets class that downloads the files
    path_help: str | None = None              # read from data.path, which must name this


def _idx_files(folder: str) -> Callable[[Path, Any], list[Path]]:
    return lambda root, cfg: [root / folder / "raw" / f for pair in IDX_FILES.values() for f in pair]


def _cifar_files(root: Path, cfg) -> list[Path]:
    return [root / "cifar-10-batches-py" / f for f in CIFAR_FILES]


def _user_path(root: Path, cfg) -> list[Path]:
    if not cfg.path:
        raise DataError(f"data={cfg.name} needs data.path ({SOURCES[cfg.name].path_help})")
    p = Path(cfg.path).expanduser()
    if not p.exists():
        raise DataError(f"data.path={cfg.path}: no such file or folder")
    return [p]


# data.name
SOURCES: dict[str, Source] = {
    "mnist": Source(_idx_files("MNIST"), readers.read_idx_pairs, DATASETS["mnist"], "MNIST"),
    "fashion_mnist": Source(_idx_files("FashionMNIST"), readers.read_idx_pairs,
                            DATASETS["fashion_mnist"], "FashionMNIST"),
    "cifar10": Source(_cifar_files, readers.read_cifar, DATASETS["cifar10"], "CIFAR10"),
    "cifar10_jpeg": Source(lambda root, cfg: [root / "cifar10-jpeg.tar.gz"], readers.read_imagefolder,
                           DATASETS["cifar10_jpeg"]),
    "imagefolder": Source(_user_path, readers.read_imagefolder,
                          path_help="a folder with train/<class>/* and test/<class>/*, or a .tar.gz of one"),
}


def source(name: str) -> Source:
    try:
        return SOURCES[name]
    except KeyError:
        raise DataError(f"data.name={name!r}: allowed: {', '.join(SOURCES)}") from None


def _exists(p: Path) -> bool:
    return p.exists() or p.with_name(p.name + ".gz").exists()


def _download(name: str, root: Path) -> None:
    """Fetch with torchvision (online use). Any failure becomes one DataError line."""
    # imported here: torchvision takes seconds to import and only a download needs it
    import torchvision.datasets as tvd

    cls = getattr(tvd, SOURCES[name].torchvision)
    try:
        for train in (True, False):
            cls(root=str(root), train=train, download=True)
    except Exception as e:  # offline, read-only root, checksum mismatch ...
        raise DataError(f"download failed ({type(e).__name__}: {first_line(e)})") from None


def _ensure_files(name: str, root: Path, files: list[Path], download: bool) -> None:
    missing = [p for p in files if not _exists(p)]
    if not missing:
        return
    src = SOURCES[name]
    label = src.facts.label if src.facts else name
    what = f"torchvision's {label} files" if src.torchvision else ", ".join(p.name for p in files)
    how = f"put {what} there, or point data.root / DROPBN_DATA_DIR at a folder that has them"
    where = f"{label} not found under {root}: missing {', '.join(str(p.relative_to(root)) for p in missing[:2])}"
    where += f" (+{len(missing) - 2} more)" if len(missing) > 2 else ""
    if not download:
        raise DataError(f"{where}; {how} (data.download=false)")
    if not src.torchvision:
        raise DataError(f"{where}; {how} (no download for it)")
    try:
        _download(name, root)
    except DataError as e:
        raise DataError(f"{where}; {e}; {how}") from None
    if any(not _exists(p) for p in files):
        raise DataError(f"{where}; download did not produce them; {how}")


# ---------------------------------------------------------------- cache
def _fingerprint(files: list[Path], extra: str) -> str:
    h = hashlib.sha1(f"v{CACHE_VERSION}|{extra}".encode())
    for f in files:
        real = f if f.exists() else f.with_name(f.name + ".gz")
        st = real.stat()
        h.update(f"{real.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
        if real.is_dir():  # image folder: key on the listing
            for g in sorted(real.rglob("*")):
                s = g.stat()
                h.update(f"{g}|{s.st_size}|{s.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def data_files(cfg) -> list[Path]:
    """The files (or folder) the data set of `cfg` (the data config) is read from, fetched if missing."""
    src = source(cfg.name)
    root = resolve_root(cfg.root)
    files = src.files(root, cfg)
    _ensure_files(cfg.name, root, files, bool(cfg.download))
    return files


def fingerprint(cfg) -> str:
    """The content hash of the data set's files (dropbn.record.identity.fingerprint): what a run's identity
    holds as data.fingerprint, the same wherever the files live."""
    files = data_files(cfg)
    try:
        return content_fingerprint(files, cfg.cache_dir)
    except OSError as e:
        raise DataError(f"cannot read {e.filename or files[0]}: {e.strerror or first_line(e)}") from None


def _cached(target: Path, warn: bool = True) -> dict | None:
    """A built cache entry, or None (missing or unreadable: rebuilt). Entries appear by atomic rename,
    so a reader needs no lock: a read-only cache works once built. Read without executing anything
    (`safe_torch_load`): an entry holding any other pickled object is not loaded, it is rebuilt."""
    if not target.is_file():
        return None
    try:
        out = safe_torch_load(target)
    except Exception as e:
        if warn:
            log.warning(f"data cache entry {target} is unreadable ({load_problem(e)[:160]}); rebuilding it")
        return None
    ok = isinstance(out, dict) and isinstance(out.get("classes"), list) and all(
        isinstance(out.get(s), (tuple, list)) and len(out[s]) == 2 for s in ("train", "test"))
    if not ok:
        if warn:
            log.warning(f"data cache entry {target} does not hold train, test and classes; rebuilding it")
        return None
    return out


def _check_classes(classes: list, src: Source, where: Path) -> None:
    if src.facts and classes != list(src.facts.classes):
        raise DataError(f"{where} holds the classes {classes}, not those of {src.facts.label}: "
                        f"{list(src.facts.classes)}")
    if len(classes) < 2:
        raise DataError(f"{where} holds {len(classes)} class{'' if len(classes) == 1 else 'es'} {classes}; "
                        f"a classifier needs at least 2 (train/<class>/ folders)")


def load_raw(cfg) -> dict:
    """Decoded uint8 arrays for both splits, through the cache. Keys: train, test, classes."""
    src = source(cfg.name)
    files = data_files(cfg)
    key = _fingerprint(files, f"{cfg.name}|{cfg.get('image_size')}")
    cache = resolve_cache_dir(cfg.cache_dir)
    target = cache / f"{cfg.name}-{key}.pt"
    out = _cached(target)
    if out is None:
        out = _build(src, files, cfg, cache, target)
    _check_classes(list(out["classes"]), src, files[0])
    return out


def _build(src: Source, files: list[Path], cfg, cache: Path, target: Path) -> dict:
    """Decode the files into the cache entry `target`, under its lock (one builder at a time)."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(target) + ".lock", timeout=600)
        lock.acquire()
    except OSError as e:
        raise DataError(f"cache folder {cache} is not writable ({e.strerror}) and has no entry for "
                        f"{cfg.name}; set data.cache_dir or DROPBN_CACHE_DIR") from None
    try:
        out = _cached(target, warn=False)  # built by another process while this one waited
        if out is not None:
            return out
        for p in cache.glob(f".{target.name}.*{TMP_SUFFIX}"):  # an interrupted build's leftovers
            p.unlink(missing_ok=True)
        target.unlink(missing_ok=True)  # unreadable (truncated by a crash elsewhere): rebuild
        arrays = src.read(files, cfg)
        classes = list(arrays.get("classes") or src.facts.classes)
        _check_classes(classes, src, files[0])
        out = {s: (torch.from_numpy(np.ascontiguousarray(arrays[s][0])),
                   torch.from_numpy(np.asarray(arrays[s][1], dtype=np.int64)))
               for s in ("train", "test")}
        out["classes"] = classes
        atomic_torch_save(out, target)
        return out
    finally:
        lock.release()


def data_label(cfg) -> str:
    """The data set's name in logs and reports; an image folder is named by its file or folder."""
    facts = source(cfg.name).facts
    return facts.label if facts else f"{cfg.name}:{Path(str(cfg.path or '')).name}"


def load_data(cfg, device="cpu") -> Data:
    """Load, split (seeded subset / validation hold-out) and move to `device`."""
    raw = load_raw(cfg)
    tx, ty = raw["train"]
    n = len(ty)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(cfg.split_seed)))
    val_size = int(cfg.val_size or 0)
    if val_size >= n:
        raise DataError(f"data.val_size={val_size}: must be smaller than the training set ({n})")
    val_idx, rest = perm[:val_size], perm[val_size:]
    if cfg.train_size is not None:
        if int(cfg.train_size) > len(rest):
            raise DataError(f"data.train_size={cfg.train_size}: only {len(rest)} training images "
                            f"available (after val_size={val_size})")
        rest = rest[: int(cfg.train_size)]
    train = Split(tx[rest], ty[rest])
    val = Split(tx[val_idx], ty[val_idx]) if val_size else None
    test = Split(*raw["test"])
    xf = train.x.float().div_(255)
    mean = xf.mean(dim=(0, 2, 3))
    std = xf.std(dim=(0, 2, 3)).clamp_min(1e-3)
    del xf
    return Data(name=cfg.name, label=data_label(cfg), classes=list(raw["classes"]),
                train=train.to(device), test=test.to(device),
                val=val.to(device) if val is not None else None,
                mean=mean.to(device), std=std.to(device))


# ---------------------------------------------------------------- batches
def random_crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Batched random crop (zero padding) + horizontal flip, as tensor ops."""
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), device=x.device, generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (b,), device=x.device, generator=generator)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    out = padded[bi, ci, rows, cols]
    flip = torch.rand(b, device=x.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


class Batches:
    """Iterate (x float normalised, y) over a resident Split.

    Iterating gives one pass; shuffle=True draws a new permutation from
    `generator` each pass. A last partial batch is kept unless it has a single
    sample (batch norm needs 2). `take(n)` continues an endless sequence of
    passes instead (the training stream), whose position `state()` /
    `load_state()` save and restore.
    """

    def __init__(self, split: Split, batch_size: int, mean, std, *, shuffle=False,
                 generator: torch.Generator | None = None, augment=False,
                 channels_last=False):
        self.split, self.bs = split, int(batch_size)
        self.scale = (1.0 / (255.0 * std)).view(1, -1, 1, 1)
        self.shift = (-mean / std).view(1, -1, 1, 1)
        self.shuffle, self.gen, self.augment = shuffle, generator, augment
        self.channels_last = channels_last
        self.perm = None  # take(): the permutation of the pass under way (None: none under way / no shuffle)
        self.pos = 0      # take(): batches of that pass already drawn

    def __len__(self) -> int:
        n = len(self.split)
        full, rest = divmod(n, self.bs)
        return full + (1 if rest > (1 if self.shuffle else 0) else 0)

    def _order(self) -> torch.Tensor | None:
        """A new pass's order: a permutation drawn from the generator, or None (in order)."""
        if not self.shuffle:
            return None
        return torch.randperm(len(self.split), device=self.split.y.device, generator=self.gen)

    def _batch(self, idx: torch.Tensor | None, i: int):
        """Batch `i` of a pass in order `idx`; augmentation draws from the generator."""
        sl = slice(i * self.bs, (i + 1) * self.bs)
        if idx is None:
            xb, yb = self.split.x[sl], self.split.y[sl]
        else:
            j = idx[sl]
            xb, yb = self.split.x[j], self.split.y[j]
        xb = xb.float().mul_(self.scale).add_(self.shift)
        if self.augment:
            xb = random_crop_flip(xb, self.gen)
        if self.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        return xb, yb

    def __iter__(self):
        idx = self._order()
        for i in range(len(self)):
            yield self._batch(idx, i)

    def take(self, n: int):
        """The next `n` batches of the stream: passes one after another, each drawing its
        permutation at its first batch, so n = len(self) from a pass start is one pass of __iter__."""
        for _ in range(n):
            if self.pos == 0:
                self.perm = self._order()
            batch = self._batch(self.perm, self.pos)
            self.pos = (self.pos + 1) % len(self)
            if self.pos == 0:
                self.perm = None
            yield batch

    def state(self) -> dict:
        """The stream's position (the generator's state is saved separately)."""
        return {"perm": None if self.perm is None else self.perm.cpu(), "pos": self.pos}

    def load_state(self, s: dict) -> None:
        self.perm = None if s["perm"] is None else s["perm"].to(self.split.y.device)
        self.pos = int(s["pos"])
