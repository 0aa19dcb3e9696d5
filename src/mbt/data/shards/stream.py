"""`ShardStream`: shards read whole and in sequence (the object-storage access pattern), shuffled per epoch,
split over ranks and loader workers; `build_stream_loader` wraps it in a loader."""

from __future__ import annotations

import itertools
import math
import os
import tarfile
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..batch import ClipError, SkippedItem, collate
from ..config import DataConfig
from ..dataset import MODALITIES, Split, check_modalities, item_seed
from ..decode import DecodeError
from ..loader import AVLoader, worker_init
from .dataset import SampleDecoder
from .format import ShardError, sample_meta
from .io import ShardSet, open_shards, open_stream
from .remote import ReadConfig


def _shard_rng(seed: int, *ids: int) -> np.random.Generator:
    return np.random.default_rng([seed, *ids])


def _split_units(counts: list[list[int]], unit: int, equalize: bool) -> list[list[int]]:
    """Per rank and worker: how many units (samples, or batches of `unit`) to yield. With
    `equalize` every rank yields the same number of whole units (the smallest rank's), the
    surplus taken from the workers with the most; otherwise every sample, the last unit partial."""
    if not equalize:
        return [[math.ceil(c / unit) for c in rank] for rank in counts]
    units = [[c // unit for c in rank] for rank in counts]
    target = min(sum(rank) for rank in units)
    for rank in units:
        while sum(rank) > target:
            w = max(range(len(rank)), key=lambda i: (rank[i], i))
            rank[w] -= 1
    return units


class ShardStream(IterableDataset):
    """Items of a shard folder read shard by shard (local disk or fsspec URLs).

    Each epoch (`set_epoch`) the shard order is a permutation seeded by (seed, epoch) for
    training (fixed otherwise); rank `r` of `world_size` takes shards `r::world_size` of it and
    loader worker `w` of `num_workers` takes `w::num_workers` of those. Training samples pass
    through a shuffle buffer of `shuffle_buffer` raw samples (seeded by seed, epoch, rank,
    worker). Item randomness is seeded by (seed, epoch, index) as in AVDataset, with `index` the
    item's position in the annotations (times the views, plus the view).

    Counts: evaluation yields every view exactly once over all ranks and workers. Training
    yields, on every rank, the same number of whole units (samples, or batches of `batch_size`
    when the stream batches; the smallest rank's): DDP needs equal step counts, and shards hold
    unequal numbers. The rest (`dropped_in_epoch`) changes from epoch to epoch with the shard
    assignment. Set `batch_size` and `num_workers` through `build_stream_loader`.
    """

    def __init__(
        self,
        shards: str | os.PathLike[str] | ShardSet,
        cfg: DataConfig,
        split: Split,
        modalities: Sequence[str] = MODALITIES,
        seed: int = 0,
        skip_bad: bool = False,
        shuffle_buffer: int = 256,
        rank: int | None = None,
        world_size: int | None = None,
        read: ReadConfig | None = None,
    ) -> None:
        check_modalities(modalities)
        self.shards = open_shards(shards, read)
        self.shards.check(cfg, split, modalities)
        if rank is None or world_size is None:
            initialised = dist.is_available() and dist.is_initialized()
            rank = dist.get_rank() if initialised else 0
            world_size = dist.get_world_size() if initialised else 1
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        self.cfg, self.split, self.modalities = cfg, split, tuple(modalities)
        self.seed, self.skip_bad = seed, skip_bad
        self.train = split == "train"
        self.shuffle_buffer = shuffle_buffer if self.train else 0
        self.rank, self.world_size = rank, world_size
        self.views = self.shards.views * cfg.num_test_crops if split == "test" else 1
        c = self.shards.manifest["classes"]
        self.num_classes = len(c["names"])
        self.single_label = not c["multi_label"] and not c["class_splits"]
        self.epoch = 0
        self.batch_size: int | None = None
        """Batch inside the stream (each worker yields collated batches); None: single items."""
        self.num_workers = 0
        """Loader workers the shards are split over (0: the main process reads them all)."""
        self.start_unit = 0
        """Units of the current epoch this rank has already consumed (resuming a run): they
        are passed over without decoding. Training only."""
        self._decode = SampleDecoder(self.shards, cfg, split, modalities)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    # ------------------------------------------------------------------ assignment
    def shard_order(self, epoch: int) -> list[int]:
        n = len(self.shards.urls)
        return _shard_rng(self.seed, epoch).permutation(n).tolist() if self.train else list(range(n))

    def assignment(self, epoch: int) -> list[list[list[int]]]:
        """Shard numbers per rank and worker for `epoch`."""
        order = self.shard_order(epoch)
        workers = max(self.num_workers, 1)
        return [[order[r::self.world_size][w::workers] for w in range(workers)] for r in range(self.world_size)]

    def _units(self, epoch: int) -> list[list[int]]:
        counts = self.shards.counts
        per = [[sum(counts[s] for s in worker) * self.views for worker in rank] for rank in self.assignment(epoch)]
        return _split_units(per, self.batch_size or 1, equalize=self.train)

    def __len__(self) -> int:
        """Units (items, or batches) this rank yields in the current epoch."""
        return sum(self._units(self.epoch)[self.rank])

    def worker_starts(self, epoch: int, start: int) -> tuple[list[int], int]:
        """Where this rank's unit `start` of `epoch` lies: per loader worker, how many of its
        units come before it, and the worker it comes from. A DataLoader takes units from its
        workers in turn, passing over workers that have run out."""
        units = self._units(epoch)[self.rank]
        if not 0 <= start <= sum(units):
            raise ValueError(f"start unit {start} outside the epoch's {sum(units)} units")
        taken, w = [0] * len(units), 0
        for _ in range(start):
            while taken[w] == units[w]:
                w = (w + 1) % len(units)
            taken[w] += 1
            w = (w + 1) % len(units)
        return taken, w

    def dropped_in_epoch(self, epoch: int) -> int:
        """Training items not yielded by any rank in `epoch` (to equalise ranks into whole units)."""
        if not self.train:
            return 0
        kept = sum(map(sum, self._units(epoch))) * (self.batch_size or 1)
        return self.shards.num_samples * self.views - kept

    # ------------------------------------------------------------------ reading
    def _raw(self, shard: int) -> Iterator[tuple[str, dict[str, bytes]]]:
        """(where, members) of each sample of a shard, read sequentially."""
        url, expected = self.shards.urls[shard], self.shards.counts[shard]
        count, key, members = 0, None, {}
        try:
            with open_stream(url, self.shards.read) as f, tarfile.open(fileobj=f, mode="r|") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    name_key, _, ext = os.path.basename(member.name).partition(".")
                    if name_key != key:
                        if key is not None:
                            count += 1
                            yield f"{url} sample {key}", members
                        key, members = name_key, {}
                    members[ext] = tar.extractfile(member).read()  # type: ignore[union-attr]
        except FileNotFoundError as e:
            raise ShardError(f"{url}: shard file missing") from e
        except (tarfile.TarError, EOFError) as e:
            raise ShardError(f"{url}: truncated or corrupt after {count} samples ({e}); a partially written shard? "
                             "prepare the shards again") from e
        if key is not None:
            count += 1
            yield f"{url} sample {key}", members
        if count != expected:
            raise ShardError(f"{url}: {count} samples, the manifest lists {expected}: truncated or partially "
                             "written shard; prepare the shards again")

    def _shuffled(self, samples: Iterator[Any], rng: np.random.Generator) -> Iterator[Any]:
        if self.shuffle_buffer <= 1:
            yield from samples
            return
        buffer: list[Any] = []
        for sample in samples:
            if len(buffer) < self.shuffle_buffer:
                buffer.append(sample)
                continue
            k = int(rng.integers(len(buffer)))
            buffer[k], sample = sample, buffer[k]
            yield sample
        rng.shuffle(buffer)
        yield from buffer

    def _items(self, where: str, members: dict[str, bytes], epoch: int) -> Iterator[dict[str, Any] | SkippedItem]:
        meta = sample_meta(members, where)
        label = torch.zeros(self.num_classes, dtype=torch.float32)
        label[list(meta["labels"])] = 1.0
        for view in range(self.views):
            index = meta["index"] * self.views + view
            generator = torch.Generator().manual_seed(item_seed(self.seed, epoch, index))
            try:
                sample = self._decode(members, meta, view, generator, where)
            except (DecodeError, OSError) as e:
                reason = f"{type(e).__name__}: {e}"
                if self.skip_bad:
                    yield SkippedItem(index, meta["path"], reason)
                    continue
                raise ClipError(f"{meta['path']} (annotation {meta['source']}:{meta['line']}): cannot read the "
                                f"clip: {reason}") from e
            sample.update(label=label.clone(), label_index=meta["labels"][0] if self.single_label else -1,
                          video_id=meta["video_id"], clip_index=view, index=index)
            yield sample

    def __iter__(self) -> Iterator[Any]:
        epoch = self.epoch
        info = get_worker_info()
        worker = info.id if info is not None else 0
        if info is not None and info.num_workers != max(self.num_workers, 1):
            raise RuntimeError(f"ShardStream.num_workers={self.num_workers} but the loader has {info.num_workers} "
                               "workers; build the loader with build_stream_loader")
        done, role = 0, worker  # role: the worker whose shards this one reads
        if self.start_unit:
            if self.views != 1:
                raise ValueError("start_unit applies to training streams (one item per sample)")
            taken, first = self.worker_starts(epoch, self.start_unit)
            role = (worker + first) % len(taken)  # the loader asks worker 0 first: it plays `first`
            done = taken[role]
        shards = self.assignment(epoch)[self.rank][role]
        units = self._units(epoch)[self.rank][role] - done
        rng = _shard_rng(self.seed, epoch, self.rank, role, 1)
        raw = (s for shard in shards for s in self._raw(shard))
        samples = self._shuffled(raw, rng)
        for _ in itertools.islice(samples, done * (self.batch_size or 1)):
            pass  # read, not decoded
        items = (it for where, members in samples for it in self._items(where, members, epoch))
        try:
            if self.batch_size is None:
                yield from itertools.islice(items, units)
                return
            for _ in range(units):
                yield collate(list(itertools.islice(items, self.batch_size)))
        finally:
            items.close()  # closes the shard being read when training stops at its quota
            raw.close()


class StreamLoader(AVLoader):
    """Batches of a `ShardStream` through a DataLoader, counted as `AVLoader` counts them (skipped
    items, damaged files, a worker's `ClipError` message)."""

    def __init__(self, stream: ShardStream, loader: DataLoader) -> None:
        super().__init__(loader, None)
        self.stream = stream

    def set_epoch(self, epoch: int) -> None:
        self.stream.set_epoch(epoch)


def _batch_as_is(batch: dict[str, Any]) -> dict[str, Any]:
    """The stream collates in its workers; the loader passes batches through."""
    return batch


def build_stream_loader(stream: ShardStream, batch_size: int, num_workers: int = 0,
                        prefetch_factor: int | None = None) -> StreamLoader:
    """A loader of `stream` batches; workers each read their own shards and batch inside the
    worker (training: whole batches, equal in number on every rank). Workers are started per
    epoch, so call `set_epoch` before iterating."""
    stream.batch_size, stream.num_workers = batch_size, num_workers
    loader = DataLoader(
        stream, batch_size=None, collate_fn=_batch_as_is, num_workers=num_workers, pin_memory=torch.cuda.is_available(),
        worker_init_fn=worker_init if num_workers else None,
        prefetch_factor=(prefetch_factor or 2) if num_workers else None,
        generator=torch.Generator().manual_seed(stream.seed),  # starting workers leaves torch's global RNG alone
    )
    return StreamLoader(stream, loader)


