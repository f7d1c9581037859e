"""The data layer: torchvision's on-disk layouts, ImageFolder trees and
archives, the cache, splits, batches, and the missing-data error."""
import gzip
import io
import tarfile

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from dropbn.train import data as D
from dropbn.base.errors import DataError


def write_idx(path, arr: np.ndarray, gz=False):
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    payload = header + arr.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def fake_mnist(root, folder="MNIST", n_train=50, n_test=20, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    xs = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        img, lab = D.IDX_FILES[split]
        write_idx(raw / img, x, gz)
        write_idx(raw / lab, y, gz)
        xs[split] = (x, y)
    return xs


def dcfg(**kw):
    base = dict(name="mnist", root=None, path=None, cache_dir=None, download=False, train_size=None,
                val_size=0, split_seed=0, augment=False, image_size=None)
    base.update(kw)
    return OmegaConf.create(base)


@pytest.mark.parametrize("name,folder,gz", [("mnist", "MNIST", False), ("fashion_mnist", "FashionMNIST", True)])
def test_reads_torchvision_idx_layout(tmp_path, name, folder, gz):
    truth = fake_mnist(tmp_path / "root", folder, gz=gz)
    d = D.load_data(dcfg(name=name, root=str(tmp_path / "root"), cache_dir=str(tmp_path / "c")))
    assert d.shape == (1, 28, 28) and d.train.x.dtype == torch.uint8
    assert d.sizes() == {"train": 50, "val": 0, "test": 20}
    # the test split keeps file order: compare exactly
    assert np.array_equal(d.test.x[:, 0].numpy(), truth["test"][0])
    assert np.array_equal(d.test.y.numpy(), truth["test"][1].astype(np.int64))
    assert len(d.classes) == 10


def test_split_subset_and_validation_are_seeded_and_disjoint(tmp_path):
    fake_mnist(tmp_path / "r", n_train=100)
    kw = dict(root=str(tmp_path / "r"), cache_dir=str(tmp_path / "c"), train_size=30, val_size=20)
    a, b = D.load_data(dcfg(**kw)), D.load_data(dcfg(**kw))
    assert a.sizes() == {"train": 30, "val": 20, "test": 20}
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.val.x, b.val.x)
    flat = lambda s: {bytes(r.numpy().tobytes()) for r in s.x}  # noqa: E731
    assert not flat(a.train) & flat(a.val)
    c = D.load_data(dcfg(**kw, split_seed=1))
    assert not torch.equal(a.train.x, c.train.x)


