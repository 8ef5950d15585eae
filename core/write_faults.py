"""Writes that fail because of the disk (full, over quota, read-only, an I/O error) as one clear
line naming the path and the free space, instead of a library's traceback.

The libraries word these faults differently: Python raises OSError with an errno, safetensors
a SafetensorError ending in "(os error 28)", torch.save a RuntimeError about an "unexpected
pos" in its zip writer. Checkpoints are written into a temporary directory and renamed into
place, so after such a fault the previous checkpoint is intact and the same command resumes
from it once space is freed.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path

from rlhfx.errors import UserError

#: The errnos of a disk that cannot take the write, with the words used in the message.
DISK_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only filesystem",
    errno.EIO: "input/output error",
    errno.EFBIG: "file too large for the filesystem",
}
_OS_ERROR = re.compile(r"os error (\d+)")
#: torch.save's zip writer reports a short write this way (the errno is lost).
_SHORT_WRITE = ("unexpected pos", "file write failed")


def _causes(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _disk_errno(exc: BaseException) -> tuple[int | None, str | None] | None:
    """(errno or None, file or None) when `exc` is a disk's refusal to write, else None."""
    for cause in _causes(exc):
        if isinstance(cause, OSError) and cause.errno in DISK_ERRNOS:
            return cause.errno, cause.filename
        text = str(cause)
        found = _OS_ERROR.search(text)
        if found and int(found.group(1)) in DISK_ERRNOS:
            return int(found.group(1)), None
        if isinstance(cause, RuntimeError) and any(s in text for s in _SHORT_WRITE):
            return None, None
    return None


def free_space(path: Path) -> str:
    """Free space of the filesystem holding `path` (or its nearest existing parent)."""
    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = float(shutil.disk_usage(probe).free)
    except OSError:
        return "unknown free space"
    if free < 1024:
        return f"{free:.0f} bytes free"
    for unit in ("KiB", "MiB", "GiB"):
        free /= 1024
        if free < 1024 or unit == "GiB":
            break
    return f"{free:.1f} {unit} free"


def write_failure(exc: BaseException, path: Path) -> UserError | None:
    """A one-line UserError when `exc` is a disk's refusal to write under `path`, else None."""
    found = _disk_errno(exc)
    if found is None:
        return None
    code, file = found
    where = Path(os.fsdecode(file)) if file else Path(path)
    what = DISK_ERRNOS.get(code, "no space left on the device") if code is not None else (
        "the write was cut short: no space left on the device?")
    return UserError(
        f"{where}: could not write ({what}; {free_space(where)}); the last checkpoint is "
        "intact: free some space and run the same command again to resume"
    )
