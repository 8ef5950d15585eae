"""One run per output directory, held by an OS lock for as long as the run's process lives.

Two runs writing one directory (a job submitted twice, a scheduler's requeue) would interleave
their metrics and overwrite each other's checkpoints. `rlhfx run` therefore takes an exclusive
`fcntl.flock` on `<run dir>/.run.lock` and keeps it until it exits. The kernel drops the lock
when the process ends in any way, `kill -9` included, so nothing stale is ever left to clean
up. The file names the holder (pid, host, start time) for the refusal message. Reading a run
(`rlhfx report`, `eval`, `chat`) takes no lock.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from rlhfx.errors import UserError

LOCK_FILE = ".run.lock"


class RunLock:
    """The held lock of one run directory; `release()` (or process exit) lets it go."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock at once, or raise a UserError naming the run that holds it."""
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(_read_holder(fd))
            os.close(fd)
            raise UserError(
                f"{self.path.parent}: another run is using this directory ({holder}); wait "
                "for it to end, stop it, or set another --output-dir"
            ) from None
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace") or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _describe(info: dict[str, Any]) -> str:
    if not info:
        return "its details are not written yet"
    return (f"pid {info.get('pid', '?')} on {info.get('host', '?')}, started "
            f"{info.get('started', '?')}")
