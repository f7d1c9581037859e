"""The run lease: one process at a time trains a run folder, so several processes (or a SLURM
array) can work through the same sweep; torch-free (`dropbn status` reads leases too).

Users and messages call a lease a *claim*: its file is `claim.<n>.json` in the run folder, and its
timeout is `train.claim_timeout`. In code it is a lease, apart from the report's scientific claims.
A lease (claim) is a file `claim.<n>.json` in the run folder: host, pid, start time and the
owner's claim timeout. Its modification time is the heartbeat, refreshed by a daemon
thread every min(30 s, timeout / 4) through the file's own descriptor (so a process
that lost its claim never touches another's). The claim of a folder is its
highest-numbered file:

    held      not released, and its owner is alive: on the same machine its pid exists,
              on any machine its heartbeat is at most `timeout` seconds old
    dead      released, or its owner is gone (pid gone, or heartbeat older than `timeout`)

`acquire` raises `Busy` at a held claim. Otherwise it creates claim number n + 1
(n: the highest existing number, 0 if none) with an exclusive create (a complete temp
file hard-linked to its name: the link fails if the name exists), so of several
processes that judged claim n dead exactly one wins n + 1; a process that created a
number below another's (it looked long ago) backs off. The winner then deletes the
lower-numbered files. The highest file is never deleted, only marked released, so
numbers only grow and a late process can never revive an old number unnoticed.

Clocks: a heartbeat is the file system's clock (the server's on NFS), its age is
measured with the reader's clock; keep machines in sync (NTP) and `timeout` well above
any skew. Use the same `train.claim_timeout` for every process of a sweep.
"""
from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from .layout import atomic_write_json

log = logging.getLogger("dropbn")

_CLAIM_RE = re.compile(r"^claim\.(\d+)\.json$")
HEARTBEAT_MAX_S = 30.0   # the heartbeat interval: min(this, timeout / 4)
_HELD: set[str] = set()  # tokens of the claims this process holds (a pid can be reused after a restart)


def claim_name(number: int) -> str:
    return f"claim.{number}.json"


