"""The one atomic file write: a crash or SIGKILL at any moment leaves the old file or the new one."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: str | os.PathLike, data: bytes | Callable[[BinaryIO], None], *,
                 backup: str | os.PathLike | None = None) -> None:
    """Write `data` (bytes, or a function writing to the open binary file) to `path`: a temporary
    file in the same folder, flushed and fsynced, renamed over `path`, then the folder fsynced.
    With `backup`, an existing `path` is first renamed to `backup`, so the last good file is kept.
    The temporary file is removed when writing fails (e.g. a full disk)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if backup is not None and path.exists():
            os.replace(path, backup)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
