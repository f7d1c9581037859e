"""Shared state is safe: processes that load at once share one cache entry (file
lock + atomic write), the cache is keyed on the source files (changed files ->
a new entry), and a read-only data root is never written to."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from .conftest import DATA_DIR, needs_mnist

IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

LOADER = textwrap.dedent("""
    import hashlib, json, sys
    from omegaconf import OmegaConf
    from dropbn.train.data import load_raw
    cfg = OmegaConf.create(dict(name="mnist", root=sys.argv[1], path=None, cache_dir=sys.argv[2],
                                download=False, image_size=None))
    out = load_raw(cfg)
    h = hashlib.sha1(out["train"][0].numpy().tobytes() + out["train"][1].numpy().tobytes()
                     + out["test"][0].numpy().tobytes()).hexdigest()
    print(json.dumps({"sha": h, "n": len(out["train"][1])}))
""")


def listing(root):
    return sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


def mnist_copy(dst):
    raw = dst / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in IDX:
        shutil.copy(DATA_DIR / "MNIST" / "raw" / f, raw / f)
    return dst


def cache_cfg(root, cache):
    from omegaconf import OmegaConf

    return OmegaConf.create(dict(name="mnist", root=str(root), path=None, cache_dir=str(cache),
                                 download=False, image_size=None))


@needs_mnist
@pytest.mark.slow
def test_two_processes_loading_at_once_share_one_cache_entry(tmp_path):
    cache = tmp_path / "cache"  # empty, not even created yet
    cmd = [sys.executable, "-c", LOADER, str(DATA_DIR), str(cache)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    a, b = (json.loads(out.strip().splitlines()[-1]) for out, _ in outs)
    assert a == b and a["n"] == 60000
    entries = [p.name for p in cache.iterdir() if p.suffix == ".pt"]
    assert len(entries) == 1, sorted(p.name for p in cache.iterdir())
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]  # no half-written files left
    # a third process reuses the entry as it is
    mtime = (cache / entries[0]).stat().st_mtime_ns
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and json.loads(r.stdout.strip().splitlines()[-1]) == a
    assert (cache / entries[0]).stat().st_mtime_ns == mtime


@needs_mnist
def test_changed_source_file_gives_a_new_cache_key(tmp_path):
    from dropbn.train.data import load_raw

    root = mnist_copy(tmp_path / "root")
    cache = tmp_path / "cache"
    first = load_raw(cache_cfg(root, cache))
    (k1,) = [p.name for p in cache.glob("*.pt")]
    # change one label in place (same size): the key must change and the new data be read
    lab = root / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    data = bytearray(lab.read_bytes())
    data[8] = (data[8] + 1) % 10
    lab.write_bytes(bytes(data))
    os.utime(lab, ns=(lab.stat().st_atime_ns, lab.stat().st_mtime_ns + 10**9))
    second = load_raw(cache_cfg(root, cache))
    keys = sorted(p.name for p in cache.glob("*.pt"))
    assert len(keys) == 2 and k1 in keys
    assert int(second["train"][1][0]) == (int(first["train"][1][0]) + 1) % 10
    # touching a file (new mtime, same bytes) is also a change of source
    img = root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    os.utime(img, ns=(img.stat().st_atime_ns, img.stat().st_mtime_ns + 10**9))
    load_raw(cache_cfg(root, cache))
    assert len(list(cache.glob("*.pt"))) == 3


@needs_mnist
def test_read_only_data_root_is_never_written(tmp_path):
    from dropbn.train.data import load_raw

    root = mnist_copy(tmp_path / "root")
    for p in [*root.rglob("*"), root]:
        p.chmod(p.stat().st_mode & ~0o222)
    try:
        before = listing(root)
        out = load_raw(cache_cfg(root, tmp_path / "cache"))
        assert len(out["train"][1]) == 60000
        assert listing(root) == before  # nothing written, even as root (who ignores the mode bits)
        assert list((tmp_path / "cache").glob("*.pt"))
    finally:
        for p in [root, *root.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)


@needs_mnist
def test_shared_data_folder_is_left_as_it_is(tmp_path):
    from dropbn.train.data import load_raw

    before = listing(DATA_DIR / "MNIST")
    load_raw(cache_cfg(DATA_DIR, tmp_path / "cache"))
    assert listing(DATA_DIR / "MNIST") == before
