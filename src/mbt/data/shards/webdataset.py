"""Standard WebDataset tars of raw media and labels (`dataset.format='webdataset'`), such as those the
`webdataset` package's `ShardWriter` writes: members `{key}.{ext}` grouped by key, where the key is
the member name up to the first dot of its base name (the package's rule).

Per sample:

- media: the first of `MEDIA_EXTS` present (`.mp4`, `.webm`, `.mkv`, ..., audio-only `.wav`, `.flac`,
  ...): the file as it was, decoded like any file of the folder formats;
- labels: `.cls` (the package's convention: a class index as text; several separated by commas or
  spaces make a multi-label sample; class names are accepted too), else `.json` with `label` or
  `labels` (class indices or names) and optionally `start` / `end` (the segment in seconds) and
  `video_id`.

Classes come from `classes` (a class-list file, as the other formats take, or names); without one,
class indices `0..max` of the labels seen are named "0", "1", ..., class names are sorted. Give the
list when validation or test data may miss some classes (all splits must share it).

The tars are indexed once when the dataset is built (every member's byte offset, the small label
members read): a local tar costs a pass over its headers, a remote one a sequential read. Items are
then read by byte range (`io.RangeReader`: retries, servers without ranges) and decoded by
`AVDataset`'s clip path from a temporary file, so an item is the one the same file on disk gives. A
sample without media or labels is a bad row (`Problem(tar, sample number, ...)`): an error, or with
`skip_bad` left out and counted.

`expand_urls` expands brace lists: `shards-{000000..000009}.tar`, `{train,extra}-{0..3}.tar`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from ..annotations import AnnotationError, Annotations, Item, Problem, read_class_list
from ..config import DataConfig
from ..dataset import MODALITIES, AVDataset, Split
from ..decode import DecodeError
from .format import MAX_LISTED
from .io import RangeReader
from .remote import ReadConfig, file_size, is_url, open_sequential

FORMAT = "webdataset"
MEDIA_EXTS = ("mp4", "webm", "mkv", "avi", "mov", "m4v", "wav", "flac", "mp3", "ogg", "m4a", "opus")
"""Member extensions read as media, in order of preference when a sample holds several."""
_BRACE = re.compile(r"\{([^{}]*)\}")
_TMP = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
"""Where decoded members are staged: memory when the system has it."""


def expand_urls(patterns: str | Sequence[str]) -> list[str]:
    """Brace-expanded tar paths or URLs: `{a..b}` (zero-padded as written) and `{x,y}`."""
    out: list[str] = []
    for pattern in [patterns] if isinstance(patterns, str) else patterns:
        match = _BRACE.search(pattern)
        if match is None:
            out.append(pattern)
            continue
        body = match.group(1)
        span = re.fullmatch(r"(\d+)\.\.(\d+)", body)
        if span:
            first, last = span.groups()
            if int(first) > int(last):
                raise ValueError(f"{pattern}: range {{{body}}} runs backwards")
            width = max(len(first), len(last)) if first.startswith("0") or last.startswith("0") else 0
            choices = [f"{i:0{width}d}" for i in range(int(first), int(last) + 1)]
        elif "," in body:
            choices = body.split(",")
        else:
            raise ValueError(f"{pattern}: {{{body}}} is neither a range {{a..b}} nor a list {{x,y}}")
        out += expand_urls([pattern[: match.start()] + c + pattern[match.end():] for c in choices])
    return out


def _split_name(name: str) -> tuple[str, str]:
    """(key, extension) of a member name: up to / after the first dot of its base name."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def _samples(url: str, read: ReadConfig) -> Iterator[tuple[str, dict[str, Any]]]:
    """(key, {ext: (offset, size) of media, or the bytes of a label member}) of each sample of a tar,
    and its size in bytes as the last pair ('', {'bytes': n})."""
    local = not is_url(url)
    try:
        f = open(url, "rb") if local else open_sequential(url, read)  # noqa: SIM115 (closed by the with below)
    except FileNotFoundError as e:
        raise AnnotationError(f"{url}: no such tar file") from e
    key, members = None, {}
    with f:
        try:
            with tarfile.open(fileobj=f, mode="r:" if local else "r|") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    name_key, ext = _split_name(member.name)
                    if name_key != key:
                        if key is not None:
                            yield key, members
                        key, members = name_key, {}
                    if ext in MEDIA_EXTS:
                        members[ext] = (member.offset_data, member.size)
                    elif ext in ("cls", "json"):
                        members[ext] = tar.extractfile(member).read()  # type: ignore[union-attr]
        except (tarfile.TarError, EOFError) as e:
            raise AnnotationError(f"{url}: not a readable tar file ({e})") from e
        if key is not None:
            yield key, members
        size = os.path.getsize(url) if local else file_size(url, read)
    yield "", {"bytes": size}


