"""What a run is, torch-free: the content fingerprint of its data, and a folder name that always fits.

A data set takes part in a run's identity by what it holds, not by where it lives
or how its path is spelled: `fingerprint(paths, cache_dir)` hashes the bytes of
the files a source reads (a folder: every file with its relative path). Hashing is
memoised per file (or folder listing) by (real path, size, mtime) in the cache
folder, so each version of a data set is read once; a read-only cache only loses
the memo. The recorded config of a run holds the result as `data.fingerprint`
(dropbn.record.layout.recorded_config).

Folder names come from the overrides (Hydra's override_dirname); `folder_name`
adds the data's fingerprint when data.path is set, so a sweep over data.path
makes one folder per data set, and shortens a name too long for a file system
to a readable prefix plus a hash of the whole name: the same command always maps
to the same folder.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import re
from pathlib import Path

FINGERPRINT_KEY = "data.fingerprint"  # where the recorded config holds it
FINGERPRINT_CHARS = 16                 # hex characters kept (64 bits)
MEMO_DIR = "fingerprints"              # under the cache folder: one small file per memoised hash
MAX_NAME_BYTES = 200                   # folder names: below the 255 bytes most file systems allow
NAME_HASH_CHARS = 12
_CHUNK = 1 << 20


def resolve_cache_dir(cache_dir) -> Path:
    """data.cache_dir if set, else $DROPBN_CACHE_DIR, else $XDG_CACHE_HOME/dropbn (~/.cache/dropbn)."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("DROPBN_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dropbn"


# ---------------------------------------------------------------- data fingerprints
def _memo_file(cache: Path, key: str) -> Path:
    return cache / MEMO_DIR / hashlib.sha1(key.encode()).hexdigest()


def _memo_get(cache: Path, key: str) -> str | None:
    try:
        text = _memo_file(cache, key).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if re.fullmatch(r"[0-9a-f]{64}", text) else None  # a torn write reads as a miss


def _memo_put(cache: Path, key: str, digest: str) -> None:
    """Best effort, without a temp file: a torn or concurrent write only reads back as a miss."""
    try:
        f = _memo_file(cache, key)
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(digest)
    except OSError:
        pass  # a read-only cache: hash again next time


def _hash_stream(f) -> str:
    h = hashlib.sha256()
    for block in iter(lambda: f.read(_CHUNK), b""):
        h.update(block)
    return h.hexdigest()


def _stat_key(p: Path) -> str:
    st = p.stat()
    return f"{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}"


def _file_digest(p: Path, cache: Path, gz: bool = False) -> str:
    key = f"file\0{int(gz)}\0{_stat_key(p)}"
    digest = _memo_get(cache, key)
    if digest is None:
        with (gzip.open(p, "rb") if gz else open(p, "rb")) as f:
            digest = _hash_stream(f)
        _memo_put(cache, key, digest)
    return digest


def _folder_digest(folder: Path, cache: Path) -> str:
    files = sorted(f for f in folder.rglob("*") if f.is_file())
    listing = hashlib.sha256("\n".join(f"{f.relative_to(folder).as_posix()}\0{_stat_key(f)}"
                                       for f in files).encode()).hexdigest()
    key = f"folder\0{folder.resolve()}\0{listing}"
    digest = _memo_get(cache, key)
    if digest is None:
        h = hashlib.sha256()
        for f in files:
            with open(f, "rb") as fh:
                h.update(f"{f.relative_to(folder).as_posix()}\0{_hash_stream(fh)}\n".encode())
        digest = h.hexdigest()
        _memo_put(cache, key, digest)
    return digest


def _path_digest(p: Path, cache: Path) -> str:
    if p.is_dir():
        return _folder_digest(p, cache)
    if not p.exists() and p.with_name(p.name + ".gz").is_file():  # the readers accept X.gz for X
        return _file_digest(p.with_name(p.name + ".gz"), cache, gz=True)
    return _file_digest(p, cache)


def fingerprint(paths, cache_dir=None) -> str:
    """The content hash of the files (or folders) a data source reads, in the order it lists them.

    Raises OSError when a path cannot be read."""
    cache = resolve_cache_dir(cache_dir)
    h = hashlib.sha256()
    for p in paths:
        h.update(_path_digest(Path(p).expanduser(), cache).encode() + b"\n")
    return h.hexdigest()[:FINGERPRINT_CHARS]


# ---------------------------------------------------------------- folder names
_ITEM_START = re.compile(r",(?=[+~]*[A-Za-z_][\w./@-]*=)")  # the "," before the next key=value


def full_folder_name(override_dirname: str, data_path=None, cache_dir=None) -> str:
    """A run's folder name before shortening: its overrides (Hydra's override_dirname, "/" spelled
    "_"; "run" if none) plus data.fingerprint=<hash> when data.path names an existing data set."""
    items = _ITEM_START.split(override_dirname) if override_dirname else []
    if data_path and Path(str(data_path)).expanduser().exists():
        items = sorted([*items, f"{FINGERPRINT_KEY}={fingerprint([data_path], cache_dir)}"])
    return ",".join(items).replace("/", "_") or "run"


def fit_name(name: str, limit: int = MAX_NAME_BYTES) -> str:
    """`name` if it fits in `limit` bytes, else a readable prefix (whole key=value items where
    possible) and "--" plus a hash of the whole name."""
    raw = name.encode()
    if len(raw) <= limit:
        return name
    tag = "--" + hashlib.sha256(raw).hexdigest()[:NAME_HASH_CHARS]
    prefix = raw[: limit - len(tag)].decode(errors="ignore")  # never half a character
    cut = prefix.rfind(",")
    if cut >= len(prefix) // 2:
        prefix = prefix[:cut]
    return prefix + tag


def folder_name(override_dirname: str, data_path=None, cache_dir=None) -> str:
    """The folder name of a run (Hydra resolver dropbn_dirname in configs/train.yaml)."""
    return fit_name(full_folder_name(override_dirname, data_path, cache_dir))
