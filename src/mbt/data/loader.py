"""`build_loader`: a DataLoader over an `AVDataset` that is reproducible and never loses items silently.

- Each index travels with the epoch (`(epoch, index)`), so augmentation does not depend on the
  number of workers, and persistent workers (which keep their own copy of the dataset) see the epoch.
- Training order: the trainer's `StepBatchSampler`, seeded by `(seed, epoch)` (`AVLoader.set_epoch`
  sets the epoch), the same for any number of processes, class-balanced with `balanced=True`.
- `collate` stacks tensors, keeps strings as lists, and removes `SkippedItem`s: every batch has a
  `skipped` list of (path, reason), and `AVLoader.skipped` accumulates them for the end-of-run report
  (per item: evaluation counts the views it lost); `AVLoader.damaged` lists the files whose clips
  decoded with concealed damage (the items' `damage`), once per file.
- Distributed evaluation shards indices `rank::world` without padding, so no example is counted
  twice (shards may differ by one).
- A worker whose item cannot be read re-raises its `ClipError` in the main process with the
  library's one-line message (file, annotation line, cause) alone, the worker's traceback chained
  after it; a worker that dies raises RuntimeError in the main process rather than hanging.
"""

from __future__ import annotations

import os
import random
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from .batch import collate, damaged_in, once_per_file, worker_message
from .sampling import ShardSampler, StepBatchSampler, class_balanced_weights

__all__ = [
    "AVLoader",
    "ShardSampler",
    "StepBatchSampler",
    "build_loader",
    "class_balanced_weights",
    "collate",
    "damaged_in",
    "once_per_file",
    "worker_count",
    "worker_init",
    "worker_message",
]


WORKERS_PER_CPU = 4
"""Most loader workers per CPU (decoding waits on I/O at times, so a few per CPU can pay)."""


def worker_count(requested: int) -> int:
    """`requested` loader workers, capped to `WORKERS_PER_CPU` per CPU this process may use (with a
    warning): each worker is a process, and `num_workers: 100000` would try to start them all.
    (Below the cap, torch's DataLoader warns about more workers than CPUs itself.)"""
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 0:
        raise ValueError(f"num_workers: must be an integer >= 0, got {requested!r:.40}")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = WORKERS_PER_CPU * cpus
    if requested > limit:
        warnings.warn(f"num_workers={requested} is more than {WORKERS_PER_CPU} per CPU of this machine ({cpus} "
                      f"CPUs): using {limit}", stacklevel=3)
        return limit
    return requested


def worker_init(worker_id: int) -> None:
    """Every loader's workers (`build_loader`, the trainer's, the shard stream's): seed Python and
    NumPy from the worker's torch seed (itself derived from the loader's seed), and one intra-op
    thread per worker, the workers being the parallelism. (Items draw from their own torch
    generators, seeded by (seed, epoch, index), not from these.)"""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    torch.set_num_threads(1)


class _WithEpoch(Sampler[tuple[int, int]]):
    """Yields (epoch, index) so the dataset's randomness follows the epoch inside persistent workers."""

    def __init__(self, sampler: Sampler[int]) -> None:
        self.sampler, self.epoch = sampler, 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return ((epoch, i) for i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]


class AVLoader:
    """Iterates batches of a DataLoader, counting skipped items and dropping batches left empty
    (kept with `keep_empty`: the trainer's micro-batches keep their place in the step, so every
    process runs the same steps)."""

    def __init__(self, loader: DataLoader, sampler: _WithEpoch | StepBatchSampler) -> None:
        self.loader, self.sampler = loader, sampler
        self.keep_empty = False
        """Yield batches whose every item was skipped too (`batch_size` 0)."""
        self.skipped: list[tuple[str, str]] = []
        """(path, reason) of every item skipped so far (unreadable, with skip_bad)."""
        self.damaged: list[tuple[str, str]] = []
        """(path, damage) of every file read so far with concealed damage, once each."""

    @property
    def dataset(self) -> Dataset:
        return self.loader.dataset

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle (seed, epoch) and draw the augmentation of this epoch; call before iterating."""
        self.sampler.epoch = epoch

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        try:
            yield from self._batches()
        except RuntimeError as e:  # a ClipError, or a remote read that failed (mbt.data.shards.remote)
            message = worker_message(e)
            if message == str(e):
                raise
            raise type(e)(message) from e

    def _batches(self) -> Iterator[dict[str, Any]]:
        for batch in self.loader:
            self.skipped.extend(batch["skipped"])
            if any(batch.get("damage", ())):
                self.damaged = once_per_file([*self.damaged, *damaged_in(batch)])
            if batch["batch_size"] or self.keep_empty:
                yield batch


def build_loader(
    dataset: Dataset,
    batch_size: int,
    train: bool,
    num_workers: int = 0,
    distributed: bool = False,
    seed: int = 0,
    drop_last: bool | None = None,
    balanced: bool = False,
    prefetch_factor: int | None = None,
    grad_accum_steps: int = 1,
    pin_memory: bool | None = None,
) -> AVLoader:
    """A loader over `dataset`, an `AVDataset` (or any dataset taking `(epoch, index)` keys), of
    `batch_size` items per batch and process.

    `train`: the training order (`StepBatchSampler`: seeded by seed and epoch, steps of
    `batch_size x processes x grad_accum_steps` items); the last partial step is dropped unless
    `drop_last=False`. `distributed`: shard over `torch.distributed` ranks (must be initialised).
    `balanced`: class-balanced sampling with replacement (train only; the dataset must be an
    AVDataset with one view per item). `pin_memory`: default, when CUDA is available.
    """
    n = len(dataset)  # type: ignore[arg-type]
    if distributed:
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("distributed=True needs torch.distributed to be initialised")
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = 0, 1
    num_workers = worker_count(num_workers)
    workers = num_workers > 0
    common: dict[str, Any] = {
        "num_workers": num_workers, "collate_fn": collate,
        "pin_memory": torch.cuda.is_available() if pin_memory is None else pin_memory,
        "worker_init_fn": worker_init if workers else None, "generator": torch.Generator().manual_seed(seed),
        "persistent_workers": workers, "prefetch_factor": (prefetch_factor or 2) if workers else None,
    }
    if not train:
        if balanced:
            raise ValueError("balanced sampling is for training on an AVDataset (one view per item)")
        tagged = _WithEpoch(ShardSampler(n, rank, world))
        return AVLoader(DataLoader(dataset, batch_size=batch_size, sampler=tagged, **common), tagged)
    weights = None
    if balanced:
        annotations = getattr(dataset, "annotations", None)
        if annotations is None or len(annotations.items) != n:
            raise ValueError("balanced sampling is for training on an AVDataset (one view per item)")
        weights = class_balanced_weights(annotations)
    step = batch_size * world * grad_accum_steps
    drop_last = True if drop_last is None else drop_last
    sampler = StepBatchSampler(n, step, n // step if drop_last else -(-n // step), rank=rank, world_size=world,
                               grad_accum_steps=grad_accum_steps, seed=seed, weights=weights, drop_last=drop_last)
    return AVLoader(DataLoader(dataset, batch_sampler=sampler, **common), sampler)