def test_cache_is_written_outside_a_readonly_root_and_reused(tmp_path):
    root = tmp_path / "r"
    fake_mnist(root)
    for p in root.rglob("*"):
        p.chmod(0o555 if p.is_dir() else 0o444)
    cache = tmp_path / "c"
    D.load_data(dcfg(root=str(root), cache_dir=str(cache)))
    files = list(cache.glob("mnist-*.pt"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    D.load_data(dcfg(root=str(root), cache_dir=str(cache)))
    assert files[0].stat().st_mtime_ns == mtime  # second load reads the cache


def _png(arr):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def make_imagefolder(root, classes=("cat", "dog", "frog"), n=4, size=8):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (root / split / c / f"{i}.png").write_bytes(
                    _png(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)))


def test_imagefolder_folder_and_targz_agree(tmp_path):
    tree = tmp_path / "imgs"
    make_imagefolder(tree / "top")
    arch = tmp_path / "imgs.tar.gz"
    with tarfile.open(arch, "w:gz") as t:
        t.add(tree / "top", arcname="top")
    a = D.load_data(dcfg(name="imagefolder", path=str(tree / "top"), cache_dir=str(tmp_path / "c")))
    b = D.load_data(dcfg(name="imagefolder", path=str(arch), cache_dir=str(tmp_path / "c")))
    assert a.classes == b.classes == ["cat", "dog", "frog"]
    assert a.shape == (3, 8, 8) and a.sizes() == {"train": 12, "val": 0, "test": 12}
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    assert sorted(a.test.y.tolist()) == [0] * 4 + [1] * 4 + [2] * 4


def _archive(tree, target):
    target.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(target, "w:gz") as t:
        t.add(tree / "train", arcname="train")
        t.add(tree / "test", arcname="test")


def test_cifar10_jpeg_is_the_archive_under_the_data_root_with_its_own_label(tmp_path):
    from dropbn.base.datasets import CIFAR10_CLASSES

    make_imagefolder(tmp_path / "tree", classes=CIFAR10_CLASSES, n=1)
    _archive(tmp_path / "tree", tmp_path / "root" / "cifar10-jpeg.tar.gz")
    d = D.load_data(dcfg(name="cifar10_jpeg", root=str(tmp_path / "root"), cache_dir=str(tmp_path / "c")))
    assert d.label == "CIFAR-10 (JPEG q75 mirror)" and d.classes == list(CIFAR10_CLASSES)
    assert d.sizes() == {"train": 10, "val": 0, "test": 10}
    with pytest.raises(DataError) as e:  # no torchvision download for it: say where and how, one line
        D.load_data(dcfg(name="cifar10_jpeg", root=str(tmp_path / "empty"), cache_dir=str(tmp_path / "c"),
                         download=True))
    msg = str(e.value)
    assert msg.startswith("CIFAR-10 (JPEG q75 mirror) not found under") and "cifar10-jpeg.tar.gz" in msg
    # an archive of other classes is not the mirror
    make_imagefolder(tmp_path / "other", classes=("cat", "dog"), n=1)
    _archive(tmp_path / "other", tmp_path / "root2" / "cifar10-jpeg.tar.gz")
    with pytest.raises(DataError, match="holds the classes .*'cat', 'dog'.*not those of CIFAR-10"):
        D.load_data(dcfg(name="cifar10_jpeg", root=str(tmp_path / "root2"), cache_dir=str(tmp_path / "c")))


def test_an_image_folder_is_labelled_by_its_name(tmp_path):
    make_imagefolder(tmp_path / "pets", n=1)
    d = D.load_data(dcfg(name="imagefolder", path=str(tmp_path / "pets"), cache_dir=str(tmp_path / "c")))
    assert d.label == "imagefolder:pets"


def test_imagefolder_unreadable_image_is_a_data_error(tmp_path):
    make_imagefolder(tmp_path / "t")
    (tmp_path / "t" / "train" / "cat" / "bad.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="unreadable image .*bad.png"):
        D.load_data(dcfg(name="imagefolder", path=str(tmp_path / "t"), cache_dir=str(tmp_path / "c")))


def test_corrupt_idx_is_a_data_error(tmp_path):
    fake_mnist(tmp_path / "r")
    p = tmp_path / "r" / "MNIST" / "raw" / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-100])  # truncated
    with pytest.raises(DataError, match="corrupt IDX file .*train-images"):
        D.load_data(dcfg(root=str(tmp_path / "r"), cache_dir=str(tmp_path / "c")))


def test_missing_offline_gives_one_line_with_where_and_how(tmp_path, monkeypatch):
    def offline(name, root):
        raise DataError("download failed (URLError: <urlopen error [Errno -3] Temporary failure in name resolution>)")

    monkeypatch.setattr(D, "_download", offline)
    with pytest.raises(DataError) as e:
        D.load_data(dcfg(root=str(tmp_path / "empty"), cache_dir=str(tmp_path / "c"), download=True))
    msg = str(e.value)
    assert "\n" not in msg
    assert "MNIST not found under" in msg and str(tmp_path / "empty") in msg
    assert "download failed" in msg and "DROPBN_DATA_DIR" in msg


def test_root_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("DROPBN_DATA_DIR", str(tmp_path / "env"))
    assert D.resolve_root("/x/y") == D.Path("/x/y")
    assert D.resolve_root(None) == tmp_path / "env"
    monkeypatch.delenv("DROPBN_DATA_DIR")
    assert D.resolve_root(None) == D.Path("data")


def test_batches_cover_everything_once_and_normalise():
    x = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous()
    s = D.Split(x, torch.arange(10))
    mean, std = torch.tensor([0.5]), torch.tensor([0.25])
    b = D.Batches(s, 4, mean, std, shuffle=True, generator=torch.Generator().manual_seed(0))
    ys = torch.cat([yb for _, yb in b])
    assert sorted(ys.tolist()) == list(range(10)) and len(b) == 3
    xb, yb = next(iter(D.Batches(s, 10, mean, std)))
    assert torch.allclose(xb[:, 0, 0, 0], (yb.float() / 255 - 0.5) / 0.25)
    # a single leftover sample is dropped in training (batch norm needs 2)
    assert len(D.Batches(D.Split(x[:9], torch.arange(9)), 4, mean, std, shuffle=True,
                         generator=torch.Generator())) == 2


def test_random_crop_flip_is_batched_seeded_and_shape_preserving():
    x = torch.randn(16, 3, 8, 8)
    a = D.random_crop_flip(x, torch.Generator().manual_seed(1))
    b = D.random_crop_flip(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b)
    # every output is a shifted (and maybe mirrored) window of the zero-padded input
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(16):
        found = any(torch.equal(a[i], w) or torch.equal(a[i].flip(2), w)
                    for oy in range(9) for ox in range(9) for w in [padded[i, :, oy:oy + 8, ox:ox + 8]])
        assert found
