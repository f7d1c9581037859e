"""What a run is, torch-free: which config keys identify it, the content fingerprint of its data,
and a folder name that always fits.

A run's identity is its recorded config (`recorded_config`: the resolved config
plus the data's content fingerprint) less the keys that say where or how it runs
(NON_RESULT_KEYS). A folder is reused only by a run of the same identity
(`differing_keys`, `IdentityError`).

A data set takes part in a run's identity by what it holds, not by where it lives
or how its path is spelled: `fingerprint(paths, cache_dir)` hashes the bytes of
the files a source reads (a folder: every file with its relative path). Hashing is
memoised per file (or folder listing) by (real path, size, mtime) in the cache
folder, so each version of a data set is read once; a read-only cache only loses
the memo. The recorded config of a run holds the result as `data.fingerprint`
(`recorded_config`).

Folder names come from the overrides (Hydra's override_dirname); `folder_name`
adds the data's fingerprint when data.path is set, so a sweep over data.path
makes one folder per data set, and shortens a name too long for a file system
to a readable prefix plus a hash of the whole name: the same command always maps
to the same folder.
"""
from __future__ import annotations

import copy
import gzip
import hashlib
import json
import math
import os
import re
from pathlib import Path

from ..base.errors import DropbnError

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


# ---------------------------------------------------------------- which config keys identify a run
# Keys that say where or how a run executes, not what it computes. Folder names, resume and report
# grouping all start from this one list; where a use differs, the difference is named below, once.
# data.path says where the data is, not what it holds: the data takes part by its content
# fingerprint, data.fingerprint (dropbn.record.identity), which the recorded config adds and folder names show.
# train.eval_batch_size: evaluation is in eval mode (dropout off, BN running statistics; the diagnostics
# pool their sums over batches), so the batch size changes only float rounding, like train.threads.
NON_RESULT_KEYS = ("name", "out_root", "device", "train.force", "train.progress", "train.threads",
                   "train.eval_batch_size", "train.eval_test", "train.diagnostics", "train.tensorboard", "train.objective",
                   "train.claim_timeout", "data.root", "data.cache_dir", "data.download", "data.path", "study",
                   "report.claims")
# Machine-local locations: recorded as null, so that run records carry no absolute paths of one machine.
LOCAL_PATHS = ("data.root", "data.cache_dir")
# Command-line choices that are not config values (a preset, a launcher): only folder names see them.
LAUNCH_KEYS = ("exp", "+exp", "hydra/launcher", "hydra.launcher.n_jobs")
# The seeds change results, so folder names and the identity keep them; the report pools runs over
# them (replicates: the seed of the run, and that of its training subset and validation split).
POOLED_IN_REPORT = ("seed", "data.split_seed")

FOLDER_NAME_EXCLUDED = (*LAUNCH_KEYS, *NON_RESULT_KEYS)  # = hydra.job...exclude_keys in configs/train.yaml
REPORT_IGNORED = (*POOLED_IN_REPORT, *NON_RESULT_KEYS)


def among(key: str, keys) -> bool:
    """Whether dotted `key` is one of `keys` or lies under one of them (a subtree such as `study`)."""
    return any(key == k or key.startswith(k + ".") for k in keys)


def flatten(d: dict, prefix: str = "") -> dict:
    """{"optim": {"lr": 0.1}} -> {"optim.lr": 0.1} (lists stay values)."""
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _set(config: dict, key: str, value) -> None:
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value


def recorded_config(config: dict, fingerprint: str) -> dict:
    """What a run folder records as its config (summary.json, checkpoint.pt, .hydra/config.yaml): the
    resolved config with the data's content fingerprint as data.fingerprint and LOCAL_PATHS as null."""
    out = copy.deepcopy(config)
    _set(out, FINGERPRINT_KEY, fingerprint)
    for key in LOCAL_PATHS:
        _set(out, key, None)
    return out


def result_config(config: dict) -> dict:
    """A run's identity: its (recorded) config as dotted keys, less NON_RESULT_KEYS."""
    return {k: v for k, v in flatten(config).items() if not among(k, NON_RESULT_KEYS)}


def differing_keys(saved: dict, current: dict) -> list[str]:
    """The identity keys whose values differ. A key that only one side has is not compared: a
    record written before that key existed (or after it was dropped) still matches."""
    a, b = result_config(saved), result_config(current)
    return sorted(k for k in a.keys() & b.keys() if a[k] != b[k])


def same_config(saved: dict, current: dict) -> bool:
    """Whether a recorded config and the current one describe the same run (NON_RESULT_KEYS aside)."""
    return not differing_keys(saved, current)


class IdentityError(DropbnError):
    """A run folder holds a run of another config."""

    def __init__(self, path, saved: dict, current: dict):
        keys = differing_keys(saved, current)
        a, b = result_config(saved), result_config(current)
        shown = ", ".join(f"{k}={_show(a[k])} (now {_show(b[k])})" for k in keys[:5])
        more = f" and {len(keys) - 5} more" if len(keys) > 5 else ""
        super().__init__(f"{path} holds a run of another config: {shown}{more}; train.force=true "
                         f"replaces it, or choose another folder (another name=..., or hydra.run.dir=...)")
        self.keys = keys


def _show(v) -> str:
    return json.dumps(v, default=str) if not isinstance(v, str) else v


def fmt_value(v) -> str:
    """A config value as text, as run records and reports print it: lists as [a,b], None as null,
    floats as repr-short."""
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(fmt_value(x) for x in v) + "]"
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)