def _refuse_mbt_shards(url: str, first: list[tuple[str, dict[str, Any]]]) -> None:
    """mbt's own shards hold decoded frames, not media files: point to the format that reads them."""
    for key, members in first:
        try:
            meta = json.loads(members.get("json", b"null"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return
        if isinstance(meta, dict) and "clips" in meta and "index" in meta and not any(e in members for e in MEDIA_EXTS):
            raise AnnotationError(f"{url}: a shard written by `mbt data prepare` (sample {key} holds decoded clips, "
                                  "not a media file): train on its folder with dataset.format='shards'")


def _labels(members: dict[str, Any]) -> tuple[list[int | str], dict[str, Any]]:
    """The raw labels of a sample and its json fields; ValueError saying what is wrong."""
    if "cls" in members:
        text = members["cls"].decode("utf-8", "replace").strip()
        tokens = [t for t in re.split(r"[,\s]+", text) if t]
        if not tokens:
            raise ValueError("empty .cls member")
        return [int(t) if re.fullmatch(r"-?\d+", t) else t for t in tokens], {}
    if "json" in members:
        try:
            meta = json.loads(members["json"])
        except json.JSONDecodeError as e:
            raise ValueError(f".json member is not JSON ({e})") from e
        if not isinstance(meta, dict):
            raise ValueError(".json member is not an object")
        labels = meta.get("labels", meta.get("label"))
        if labels is None:
            raise ValueError(".json member has neither 'label' nor 'labels'")
        labels = labels if isinstance(labels, list) else [labels]
        if not labels or not all(isinstance(x, (int, str)) and not isinstance(x, bool) for x in labels):
            raise ValueError(f"labels {labels!r} are not class indices or names")
        return labels, meta
    raise ValueError("no label member (.cls or .json)")


def load_webdataset(patterns: str | Sequence[str], classes: str | os.PathLike[str] | Sequence[str] | None = None,
                    skip_bad: bool = False, read: ReadConfig | None = None) -> Annotations:
    """The samples of WebDataset tars (brace patterns, local paths or URLs) as `Annotations`
    (module docstring); each item's `extra` locates its media member."""
    read = read or ReadConfig()
    urls = expand_urls(patterns)
    if not urls:
        raise AnnotationError("no WebDataset tar files given")

    def scan(url: str) -> list[tuple[str, dict[str, Any]]]:
        return list(_samples(url, read))

    with ThreadPoolExecutor(min(16, len(urls)) if any(map(is_url, urls)) else 1) as pool:
        scanned = list(pool.map(scan, urls))
    raw: list[tuple[str, int, str, int, str, tuple[int, int], list[int | str], dict[str, Any]]] = []
    problems: list[Problem] = []
    for url, samples in zip(urls, scanned, strict=True):
        _refuse_mbt_shards(url, samples[:1])
        tar_bytes = samples[-1][1]["bytes"]
        for number, (key, members) in enumerate(samples[:-1], start=1):
            media = next((ext for ext in MEDIA_EXTS if ext in members), None)
            try:
                if media is None:
                    raise ValueError(f"no media member (one of .{', .'.join(MEDIA_EXTS)})")
                labels, meta = _labels(members)
            except ValueError as e:
                problems.append(Problem(url, number, f"sample {key}: {e}"))
                continue
            raw.append((url, tar_bytes, key, number, media, members[media], labels, meta))
    names = _class_names(classes, [x for r in raw for x in r[6]])
    index = {n: i for i, n in enumerate(names)}
    items: list[Item] = []
    for url, tar_bytes, key, number, ext, (offset, size), labels, meta in raw:
        try:
            ids = tuple(_class_id(x, index, len(names)) for x in labels)
        except ValueError as e:
            problems.append(Problem(url, number, f"sample {key}: {e}"))
            continue
        start, end = meta.get("start"), meta.get("end")
        items.append(Item(path=f"{url}#{key}.{ext}", labels=ids, start=None if start is None else float(start),
                          end=None if end is None else float(end), video_id=str(meta.get("video_id", key)),
                          source=url, line=number, found=True,
                          extra={"tar": url, "tar_bytes": tar_bytes, "offset": offset, "size": size, "ext": ext}))
    if problems and not skip_bad:
        raise AnnotationError(
            f"{len(problems)} bad sample(s) in the WebDataset tars:\n"
            + "\n".join(f"  {p}" for p in problems[:MAX_LISTED])
            + ("\n  ..." if len(problems) > MAX_LISTED else "")
            + "\n(fix them, or skip them with skip_bad=True / --skip-bad)", problems)
    if not items:
        raise AnnotationError(f"no samples in {urls[0]}" + (f" and {len(urls) - 1} more tar(s)" if len(urls) > 1
                                                            else ""))
    return Annotations(items, names, multi_label=any(len(it.labels) > 1 for it in items), problems=problems,
                       format=FORMAT, sources=tuple(urls))


def _class_names(classes: str | os.PathLike[str] | Sequence[str] | None, labels: list[int | str]) -> list[str]:
    if isinstance(classes, (str, os.PathLike)):
        return read_class_list(classes)
    if classes is not None:
        return list(classes)
    named = sorted({x for x in labels if isinstance(x, str)})
    if named:
        return named
    return [str(i) for i in range(max((x for x in labels if isinstance(x, int)), default=-1) + 1)]


def _class_id(label: int | str, index: dict[str, int], count: int) -> int:
    if isinstance(label, int):
        if not 0 <= label < count:
            raise ValueError(f"class index {label} outside the {count} classes")
        return label
    if label not in index:
        raise ValueError(f"unknown class {label!r}")
    return index[label]


class WebDataset(AVDataset):
    """`AVDataset` over WebDataset tars: items of `load_webdataset`, each read by its byte range and
    decoded through the same clip path as a file."""

    def __init__(self, annotations: Annotations, cfg: DataConfig, split: Split, modalities: Sequence[str] = MODALITIES,
                 seed: int = 0, skip_bad: bool = False, read: ReadConfig | None = None) -> None:
        super().__init__(annotations, cfg, split, modalities, seed=seed, skip_bad=skip_bad)
        sizes = {it.extra["tar"]: it.extra["tar_bytes"] for it in self.items}
        self._reader = RangeReader(sizes, read or ReadConfig(), stale="its size when indexed: changed since")

    def _load(self, item: Item, view: int, generator: torch.Generator) -> dict[str, Any]:
        x = item.extra
        data = self._reader.read(x["tar"], x["offset"], x["size"])
        with tempfile.NamedTemporaryFile(suffix=f".{x['ext']}", dir=_TMP) as f:
            f.write(data)
            f.flush()
            try:
                return super()._load(dataclasses.replace(item, path=f.name), view, generator)
            except DecodeError as e:
                raise DecodeError(str(e).replace(f.name, item.path)) from e
            finally:
                self._durations.pop(f.name, None)
