"""File primitives every layer uses: checksums, fsync, atomic replacement, exclusive locks.

One implementation each, so model files, map directories and cached exports all
write the same way: write a temporary file beside the target, fsync it, rename it over
the target (atomic on POSIX), fsync the directory; readers never see half a file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["exclusive_lock", "fsync_path", "replace_atomically", "sha256_file"]


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fsync_path(path: str | Path) -> None:
    """fsync a file or a directory by path (a directory's fsync makes renames in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_atomically(tmp: str | Path, target: str | Path) -> None:
    """fsync ``tmp``, rename it over ``target`` and fsync the directory."""
    fsync_path(tmp)
    os.replace(tmp, target)
    fsync_path(Path(target).parent)


@contextlib.contextmanager
def exclusive_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed) for the ``with`` block.

    Serialises writers across processes (two nodes exporting the same model, two
    builders of one cache entry); the lock is released when the process dies.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
