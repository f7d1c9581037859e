"""Data: files on disk -> uint8 tensors (cached) -> resident tensors -> batches.

Each split is decoded once into a uint8 tensor of shape (N, C, H, W) and cached
in a writable cache folder (never the data root, which may be read-only). During
training the tensors stay resident on the training device; batches are drawn by
indexing a seeded permutation and normalised on the fly. No per-sample Python,
no PIL in the loop.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import DataError
from .checkpoint import atomic_torch_save

CACHE_VERSION = 1

TV_FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CLASSES = {
    "mnist": [str(i) for i in range(10)],
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer",
                "dog", "frog", "horse", "ship", "truck"],
}
LABELS = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff"}


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


def resolve_cache_dir(cache_dir) -> Path:
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("DROPBN_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dropbn"


# ---------------------------------------------------------------- raw readers
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


def _idx_paths(root: Path, name: str) -> list[Path]:
    raw = root / TV_FOLDERS[name] / "raw"
    return [raw / f for pair in IDX_FILES.values() for f in pair]


def _exists(p: Path) -> bool:
    return p.exists() or p.with_name(p.name + ".gz").exists()


def _download(name: str, root: Path) -> None:
    """Fetch with torchvision (online use). Any failure becomes one DataError line."""
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[name]
    try:
        for train in (True, False):
            cls(root=str(root), train=train, download=True)
    except Exception as e:  # offline, read-only root, checksum mismatch ...
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"download failed ({type(e).__name__}: {reason})") from None


def _ensure_files(name: str, root: Path, files: list[Path], download: bool) -> None:
    missing = [p for p in files if not _exists(p)]
    if not missing:
        return
    how = (f"put torchvision's {LABELS[name]} files there, or point data.root / "
           f"DROPBN_DATA_DIR at a folder that has them")
    where = f"{LABELS[name]} not found under {root}: missing {', '.join(str(p.relative_to(root)) for p in missing[:2])}"
    where += f" (+{len(missing) - 2} more)" if len(missing) > 2 else ""
    if not download:
        raise DataError(f"{where}; {how} (data.download=false)")
    try:
        _download(name, root)
    except DataError as e:
        raise DataError(f"{where}; {e}; {how}") from None
    if any(not _exists(p) for p in files):
        raise DataError(f"{where}; download did not produce them; {how}")


def _read_torchvision_idx(name: str, root: Path) -> dict:
    raw = root / TV_FOLDERS[name] / "raw"
    out = {}
    for split, (img, lab) in IDX_FILES.items():
        x = read_idx(raw / img, 3)
        y = read_idx(raw / lab, 1)
        if len(x) != len(y):
            raise DataError(f"corrupt data in {raw}: {len(x)} images but {len(y)} labels ({split})")
        out[split] = (x[:, None], y)
    return out


def _read_cifar(root: Path) -> dict:
    folder = root / "cifar-10-batches-py"
    xs, ys = {"train": [], "test": []}, {"train": [], "test": []}
    for f in CIFAR_FILES:
        try:
            with open(folder / f, "rb") as fh:
                d = pickle.load(fh, encoding="latin1")
            x = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            y = np.asarray(d["labels"], dtype=np.int64)
        except Exception as e:
            raise DataError(f"corrupt CIFAR-10 file {folder / f}: {type(e).__name__}: {e}") from None
        split = "test" if f == "test_batch" else "train"
        xs[split].append(x)
        ys[split].append(y)
    return {s: (np.concatenate(xs[s]), np.concatenate(ys[s])) for s in xs}


def _decode_image(data: bytes, where: str, image_size):
    from PIL import Image

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


def _read_imagefolder(path: Path, image_size) -> dict:
    from tqdm import tqdm

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


# ---------------------------------------------------------------- cache
def _source_files(cfg, root: Path) -> tuple[str, list[Path]]:
    name = cfg.name
    if name in TV_FOLDERS:
        return name, _idx_paths(root, name)
    if name == "cifar10":
        return name, [root / "cifar-10-batches-py" / f for f in CIFAR_FILES]
    if name == "imagefolder":
        if not cfg.path:
            raise DataError("data=imagefolder needs data.path (a folder with train/<class>/* and "
                            "test/<class>/*, or a .tar.gz of one)")
        p = Path(cfg.path).expanduser()
        if not p.exists():
            raise DataError(f"data.path={cfg.path}: no such file or folder")
        return name, [p]
    raise DataError(f"data.name={name!r}: allowed mnist, fashion_mnist, cifar10, imagefolder")


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


def load_raw(cfg) -> dict:
    """Decoded uint8 arrays for both splits, through the cache. Keys: train, test, classes."""
    from filelock import FileLock

    root = resolve_root(cfg.root)
    name, files = _source_files(cfg, root)
    if name in TV_FOLDERS or name == "cifar10":
        _ensure_files(name, root, files, bool(cfg.download))
    key = _fingerprint(files, f"{name}|{cfg.get('image_size')}")
    cache = resolve_cache_dir(cfg.cache_dir)
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cache folder {cache} is not writable ({e.strerror}); set "
                        f"data.cache_dir or DROPBN_CACHE_DIR") from None
    target = cache / f"{name}-{key}.pt"
    with FileLock(str(target) + ".lock", timeout=600):
        if target.exists():
            try:
                return torch.load(target, weights_only=False)
            except Exception:
                target.unlink(missing_ok=True)  # truncated by a crash elsewhere: rebuild
        if name in TV_FOLDERS:
            arrays = _read_torchvision_idx(name, root)
        elif name == "cifar10":
            arrays = _read_cifar(root)
        else:
            arrays = _read_imagefolder(files[0], cfg.get("image_size"))
        out = {s: (torch.from_numpy(np.ascontiguousarray(arrays[s][0])),
                   torch.from_numpy(np.asarray(arrays[s][1], dtype=np.int64)))
               for s in ("train", "test")}
        out["classes"] = arrays.get("classes", CLASSES.get(name))
        atomic_torch_save(out, target)
        return out


def data_label(cfg) -> str:
    if cfg.name == "imagefolder":
        p = str(cfg.path or "")
        if "cifar10-jpeg" in p:
            return "CIFAR-10 (JPEG q75 mirror)"
        return f"imagefolder:{Path(p).name}"
    return LABELS[cfg.name]


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

    shuffle=True draws a new permutation from `generator` each pass; a last
    partial batch is kept unless it has a single sample (batch norm needs 2).
    """

    def __init__(self, split: Split, batch_size: int, mean, std, *, shuffle=False,
                 generator: torch.Generator | None = None, augment=False,
                 channels_last=False):
        self.split, self.bs = split, int(batch_size)
        self.scale = (1.0 / (255.0 * std)).view(1, -1, 1, 1)
        self.shift = (-mean / std).view(1, -1, 1, 1)
        self.shuffle, self.gen, self.augment = shuffle, generator, augment
        self.channels_last = channels_last

    def __len__(self) -> int:
        n = len(self.split)
        full, rest = divmod(n, self.bs)
        return full + (1 if rest > (1 if self.shuffle else 0) else 0)

    def __iter__(self):
        x, y = self.split.x, self.split.y
        n = len(y)
        idx = torch.randperm(n, device=x.device, generator=self.gen) if self.shuffle else None
        for i in range(len(self)):
            if idx is None:
                xb, yb = x[i * self.bs:(i + 1) * self.bs], y[i * self.bs:(i + 1) * self.bs]
            else:
                j = idx[i * self.bs:(i + 1) * self.bs]
                xb, yb = x[j], y[j]
            xb = xb.float().mul_(self.scale).add_(self.shift)
            if self.augment:
                xb = random_crop_flip(xb, self.gen)
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, yb
