"""What a dataset item can be and how items become a batch: `ClipError` for an unreadable clip,
`SkippedItem` standing in for it with `skip_bad`, `collate`, and the once-per-file accounting of
skipped and damaged files that the loaders and the trainer report."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch


class ClipError(RuntimeError):
    """A media file could not be turned into a clip; the message names the file and the cause."""


@dataclass(frozen=True)
class SkippedItem:
    """Stands in for an unreadable item when `skip_bad=True`; the collate function drops it."""

    index: int
    path: str
    reason: str


def collate(batch: Sequence[dict[str, Any] | SkippedItem]) -> dict[str, Any]:
    """Stack tensors, turn numbers/bools into tensors, keep strings as lists; drop skipped items
    into `skipped` [(path, reason)]. `batch_size` is the number of items kept (0: all skipped)."""
    kept = [b for b in batch if not isinstance(b, SkippedItem)]
    out: dict[str, Any] = {
        "skipped": [(b.path, b.reason) for b in batch if isinstance(b, SkippedItem)],
        "batch_size": len(kept),
    }
    for key in kept[0] if kept else ():
        values = [b[key] for b in kept]
        if isinstance(values[0], torch.Tensor):
            out[key] = torch.stack(values)
        elif isinstance(values[0], (bool, int, float)):
            out[key] = torch.tensor(values)
        else:
            out[key] = values
    return out


def once_per_file(entries: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The first (path, reason) of each path, in order: a file read in several epochs, views or
    processes counts once."""
    first: dict[str, str] = {}
    for path, reason in entries:
        first.setdefault(path, reason)
    return list(first.items())


def damaged_in(batch: dict[str, Any]) -> list[tuple[str, str]]:
    """(path, damage) of the items of a batch decoded with concealed damage."""
    return [(p, d) for p, d in zip(batch.get("path", ()), batch.get("damage", ()), strict=False) if d]


def worker_message(error: BaseException) -> str:
    """The message a worker's error (`ClipError`, ...) was raised with: torch re-raises it in the main
    process with the worker's whole traceback as its message, the original message on its last line."""
    text = str(error)
    marker = f"{type(error).__name__}: "
    if not text.startswith("Caught ") or marker not in text:
        return text
    return text.rsplit(marker, 1)[1].strip() + " (in a data-loader worker; MBT_DEBUG=1 shows its traceback)"
