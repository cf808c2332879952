"""Atomic file writes: readers see the old file or the whole new one, never a part.

Every checkpoint, result and dataset file the library writes goes through :func:`atomic_write`.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ddadlib.errors import DiskFullError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _replace(tmp: str, path: Path) -> None:
    # mkstemp creates files readable by the owner only; give them the usual permissions.
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


def atomic_write(path: Path, write: Callable[[BinaryIO], None], size: int | None = None) -> None:
    """Write through ``write`` into a temporary file beside ``path``, then rename it into place,
    so that readers see the old file or the whole new one, never a part.

    A full disk raises :class:`~ddadlib.errors.DiskFullError` naming ``path`` and the bytes
    needed (``size``, when the caller knows it) or written before the disk filled.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            try:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            except OSError as exc:
                written = os.fstat(fh.fileno()).st_size
                # numpy's array.tofile reports a short write without an errno: then the disk
                # counts as full when what was left to write does not fit in the free space.
                if exc.errno != errno.ENOSPC and not (
                    exc.errno is None
                    and size is not None
                    and shutil.disk_usage(path.parent).free < size - written
                ):
                    raise
                raise DiskFullError(path, needed=size, written=written) from exc
        _replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def stale_temp_files(folder: Path, names: Iterable[str]) -> list[Path]:
    """Temporary files that a killed :func:`atomic_write` left in ``folder`` for the files
    ``names`` (``.NAME.<8 random characters>.tmp``, as ``tempfile.mkstemp`` names them); delete
    them only while no other process can be writing there."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    alternatives = "|".join(re.escape(n) for n in names)
    pattern = re.compile(rf"\.({alternatives})\.[a-z0-9_]{{8}}\.tmp")
    return sorted(p for p in folder.iterdir() if pattern.fullmatch(p.name) and p.is_file())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(path, lambda fh: fh.write(data), size=len(data))


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode())


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """Save an array as ``.npy``, atomically."""
    atomic_write(path, lambda fh: np.save(fh, array), size=int(array.nbytes) + 128)
