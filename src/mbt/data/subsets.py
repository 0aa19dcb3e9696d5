"""Reproducible subsets of annotations: a validation split held out of the training set, and
a class-balanced subset of a large multi-label set (AudioSet-500K).

Both decide per video from a seeded hash of its id, so the choice of a video does not depend
on the order of the rows or on which other videos are present: the same ids are held out of
a re-downloaded (smaller) AudioSet, and `mbt eval` finds the same split again.
"""

from __future__ import annotations

import dataclasses
import hashlib

from .annotations import Annotations, Item


def id_fraction(video_id: str, seed: int) -> float:
    """A uniform number in [0, 1) fixed by the video id and the seed."""
    digest = hashlib.sha256(f"{seed}:{video_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def hold_out(annotations: Annotations, fraction: float, seed: int) -> tuple[Annotations, Annotations]:
    """(kept, held out): the videos whose `id_fraction` is below `fraction` are held out (all
    rows of a video go to the same side)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction: must be in [0, 1), got {fraction}")
    kept: list[Item] = []
    held: list[Item] = []
    for item in annotations.items:
        (held if id_fraction(item.video_id, seed) < fraction else kept).append(item)
    return dataclasses.replace(annotations, items=kept), dataclasses.replace(annotations, items=held)


def _capped(items: list[Item], num_classes: int, cap: int) -> list[Item]:
    """Items in the given order, each kept while one of its classes has fewer than `cap` kept."""
    counts = [0] * num_classes
    kept = []
    for item in items:
        if any(counts[k] < cap for k in item.labels):
            kept.append(item)
            for k in item.labels:
                counts[k] += 1
    return kept


def balanced_subset(annotations: Annotations, size: int, seed: int) -> tuple[Annotations, int]:
    """(subset, cap): about `size` items, as class-balanced as a greedy cap allows.

    Items are visited in the order of their seeded id hash; an item is kept while one of its
    labels has fewer than `cap` kept items. `cap` is the smallest for which at least `size`
    items are kept (bisection), so every class with at most `cap` items keeps all of them
    and the frequent classes (Music, Speech) are cut to what co-occurs with rarer ones.
    When `size` is at least the number of items, all are kept."""
    if size < 1:
        raise ValueError(f"size: must be >= 1, got {size}")
    items = sorted(annotations.items, key=lambda it: (id_fraction(it.video_id, seed), it.video_id))
    most = max(annotations.label_counts(), default=0)
    if size >= len(items) or most == 0:
        return dataclasses.replace(annotations, items=items), most
    lo, hi = 1, most
    while lo < hi:
        mid = (lo + hi) // 2
        if len(_capped(items, annotations.num_classes, mid)) >= size:
            hi = mid
        else:
            lo = mid + 1
    return dataclasses.replace(annotations, items=_capped(items, annotations.num_classes, lo)), lo
