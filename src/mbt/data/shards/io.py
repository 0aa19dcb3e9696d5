"""Reading a shard folder on local disk or at a URL (`remote`): whole files, byte ranges, tar members, and
`ShardSet`, a finished folder checked against its manifest."""

from __future__ import annotations

import json
import math
import os
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..annotations import Annotations, Item, Problem
from ..config import DataConfig
from ..dataset import Split
from .format import FORMAT_NAME, FORMAT_VERSION, MANIFEST, PART, PLAN, REPORT, ShardError, index_name
from .remote import ReadConfig, file_size, is_url, open_sequential, read_range


def _join(location: str, name: str) -> str:
    return f"{location.rstrip('/')}/{name}" if is_url(location) else os.path.join(location, name)


def _read_bytes(url: str, read: ReadConfig) -> bytes:
    if is_url(url):
        return read_range(url, 0, None, read)
    with open(url, "rb") as f:
        return f.read()


def _read_json(url: str, read: ReadConfig) -> Any:
    try:
        return json.loads(_read_bytes(url, read))
    except json.JSONDecodeError as e:
        raise ShardError(f"{url}: not valid JSON ({e}); a partially written file?") from e


def open_stream(url: str, read: ReadConfig) -> Any:
    """A binary file object for sequential reading (local file, or a URL read ahead with retries)."""
    if is_url(url):
        return open_sequential(url, read)
    return open(url, "rb", buffering=1 << 20)


_STALE = ("the manifest's size: partially written or changed since `mbt data prepare` finished; prepare the "
          "shards again")


class RangeReader:
    """Byte ranges of shard files, one read per sample; checks each file's size against `sizes` (the
    manifest's) the first time it is opened in a process, `stale` saying what a difference means. Open
    files are kept (LRU) per process."""

    def __init__(self, sizes: dict[str, int], read: ReadConfig, max_open: int = 64, stale: str = _STALE) -> None:
        self.sizes, self.read_cfg, self.max_open, self.stale = sizes, read, max_open, stale
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._pid = os.getpid()
        self._checked: set[str] = set()

    def _check(self, url: str, size: int) -> None:
        if size != self.sizes[url]:
            raise ShardError(f"{url}: {size} bytes, expected {self.sizes[url]}: {self.stale}")
        self._checked.add(url)

    def read(self, url: str, offset: int, length: int) -> bytes:
        if os.getpid() != self._pid:  # a forked loader worker: descriptors are the parent's
            self._fds, self._pid = OrderedDict(), os.getpid()
        if is_url(url):
            if url not in self._checked:
                size = file_size(url, self.read_cfg)
                if size is not None:  # a server that does not say: the length check below still holds
                    self._check(url, size)
            data = read_range(url, offset, offset + length, self.read_cfg)
        else:
            fd = self._fds.pop(url, None)
            if fd is None:
                try:
                    fd = os.open(url, os.O_RDONLY)
                except FileNotFoundError as e:
                    raise ShardError(f"{url}: shard file missing") from e
                if url not in self._checked:
                    self._check(url, os.fstat(fd).st_size)
                while len(self._fds) >= self.max_open:
                    os.close(self._fds.popitem(last=False)[1])
            self._fds[url] = fd
            data = os.pread(fd, length, offset)
        if len(data) != length:
            raise ShardError(f"{url}: {len(data)} bytes at offset {offset}, expected {length}: truncated shard")
        return data

    def __getstate__(self) -> dict[str, Any]:
        return {"sizes": self.sizes, "read": self.read_cfg, "max_open": self.max_open, "stale": self.stale}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["sizes"], state["read"], state["max_open"], state["stale"])  # type: ignore[misc]


