"""The one atomic file write (a crash or SIGKILL at any moment leaves the old file or the new one), and
the one check that a path given as input is a regular file."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO


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


def not_a_file(path: str | os.PathLike) -> str | None:
    """Why `path` cannot be read as a file ('no such file', 'is a directory', 'not a regular file
    (a FIFO)', ...), or None when it is a regular file. Opening a FIFO blocks until something
    writes to it, and a device never ends: both are refused before they are opened."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "no such file"
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory"
    kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a plain file")
    return f"not a regular file ({kind})"


class UnsafeYAMLError(ValueError):
    """A YAML document refused for its size once expanded (aliases), a recursive alias or its depth."""


MAX_YAML_NODES = 100_000
"""Most nodes a YAML document may expand to, its aliases followed: a config file of a few lines
can otherwise alias its way to billions of nodes ('billion laughs') and exhaust the memory."""


def load_yaml(text: str, source: str, loader: type | None = None) -> Any:
    """YAML (or JSON) `text` as Python objects with `yaml.SafeLoader` (no tags that build objects),
    refusing a document that its aliases expand beyond `MAX_YAML_NODES` nodes, a recursive alias,
    or nesting too deep (`UnsafeYAMLError`). Errors are `ValueError`s naming `source`. `loader`: a
    `yaml.SafeLoader` subclass (config files use `mbt.overrides.ConfigLoader`)."""
    import yaml

    loader = (loader or yaml.SafeLoader)(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, {}, set(), source)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        raise ValueError(f"{source}: not valid YAML/JSON: {str(e)[:500]}") from e
    except RecursionError as e:
        raise UnsafeYAMLError(f"{source}: YAML nested too deeply") from e
    finally:
        loader.dispose()


def _expanded_size(node: Any, sizes: dict[int, int], active: set[int], source: str) -> int:
    """Nodes under `node`, counting an aliased node each time it is used (memoised, so the count
    itself stays linear in the document)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in active:
        raise UnsafeYAMLError(f"{source}: a YAML alias refers to a node that contains it (recursive alias)")
    active.add(key)
    value = node.value
    children = [] if isinstance(value, str) else [c for item in value for c in (item if isinstance(item, tuple)
                                                                                  else (item,))]
    total = 1
    for child in children:
        total += _expanded_size(child, sizes, active, source)
        if total > MAX_YAML_NODES:
            raise UnsafeYAMLError(f"{source}: the YAML's aliases (*name) expand it to more than {MAX_YAML_NODES} "
                             "values; write the values out instead of repeating aliases of aliases")
    active.discard(key)
    sizes[key] = total
    return total
