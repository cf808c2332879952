"""Errors that ddadlib raises for bad input.

The command line prints a :class:`DataError` as one line (no traceback) and exits with status 2,
so every message must say which file is at fault and what is wrong with it.
"""

import errno
import shutil
from pathlib import Path


class DataError(Exception):
    """Bad or unusable input data: the message names the file and the problem."""


class TrainingError(RuntimeError):
    """Training cannot go on (for example the loss became NaN); the message says where and what
    to try, and the last checkpoint is kept."""


class ConfigError(ValueError):
    """An unusable setting (an unknown backbone, a device that is not there, ...)."""


class DiskFullError(OSError):
    """A write failed because the disk is full; the message names the file, its folder and the
    bytes needed (when known) or written before the disk filled."""

    def __init__(self, path: object, needed: int | None = None, written: int | None = None):
        super().__init__(errno.ENOSPC, "No space left on device", str(path))
        self.needed = needed
        self.written = written

    def __str__(self) -> str:
        return disk_full_message(self)


def disk_full_message(exc: OSError) -> str:
    """One line for a full disk (``errno.ENOSPC``): the folder, the file, the bytes needed or
    written, and the space that is free."""
    if not exc.filename:
        return "no space left on device (free some space, or write to another disk)"
    path = Path(exc.filename)
    folder = path.parent
    needed, written = getattr(exc, "needed", None), getattr(exc, "written", None)
    if needed is not None:
        amount = f"{needed:,} bytes needed"
    elif written:
        amount = f"more than {written:,} bytes needed"
    else:
        amount = "bytes needed unknown"
    existing = next((p for p in (folder, *folder.parents) if p.exists()), folder)
    try:
        free = f", {shutil.disk_usage(existing).free:,} free"
    except OSError:
        free = ""
    return (
        f"no space left on device in {folder} (writing {path.name}: {amount}{free}); "
        "free some space, or write to another disk"
    )