class ShardSet:
    """A finished shard folder (local path or fsspec URL): its manifest, and on demand the
    per-sample index and the report of videos left out. `read`: how URLs are read (retries)."""

    def __init__(self, location: str | os.PathLike[str], read: ReadConfig | None = None) -> None:
        self.read = read or ReadConfig()
        location = os.fspath(location)
        if location.endswith(MANIFEST):
            location = location[: -len(MANIFEST)].rstrip("/") or "."
        self.location = location
        self.manifest = self._load_manifest()
        m = self.manifest
        self.mode: Split = m["mode"]
        self.modalities: tuple[str, ...] = tuple(m["modalities"])
        self.recipe: dict[str, Any] = m["recipe"]
        self.window_seconds: float = float(m["window_seconds"])
        self.names: list[str] = [self._shard_file_name(s.get("name")) for s in m["shards"]]
        self.urls: list[str] = [_join(location, n) for n in self.names]
        self.counts: list[int] = [int(s["samples"]) for s in m["shards"]]
        self.sizes: list[int] = [int(s["bytes"]) for s in m["shards"]]

    def _shard_file_name(self, name: Any) -> str:
        """A shard name from the manifest: a plain `*.tar` file name inside this folder, never a
        path, URL or `..` that would read from elsewhere."""
        if not (isinstance(name, str) and name.endswith(".tar") and not name.startswith(".")
                and not any(c in name for c in "/\\:")):
            raise ShardError(f"{_join(self.location, MANIFEST)}: shard name {name!r} is not a plain .tar file name "
                             "inside the shard folder")
        return name

    def _load_manifest(self) -> dict[str, Any]:
        url = _join(self.location, MANIFEST)
        try:
            manifest = _read_json(url, self.read)
        except (FileNotFoundError, NotADirectoryError) as e:
            hint = ""
            if not is_url(self.location) and os.path.exists(os.path.join(self.location, PART)):
                hint = (": a part of a preparation split over machines (part.json); merge all parts into one "
                        "folder with `mbt data merge PART_DIRS... --out DIR`")
            elif not is_url(self.location) and os.path.isdir(self.location):
                tars = [n for n in os.listdir(self.location) if n.endswith((".tar", ".tmp"))]
                if os.path.exists(os.path.join(self.location, PLAN)):  # written first by every prepare run
                    hint = (f": the `mbt data prepare` run writing this folder did not finish ({len(tars)} shard "
                            "file(s) present); run the same command again to complete it")
                elif tars:
                    hint = (f": {len(tars)} tar file(s) but not written by `mbt data prepare` (no {PLAN}); "
                            "WebDataset tars of media and labels are read with dataset.format='webdataset'")
            elif self.location.endswith(".tar") or "{" in self.location:
                hint = (": a tar file or list, not a shard folder; WebDataset tars of media and labels are read with "
                        "dataset.format='webdataset'")
            raise ShardError(f"{url}: no manifest{hint or ' (not a shard folder?)'}") from e
        if manifest.get("format") != FORMAT_NAME or manifest.get("version") != FORMAT_VERSION:
            raise ShardError(f"{url}: not an {FORMAT_NAME} v{FORMAT_VERSION} manifest")
        return manifest

    @property
    def num_samples(self) -> int:
        return sum(self.counts)

    @property
    def views(self) -> int:
        """Clips stored per sample (test: `num_test_clips`)."""
        return int(self.recipe.get("num_test_clips", 1)) if self.mode == "test" else 1

    def check(self, cfg: DataConfig, split: str, modalities: Sequence[str]) -> None:
        """Raise ValueError naming the field when `cfg`, `split` or `modalities` do not fit the shards."""
        where = self.location
        if split != self.mode:
            raise ValueError(f"{where}: prepared for the {self.mode!r} split, cannot serve {split!r} "
                             f"(prepare the {split} annotations with --mode {split})")
        extra = [m for m in modalities if m not in self.modalities]
        if extra:
            raise ValueError(f"{where}: holds {list(self.modalities)}, not {extra}")
        for name, stored in self.recipe.items():
            value = getattr(cfg, name)
            if name == "min_resize":
                if value > stored:
                    raise ValueError(f"{where}: frames stored with short side {stored}, smaller than "
                                     f"data.min_resize={value}; prepare again with min_resize={value}")
            elif (value != stored) if isinstance(stored, str) else not math.isclose(value, stored, rel_tol=1e-9):
                raise ValueError(f"{where}: data.{name}={value!r} differs from the shards' {stored!r}; prepare "
                                 f"the shards again with --set {name}={value}")

    def index(self) -> list[dict[str, Any]]:
        """Every sample's index record (shard number added), in annotation order."""
        def load(i: int) -> list[dict[str, Any]]:
            side = _read_json(_join(self.location, index_name(self.names[i])), self.read)
            if len(side["samples"]) != self.counts[i]:
                raise ShardError(f"{self.urls[i]}: index lists {len(side['samples'])} samples, the manifest "
                                 f"{self.counts[i]}")
            return [{**s, "shard": i} for s in side["samples"]]

        with ThreadPoolExecutor(16 if is_url(self.location) else 1) as pool:
            records = [r for part in pool.map(load, range(len(self.names))) for r in part]
        return sorted(records, key=lambda r: r["index"])

    def report(self) -> dict[str, Any]:
        """report.json: videos left out (with reasons) and skipped annotation rows."""
        return _read_json(_join(self.location, REPORT), self.read)

    def annotations(self, records: list[dict[str, Any]] | None = None) -> Annotations:
        """The stored items as `Annotations` (labels, ids, sources; `extra['shard']` locates each)."""
        m = self.manifest
        records = self.index() if records is None else records
        items = [
            Item(path=r["path"], labels=tuple(r["labels"]), start=r["start"], end=r["end"], video_id=r["video_id"],
                 source=r["source"], line=r["line"], extra={"shard": (r["shard"], r["offset"], r["size"]),
                                                            "key": r["key"], "index": r["index"]})
            for r in records
        ]
        problems = [Problem(*p) for p in self.report()["annotation_rows_skipped"]]
        c = m["classes"]
        return Annotations(items, list(c["names"]), multi_label=c["multi_label"],
                           class_splits=tuple(c["class_splits"]), split_names=tuple(c["split_names"]),
                           problems=problems, format="shards", sources=(self.location,))


def open_shards(location: str | os.PathLike[str] | ShardSet, read: ReadConfig | None = None) -> ShardSet:
    """The finished shard folder at `location` (a folder, its manifest.json, or a URL)."""
    return location if isinstance(location, ShardSet) else ShardSet(location, read)


def load_shard_annotations(location: str | os.PathLike[str], read: ReadConfig | None = None) -> Annotations:
    """The annotations stored in a shard folder (what the trainer derives the label space from)."""
    return open_shards(location, read).annotations()