def _read_first(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _machine() -> str:
    """Which kernel and pid namespace this process lives in (Linux; '' elsewhere): pids of another
    boot or container are not comparable even under the same host name."""
    try:
        ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        ns = ""
    return f"{_read_first('/proc/sys/kernel/random/boot_id')}/{ns}" if ns else ""


HOST = socket.gethostname()
MACHINE = _machine()


def heartbeat_interval(timeout: float) -> float:
    return min(HEARTBEAT_MAX_S, timeout / 4)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except (OSError, OverflowError, ValueError):
        return False
    return True


# ---------------------------------------------------------------- reading claims
@dataclass(frozen=True)
class LeaseInfo:
    """What one claim file says."""

    path: Path
    number: int
    host: str
    pid: int
    machine: str
    token: str
    started: float            # unix time the owner claimed the run
    heartbeat: float          # unix time of the last heartbeat (the file's mtime)
    timeout: float | None     # the owner's train.claim_timeout
    released: float | None    # unix time the owner let go (None: not released)

    @property
    def owner(self) -> str:
        return f"{self.host}:{self.pid}"

    def age(self, now: float | None = None) -> float:
        """Seconds since the last heartbeat."""
        return max(0.0, (time.time() if now is None else now) - self.heartbeat)

    def same_machine(self) -> bool:
        return self.host == HOST and self.machine == MACHINE

    def dead_because(self, timeout: float | None = None, now: float | None = None) -> str | None:
        """Why the claim is dead (released, owner gone, heartbeat too old), or None if it is held.
        `timeout`: the reader's claim timeout; default the owner's own."""
        if self.released is not None:
            return "released"
        if self.same_machine():
            if self.pid == os.getpid() and self.token not in _HELD:
                return f"left by an earlier process with this pid ({self.owner})"
            if not _pid_alive(self.pid):
                return f"its process {self.owner} is gone"
        limit = self.timeout if timeout is None else timeout
        if limit is not None and self.age(now) > limit:
            return f"its heartbeat is {self.age(now):.0f}s old (> {limit:g}s)"
        return None

    def describe(self, now: float | None = None) -> str:
        return f"claimed by {self.owner} (heartbeat {self.age(now):.0f}s ago)"


def _numbers(folder: Path) -> list[int]:
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted(int(m.group(1)) for m in map(_CLAIM_RE.match, names) if m)


def read_lease(path: Path) -> LeaseInfo | None:
    """A claim file's content; None if it vanished. An unreadable one reads as an unknown owner
    (judged by its heartbeat alone)."""
    try:
        st = os.stat(path)
        text = Path(path).read_text()
    except OSError:
        return None
    try:
        d = json.loads(text)
        if not isinstance(d, dict):
            raise ValueError
    except ValueError:
        d = {}
    m = _CLAIM_RE.match(Path(path).name)

    def num(key, kind=float):
        try:
            return kind(d[key]) if d.get(key) is not None else None
        except (TypeError, ValueError):
            return None

    return LeaseInfo(path=Path(path), number=int(m.group(1)) if m else 0, host=str(d.get("host", "?")),
                     pid=num("pid", int) or 0, machine=str(d.get("machine", "")), token=str(d.get("token", "")),
                     started=num("started") or st.st_mtime, heartbeat=st.st_mtime,
                     timeout=num("timeout"), released=num("released"))


def current(folder) -> LeaseInfo | None:
    """The claim of a run folder: its highest-numbered claim file, or None if it has none."""
    folder = Path(folder)
    for _ in range(5):  # a file may vanish between listing and reading (a takeover cleans up)
        numbers = _numbers(folder)
        if not numbers:
            return None
        info = read_lease(folder / claim_name(numbers[-1]))
        if info is not None:
            return info
    return None


def has_lease(folder) -> bool:
    return bool(_numbers(Path(folder)))


# ---------------------------------------------------------------- holding a claim
class Busy(Exception):
    """The run folder is claimed by a live process."""

    def __init__(self, info: LeaseInfo):
        self.info = info
        super().__init__(info.describe())


class Lease:
    """A claim this process holds: a heartbeat thread keeps it alive until `release()`
    (or the end of a `with` block, whatever the exit path)."""

    def __init__(self, folder: Path, number: int, fd: int, record: dict):
        self.folder, self.number, self.record = folder, number, record
        self.path = folder / claim_name(number)
        self.timeout = float(record["timeout"])
        self._fd = fd
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost: LeaseInfo | None = None  # the claim that replaced ours, if one did
        _HELD.add(record["token"])

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._beat, name=f"dropbn-lease-{self.folder.name}",
                                        daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(heartbeat_interval(self.timeout)):
            try:  # through our own descriptor: our file, even if another process replaced it
                os.utime(self._fd if os.utime in os.supports_fd else self.path)
            except OSError as e:
                log.warning(f"claim heartbeat failed ({e}): {self.path}")
            self._check_lost()

    def _check_lost(self) -> bool:
        if self.lost is None:
            cur = current(self.folder)
            if cur is not None and cur.number > self.number:
                self.lost = cur
                log.warning(f"the claim on {self.folder} was taken over by {cur.owner} (our heartbeat "
                            f"looked dead to it): two processes now write this run")
        return self.lost is not None

    def _close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        os.close(self._fd)
        self._fd = -1
        _HELD.discard(self.record["token"])

    def release(self) -> None:
        """Stop the heartbeat and mark the claim released (unless another process took it over)."""
        if self._fd < 0:
            return
        try:
            if not self._check_lost():
                atomic_write_json({**self.record, "released": time.time()}, self.path)
        finally:
            self._close()

    def _withdraw(self) -> None:
        """Remove a claim created too late (a higher number exists): it was never ours."""
        self._close()
        self.path.unlink(missing_ok=True)


def _create(folder: Path, number: int, record: dict) -> int | None:
    """Create claim file `number` exclusively, complete; its open descriptor, or None if the name exists."""
    path = folder / claim_name(number)
    data = (json.dumps(record, indent=2) + "\n").encode()
    tmp = folder / f".{path.name}.{record['token'][:8]}.tmp"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
        os.link(tmp, path)  # exclusive: fails if the name exists (also on NFS)
        return fd
    except FileExistsError:
        os.close(fd)
        return None
    except OSError:  # no hard links on this file system: an exclusive create, then the content
        os.close(fd)
        return _create_in_place(path, data)
    except BaseException:
        os.close(fd)
        raise
    finally:
        tmp.unlink(missing_ok=True)


def _create_in_place(path: Path, data: bytes) -> int | None:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return None
    try:
        os.write(fd, data)
        os.fsync(fd)
        return fd
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise


def acquire(folder, timeout: float) -> Lease:
    """Take the lease of run folder `folder` for this process, taking over a dead claim; raise `Busy` if a
    live process holds it. `timeout`: seconds without a heartbeat after which a claim is dead
    (train.claim_timeout). Use the result as a context manager: it releases on every exit."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for _ in range(20):
        cur = current(folder)
        why = None
        if cur is not None:
            why = cur.dead_because(timeout)
            if why is None:
                raise Busy(cur)
        number = (cur.number if cur is not None else 0) + 1
        record = {"host": HOST, "pid": os.getpid(), "machine": MACHINE, "token": uuid.uuid4().hex,
                  "started": time.time(), "timeout": float(timeout)}
        fd = _create(folder, number, record)
        if fd is None:
            continue  # another process created that number first: look again
        claim = Lease(folder, number, fd, record)
        if max(_numbers(folder), default=number) > number:  # we looked long ago: someone is past us
            claim._withdraw()
            continue
        for n in _numbers(folder):
            if n < number:
                (folder / claim_name(n)).unlink(missing_ok=True)
        if why is not None and why != "released":
            log.warning(f"taking over the claim of {cur.owner} on {folder}: {why}")
        claim.start_heartbeat()
        return claim
    cur = current(folder)
    if cur is not None:
        raise Busy(cur)
    raise OSError(f"could not claim {folder}: its claim files keep changing")
