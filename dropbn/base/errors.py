"""User-facing errors: each becomes one line on stderr and exit code 2."""
from __future__ import annotations

import os
import sys
from typing import NoReturn


class DropbnError(Exception):
    """An input problem the user can fix; the message is the whole story."""

    exit_code = 2


class ConfigError(DropbnError):
    def __init__(self, key: str, value, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r}: {allowed}")


class DataError(DropbnError):
    pass


class Interrupted(DropbnError):
    """SIGINT/SIGTERM stopped a run between two steps; exit code 128 + signal number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + int(signum)


def first_line(e: BaseException) -> str:
    """The first non-empty line of an error's message, or its type name if it has none."""
    for line in str(e).splitlines():
        if line.strip():
            return line.strip()
    return type(e).__name__


def fail(e: BaseException, *, end_process: bool = False) -> NoReturn:
    """The one error printer: `dropbn: error: <one line>` on stderr, exit with the error's code (2).
    end_process: end the process at once (os._exit), not by SystemExit, which a worker process of a
    parallel launcher would catch and outlive (dropbn/base/signals.py)."""
    code = getattr(e, "exit_code", 2)
    print(f"dropbn: error: {first_line(e)}", file=sys.stderr, flush=True)
    if end_process:
        sys.stdout.flush()
        os._exit(code)
    sys.exit(code)
