"""User-facing errors: each becomes one line on stderr and exit code 2."""


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
