"""Crash-safe file replacement and the lock that serialises writers of one file."""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (workers starting together, two rotations)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_temp(path: Path, data: bytes, *, like: Path | None = None) -> Path:
    """Write ``data`` to a new file next to ``path``, fsync'd, with ``like``'s permissions."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    temp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if like is not None:
            os.chmod(temp, stat.S_IMODE(os.stat(like).st_mode))
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp


def replace(temp: Path, path: Path, *, renamed: Callable[[], None] = lambda: None) -> None:
    """Atomically put ``temp`` in place of ``path`` and make the rename durable; ``renamed`` is
    called as soon as ``path`` holds ``temp``'s content (a failure after it, in the directory's
    fsync, leaves the new content in place)."""
    os.replace(temp, path)
    renamed()
    fsync_dir(path.parent)


def atomic_write(path: Path, data: bytes, *, checkpoint: Callable[[str], None] = lambda step: None) -> None:
    temp = write_temp(path, data, like=path if path.exists() else None)
    try:
        checkpoint("written")
        replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
