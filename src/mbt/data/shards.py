"""WebDataset-format shards of pre-decoded clips, for datasets of millions of videos (AudioSet).

`prepare_shards` (`mbt data prepare`) decodes every annotated video once, with `read_clip`'s timing
and padding rules, and writes what the clips of one dataset mode need into plain tar files. The
same dataset interface as `AVDataset` (items of rgb, spectrogram, label, ...) then reads them:

- `ShardDataset`: random access through a per-shard index (byte offset of each sample), from local
  disk or any fsspec URL. What `mbt train` uses with `dataset.format='shards'`: it keeps the
  trainer's sampler, exact resumption and process-count-independent batches.
- `ShardStream`: an `IterableDataset` reading whole shards sequentially (the object-storage access
  pattern), shard order reshuffled every epoch, a shuffle buffer of samples, shards split over
  ranks and loader workers; `build_stream_loader` wraps it in a DataLoader.

Augmentation, log-mel features and SpecAugment stay in the loader, so one set of shards serves any
crop size, augmentation and feature setting; only the fields in `RECIPE_FIELDS` are fixed.

Folder layout (write it on local disk, then copy the folder as is to object storage):

    plan.json            written first: what the run prepares (a re-run resumes a killed run)
    shard-000000.tar     samples, plain POSIX tar (members `{key}.{ext}`, grouped by key)
    shard-000000.json    its index, written once the tar is complete: key, byte offset and length
                         of every sample, labels, ids; bad videos of the shard with the reason
    report.json          written at the end: every video left out, and why
    manifest.json        written last: recipe, classes, shards with sample counts and sizes, counts

Members of sample `{key}` (the item's index in the annotations, 9 digits; no dot, as WebDataset
splits a name at its first dot into key and extension):

    {key}.json           video_id, labels, path, annotation source:line, segment, has_audio, clips
    {key}.c{c}.f{k:05d}.jpg   frame k of clip c, RGB JPEG, short side `min_resize`
    {key}.c{c}.flac      audio of clip c, 16 kHz mono 16-bit FLAC (or `.npy`: raw int16 samples);
                         absent when the video has no audio track (has_audio false)

What a clip stores depends on the mode (`ShardConfig.mode`, times as in `AVDataset`):

- train: the span every training clip can come from. Clip centres are drawn from `[c_min, c_max]`
  (AVDataset's range), so the frames on a grid of `frame_oversample * frame_rate` per second from
  the first frame of the earliest clip to the last frame of the latest, and the audio from
  `c_min - audio_seconds / 2` to `c_max + audio_seconds / 2`. A training item draws its centre as
  AVDataset does, takes the stored frame nearest each of its frame times (at most half a grid step,
  `1 / (2 * frame_oversample * frame_rate)` s, from the time AVDataset would decode) and slices its
  audio window, then augments. Storage grows with `frame_oversample` (more temporal positions).
- val: the one middle clip, exactly the frames and audio AVDataset decodes.
- test: the `num_test_clips` clips, each as in val; the spatial crops are taken at load time.

The clip timing uses the window of the modalities the shards were prepared with (stored in the
manifest), whichever subset of them is read.

Bad videos. Without `skip_bad` the first missing or undecodable video stops `prepare_shards` with
an error naming it; with it such videos are left out, counted, listed with their reason in the
shard index and report.json, and `ShardDataset.dropped` carries them into the trainer's report.
Items without an audio track are counted (`without_audio`) and read back as silence with
`has_audio` False, as AVDataset does.

Audio is stored at 16 bits: on real soundtracks (the three test assets with audio) that changes
the normalised log-mel by 0.0005 on average (0.19 at most); only content below the 16-bit floor
(-96 dBFS, e.g. digital silence plus a pure tone) moves more.

Why plain `tarfile` and not the `webdataset` package: the format is a tar file, a few lines to write
and read; what the package adds (shard lists, shuffling, splitting, decoding) must here follow this
project's rules instead (seeds per (seed, epoch, index), equal whole batches on every rank,
`skip_bad` accounting, count and size checks, random access for the trainer), so it would be a
dependency kept for its tar reader. The layout is the one it reads (keys without dots, a key's
members adjacent, standard extensions), so `webdataset` users can read the shards directly.

Interrupted runs. Each tar is written as `.tmp` and renamed when complete, then its index is
written; a re-run with the same arguments keeps the shards whose index matches the tar on disk and
redoes the others. Readers refuse a folder without manifest.json (an unfinished run), a shard whose
size differs from the manifest, and a tar that ends early or holds fewer samples than listed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import json
import math
import os
import tarfile
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
import torch
import torch.distributed as dist
from PIL import Image  # torchvision's dependency; torchvision.io's JPEG codec is deprecated (and 14x slower to encode)
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .annotations import Annotations, Item, Problem
from .augment import VideoTransform, spec_augment, test_crops
from .config import DataConfig
from .dataset import MODALITIES, AVDataset, ClipError, SkippedItem, Split, item_seed
from .decode import DecodeError, probe, read_audio, read_clip
from .features import log_mel
from .loader import collate

__all__ = [
    "RECIPE_FIELDS",
    "ShardConfig",
    "ShardDataset",
    "ShardError",
    "ShardSet",
    "ShardStream",
    "StreamLoader",
    "build_stream_loader",
    "load_shard_annotations",
    "open_shards",
    "prepare_shards",
]

FORMAT_NAME = "mbt-shards"
FORMAT_VERSION = 1
MANIFEST, PLAN, REPORT = "manifest.json", "plan.json", "report.json"
AUDIO_CODECS = {"flac": "flac", "pcm16": "npy"}
"""Audio codec -> member extension: 16-bit FLAC (lossless, about half the raw size) or the raw
int16 samples as a `.npy` array (no decoding cost, twice the bytes)."""
RECIPE_FIELDS = ("num_frames", "frame_rate", "min_resize", "sample_rate", "audio_seconds", "pad_mode")
"""`DataConfig` fields fixed by the shards (plus `num_test_clips` for test shards); the other
fields (crop size, augmentation, log-mel, normalisation, test crops) apply at load time."""
_KEY_DIGITS = 9
_MAX_LISTED = 5
_TIME_EPS = 1e-6


class ShardError(OSError):
    """A shard folder or file cannot be used (unfinished, truncated, corrupt); the message names it."""


@dataclass
class ShardConfig:
    """What `prepare_shards` stores and how (the recipe itself comes from `DataConfig`)."""

    mode: str = "train"
    """'train' (a span to draw random clips from), 'val' (the middle clip) or 'test' (the
    `num_test_clips` clips); the dataset split the shards serve."""
    modalities: tuple[str, ...] = MODALITIES
    """Modalities stored; they also fix the clip timing window (the longest of their windows)."""
    shard_size: int = 512
    """Samples per shard (a train sample of the paper recipe is about 1 MB: ~0.5 GB shards)."""
    frame_oversample: int = 2
    """Train shards: stored frames per second = this x `frame_rate` (more clip positions, more bytes)."""
    jpeg_quality: int = 90
    """JPEG quality of the stored frames (PIL/libjpeg scale, 1-95)."""
    audio_codec: str = "flac"
    """'flac' (16-bit, lossless) or 'pcm16' (raw int16 `.npy`)."""
    seed: int = 0
    """Seed of the order of items over shards (shuffled, so every shard mixes classes)."""

    def __post_init__(self) -> None:
        self.modalities = tuple(self.modalities)
        if self.mode not in ("train", "val", "test"):
            raise ValueError(f"mode must be 'train', 'val' or 'test', got {self.mode!r}")
        unknown = [m for m in self.modalities if m not in MODALITIES]
        if unknown or not self.modalities:
            raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, got {list(self.modalities)}")
        if self.shard_size < 1 or self.frame_oversample < 1:
            raise ValueError("shard_size and frame_oversample must be >= 1")
        if not 1 <= self.jpeg_quality <= 95:
            raise ValueError(f"jpeg_quality must be in [1, 95], got {self.jpeg_quality}")
        if self.audio_codec not in AUDIO_CODECS:
            raise ValueError(f"audio_codec must be one of {list(AUDIO_CODECS)}, got {self.audio_codec!r}")


# ---------------------------------------------------------------------- storage access
def _is_url(location: str) -> bool:
    return "://" in location


def _join(location: str, name: str) -> str:
    return f"{location.rstrip('/')}/{name}" if _is_url(location) else os.path.join(location, name)


def _fsspec() -> Any:
    try:
        import fsspec
    except ImportError as e:  # pragma: no cover - fsspec comes with torch
        raise ImportError("reading shards from a URL needs fsspec: pip install 'mbt[shards]'") from e
    return fsspec


def _url_fs(url: str) -> tuple[Any, str]:
    return _fsspec().core.url_to_fs(url)


def _read_bytes(url: str) -> bytes:
    if _is_url(url):
        fs, path = _url_fs(url)
        return fs.cat_file(path)
    with open(url, "rb") as f:
        return f.read()


def _read_json(url: str) -> Any:
    try:
        return json.loads(_read_bytes(url))
    except json.JSONDecodeError as e:
        raise ShardError(f"{url}: not valid JSON ({e}); a partially written file?") from e


def _open_stream(url: str) -> Any:
    """A binary file object for sequential reading (local file or fsspec URL)."""
    if _is_url(url):
        return _fsspec().open(url, "rb").open()
    return open(url, "rb", buffering=1 << 20)


class _RangeReader:
    """Byte ranges of shard files, one read per sample; checks each file's size against the
    manifest the first time it is opened in a process. Open files are kept (LRU) per process."""

    def __init__(self, sizes: dict[str, int], max_open: int = 64) -> None:
        self.sizes, self.max_open = sizes, max_open
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._pid = os.getpid()
        self._checked: set[str] = set()

    def _check(self, url: str, size: int) -> None:
        if size != self.sizes[url]:
            raise ShardError(f"{url}: {size} bytes, the manifest says {self.sizes[url]}: partially written or "
                             "changed since `mbt data prepare` finished; prepare the shards again")
        self._checked.add(url)

    def read(self, url: str, offset: int, length: int) -> bytes:
        if os.getpid() != self._pid:  # a forked loader worker: descriptors are the parent's
            self._fds, self._pid = OrderedDict(), os.getpid()
        if _is_url(url):
            fs, path = _url_fs(url)
            if url not in self._checked:
                self._check(url, int(fs.size(path)))
            data = fs.cat_file(path, start=offset, end=offset + length)
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
        return {"sizes": self.sizes, "max_open": self.max_open}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["sizes"], state["max_open"])  # type: ignore[misc]


def _members(data: bytes, where: str) -> dict[str, bytes]:
    """`{ext: bytes}` of the tar members of one sample (a byte range of a shard)."""
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar:
                if member.isfile():
                    out[member.name.partition(".")[2]] = tar.extractfile(member).read()  # type: ignore[union-attr]
    except (tarfile.TarError, EOFError) as e:
        raise ShardError(f"{where}: corrupt tar data ({e})") from e
    return out


# ---------------------------------------------------------------------- a finished shard folder
class ShardSet:
    """A finished shard folder (local path or fsspec URL): its manifest, and on demand the
    per-sample index and the report of videos left out."""

    def __init__(self, location: str | os.PathLike[str]) -> None:
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
        self.names: list[str] = [s["name"] for s in m["shards"]]
        self.urls: list[str] = [_join(location, n) for n in self.names]
        self.counts: list[int] = [int(s["samples"]) for s in m["shards"]]
        self.sizes: list[int] = [int(s["bytes"]) for s in m["shards"]]

    def _load_manifest(self) -> dict[str, Any]:
        url = _join(self.location, MANIFEST)
        try:
            manifest = _read_json(url)
        except FileNotFoundError as e:
            hint = ""
            if not _is_url(self.location) and os.path.isdir(self.location):
                tars = [n for n in os.listdir(self.location) if n.endswith((".tar", ".tmp"))]
                plan = os.path.exists(os.path.join(self.location, PLAN))
                if tars or plan:
                    hint = (f": the `mbt data prepare` run writing this folder did not finish ({len(tars)} shard "
                            "file(s) present); run the same command again to complete it")
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
            side = _read_json(_join(self.location, _index_name(self.names[i])))
            if len(side["samples"]) != self.counts[i]:
                raise ShardError(f"{self.urls[i]}: index lists {len(side['samples'])} samples, the manifest "
                                 f"{self.counts[i]}")
            return [{**s, "shard": i} for s in side["samples"]]

        with ThreadPoolExecutor(16 if _is_url(self.location) else 1) as pool:
            records = [r for part in pool.map(load, range(len(self.names))) for r in part]
        return sorted(records, key=lambda r: r["index"])

    def report(self) -> dict[str, Any]:
        """report.json: videos left out (with reasons) and skipped annotation rows."""
        return _read_json(_join(self.location, REPORT))

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


def open_shards(location: str | os.PathLike[str] | ShardSet) -> ShardSet:
    """The finished shard folder at `location` (a folder, its manifest.json, or an fsspec URL)."""
    return location if isinstance(location, ShardSet) else ShardSet(location)


def load_shard_annotations(location: str | os.PathLike[str]) -> Annotations:
    """The annotations stored in a shard folder (what the trainer derives the label space from)."""
    return open_shards(location).annotations()


# ---------------------------------------------------------------------- decoding a stored sample
def _frame_name(clip: int, k: int) -> str:
    return f"c{clip}.f{k:05d}.jpg"


def _decode_audio(data: bytes, codec: str, where: str) -> np.ndarray:
    """int16 samples of a stored audio member."""
    try:
        if codec == "pcm16":
            return np.load(io.BytesIO(data), allow_pickle=False)
        with av.open(io.BytesIO(data), format="flac") as c:
            return np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    except (av.FFmpegError, ValueError, OSError) as e:
        raise ShardError(f"{where}: cannot decode the stored audio ({e})") from e


class _SampleDecoder:
    """Stored sample -> model inputs: the clip of a view (train: drawn from the span), frames
    through the train/eval transform or a test crop, audio through log-mel (and SpecAugment)."""

    def __init__(self, shards: ShardSet, cfg: DataConfig, split: Split, modalities: Sequence[str]) -> None:
        self.cfg, self.split, self.modalities = cfg, split, tuple(modalities)
        self.codec = shards.manifest["storage"]["audio_codec"]
        self.audio_ext = AUDIO_CODECS[self.codec]
        self.video_transform = VideoTransform(cfg, train=split == "train")

    def __call__(self, members: dict[str, bytes], meta: dict[str, Any], view: int, generator: torch.Generator,
                 where: str) -> dict[str, Any]:
        cfg = self.cfg
        clip_no = view // cfg.num_test_crops if self.split == "test" else 0
        clip = meta["clips"][clip_no]
        num_audio = round(cfg.audio_seconds * cfg.sample_rate)
        if self.split == "train":
            c_min, c_max = clip["centre_min"], clip["centre_max"]
            centre = c_min + (c_max - c_min) * float(torch.rand((), generator=generator, dtype=torch.float64))
            times = [centre + (i - (cfg.num_frames - 1) / 2) / cfg.frame_rate for i in range(cfg.num_frames)]
            frames = [round((t - clip["frame_start"]) / clip["frame_step"]) for t in times]
            audio_offset = round((centre - cfg.audio_seconds / 2 - clip["audio_start"]) * cfg.sample_rate)
            audio_offset = min(max(audio_offset, 0), clip["audio_samples"] - num_audio)
        else:
            frames, audio_offset = list(range(clip["frames"])), 0
        out: dict[str, Any] = {"has_audio": bool(meta["has_audio"])}
        if "rgb" in self.modalities:
            if frames[0] < 0 or frames[-1] >= clip["frames"]:
                raise ShardError(f"{where}: clip frames {frames[0]}..{frames[-1]} outside the {clip['frames']} stored")
            rgb = self._frames(members, clip_no, frames, where)
            if self.split == "test":
                out["rgb"] = test_crops(rgb, cfg)[view % cfg.num_test_crops]
            else:
                out["rgb"] = self.video_transform(rgb, generator)
        if "spectrogram" in self.modalities:
            if meta["has_audio"]:
                name = f"c{clip_no}.{self.audio_ext}"
                if name not in members:
                    raise ShardError(f"{where}: member {name} missing")
                samples = _decode_audio(members[name], self.codec, where)
                if samples.shape[0] != clip["audio_samples"]:
                    raise ShardError(f"{where}: {samples.shape[0]} audio samples stored, expected "
                                     f"{clip['audio_samples']}")
                audio = samples[audio_offset: audio_offset + num_audio].astype(np.float32) / 32768.0
            else:
                audio = np.zeros(num_audio, dtype=np.float32)
            spec = log_mel(torch.from_numpy(audio), cfg)
            if self.split == "train":
                spec = spec_augment(spec, cfg, generator)
            out["spectrogram"] = spec
        return out

    @staticmethod
    def _frames(members: dict[str, bytes], clip: int, frames: list[int], where: str) -> torch.Tensor:
        """uint8 [T, H, W, 3] of the stored JPEG frames."""
        images = []
        for k in frames:
            name = _frame_name(clip, k)
            if name not in members:
                raise ShardError(f"{where}: member {name} missing")
            try:
                with Image.open(io.BytesIO(members[name])) as image:
                    images.append(np.asarray(image.convert("RGB")))
            except (OSError, ValueError) as e:
                raise ShardError(f"{where}: cannot decode the stored JPEG {name} ({e})") from e
        return torch.from_numpy(np.stack(images))


def _meta(members: dict[str, bytes], where: str) -> dict[str, Any]:
    try:
        return json.loads(members["json"])
    except KeyError as e:
        raise ShardError(f"{where}: no json member") from e
    except json.JSONDecodeError as e:
        raise ShardError(f"{where}: bad json member ({e})") from e


def _check_modalities(modalities: Sequence[str]) -> None:
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown or not modalities:
        raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, got {list(modalities)}")


# ---------------------------------------------------------------------- random access
class ShardDataset(AVDataset):
    """`AVDataset`'s interface over a shard folder: the same items (up to JPEG and 16-bit audio
    coding; train frames within half a grid step of their time), keys `(epoch, index)`, seeded
    augmentation, `skip_bad`, views for test. Items are in annotation order; `dropped` lists the
    videos `prepare_shards` left out (path, reason)."""

    def __init__(
        self,
        shards: str | os.PathLike[str] | ShardSet,
        cfg: DataConfig,
        split: Split,
        modalities: Sequence[str] = MODALITIES,
        seed: int = 0,
        skip_bad: bool = False,
        annotations: Annotations | None = None,
    ) -> None:
        _check_modalities(modalities)
        self.shards = open_shards(shards)
        self.shards.check(cfg, split, modalities)
        annotations = annotations if annotations is not None else self.shards.annotations()
        super().__init__(annotations, cfg, split, modalities, seed=seed, skip_bad=skip_bad)
        self.dropped = [(b["path"], b["reason"]) for b in self.shards.report()["left_out"]]
        self._decode = _SampleDecoder(self.shards, cfg, split, modalities)
        self._reader = _RangeReader(dict(zip(self.shards.urls, self.shards.sizes, strict=True)))

    @property
    def window_seconds(self) -> float:
        """The window the shards were prepared with (their clip timing)."""
        return self.shards.window_seconds

    def _load(self, item: Item, view: int, generator: torch.Generator) -> dict[str, Any]:
        shard, offset, size = item.extra["shard"]
        url = self.shards.urls[shard]
        where = f"{url} sample {item.extra['key']}"
        members = _members(self._reader.read(url, offset, size), where)
        return self._decode(members, _meta(members, where), view, generator, where)


# ---------------------------------------------------------------------- streaming
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
    ) -> None:
        _check_modalities(modalities)
        self.shards = open_shards(shards)
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
        self._decode = _SampleDecoder(self.shards, cfg, split, modalities)

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
            with _open_stream(url) as f, tarfile.open(fileobj=f, mode="r|") as tar:
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
        meta = _meta(members, where)
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


class StreamLoader:
    """Batches of a `ShardStream` through a DataLoader; counts skipped items like `AVLoader`."""

    def __init__(self, stream: ShardStream, loader: DataLoader) -> None:
        self.stream, self.loader = stream, loader
        self.skipped: list[tuple[str, str]] = []
        """(path, reason) of every item skipped so far (unreadable, with skip_bad)."""

    @property
    def dataset(self) -> ShardStream:
        return self.stream

    def set_epoch(self, epoch: int) -> None:
        self.stream.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.stream)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.loader:
            self.skipped.extend(batch["skipped"])
            if batch["batch_size"]:
                yield batch


def _stream_worker_init(worker_id: int) -> None:
    torch.set_num_threads(1)


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
        worker_init_fn=_stream_worker_init if num_workers else None,
        prefetch_factor=(prefetch_factor or 2) if num_workers else None,
        generator=torch.Generator().manual_seed(stream.seed),  # starting workers leaves torch's global RNG alone
    )
    return StreamLoader(stream, loader)


# ---------------------------------------------------------------------- writing
def _index_name(shard_name: str) -> str:
    return shard_name[: -len(".tar")] + ".json"


def _shard_name(i: int) -> str:
    return f"shard-{i:06d}.tar"


def _atomic_write(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, indent=1).encode()


def _encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _encode_audio(audio: np.ndarray, codec: str, sample_rate: int) -> bytes:
    samples = np.round(np.clip(audio, -1.0, 32767 / 32768) * 32768).astype(np.int16)
    buf = io.BytesIO()
    if codec == "pcm16":
        np.save(buf, samples, allow_pickle=False)
        return buf.getvalue()
    with av.open(buf, "w", format="flac") as c:
        stream = c.add_stream("flac", rate=sample_rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(samples[None], format="s16", layout="mono")
        frame.sample_rate, frame.pts = sample_rate, 0
        for p in [*stream.encode(frame), *stream.encode()]:
            c.mux(p)
    return buf.getvalue()


@dataclass
class _Plan:
    """Everything a prepare run needs to write any shard (sent once to each worker process)."""

    dataset: AVDataset
    shard_cfg: ShardConfig
    out: str
    order: list[int]
    """Item numbers (into dataset.items) in shard order."""
    keys: list[int]
    """Annotation index of each of dataset.items."""
    skip_bad: bool

    @property
    def num_shards(self) -> int:
        return math.ceil(len(self.order) / self.shard_cfg.shard_size)

    def shard_items(self, shard: int) -> list[int]:
        size = self.shard_cfg.shard_size
        return self.order[shard * size: (shard + 1) * size]


def _clips(ds: AVDataset, item: Item, shard_cfg: ShardConfig) -> list[dict[str, Any]]:
    """Frame grid and audio window of each stored clip (module docstring)."""
    cfg = ds.cfg
    n, rate, a = cfg.num_frames, cfg.frame_rate, cfg.audio_seconds
    reach = (n - 1) / (2 * rate)  # frame span either side of a centre
    if shard_cfg.mode == "train":
        start, end = ds.segment(item)
        h = ds.window_seconds / 2
        half = min(h, (end - start) / 2)
        c_min, c_max = max(start + half, h), max(end - half, h)
        step = 1.0 / (rate * shard_cfg.frame_oversample)
        first = c_min - reach
        count = math.ceil((c_max + reach - first) / step - _TIME_EPS) + 1
        return [{"centre_min": c_min, "centre_max": c_max, "frame_start": first, "frame_step": step,
                 "frames": count, "audio_start": max(c_min - a / 2, 0.0), "audio_seconds": c_max - c_min + a}]
    generator = torch.Generator()  # unused outside training
    num_clips = cfg.num_test_clips if shard_cfg.mode == "test" else 1
    clips = []
    for c in range(num_clips):
        centre = ds.clip_centre(item, c * cfg.num_test_crops, generator)
        clips.append({"centre": centre, "frame_start": centre - reach, "frame_step": 1.0 / rate, "frames": n,
                      "audio_start": max(centre - a / 2, 0.0), "audio_seconds": a})
    return clips


def _audio_window(path: str, start: float, seconds: float, cfg: DataConfig) -> tuple[np.ndarray, bool]:
    """Audio of a file read without its frames; silence and False for a file without audio."""
    try:
        return read_audio(path, start, seconds, cfg.sample_rate, cfg.pad_mode)[0], True
    except DecodeError:
        if probe(path).has_audio:
            raise
        return np.zeros(round(seconds * cfg.sample_rate), dtype=np.float32), False


def _encode_item(plan: _Plan, item: Item, key: str, index: int) -> tuple[list[tuple[str, bytes]], dict[str, Any]]:
    """The tar members of one item and its index record."""
    ds, sc, cfg = plan.dataset, plan.shard_cfg, plan.dataset.cfg
    clips = _clips(ds, item, sc)
    members: list[tuple[str, bytes]] = []
    has_audio = True
    frame_size: list[int] | None = None
    for c, clip in enumerate(clips):
        times = [clip["frame_start"] + k * clip["frame_step"] for k in range(clip["frames"])]
        audio_seconds = clip["audio_seconds"] if "spectrogram" in sc.modalities else 0.0
        if "rgb" in sc.modalities:
            decoded = read_clip(item.path, times, clip["audio_start"], audio_seconds, cfg.sample_rate, cfg.pad_mode,
                                resize_short_side=cfg.min_resize)
            audio, has_audio = decoded.audio, decoded.has_audio
            frame_size = list(decoded.rgb.shape[1:3])
            members += [(_frame_name(c, k), _encode_jpeg(f, sc.jpeg_quality)) for k, f in enumerate(decoded.rgb)]
        else:
            audio, has_audio = _audio_window(item.path, clip["audio_start"], audio_seconds, cfg)
        clip["audio_samples"] = int(audio.shape[0])
        if has_audio and "spectrogram" in sc.modalities:
            members.append((f"c{c}.{AUDIO_CODECS[sc.audio_codec]}", _encode_audio(audio, sc.audio_codec,
                                                                                   cfg.sample_rate)))
    start, end = ds.segment(item)
    meta = {"key": key, "index": index, "video_id": item.video_id, "labels": list(item.labels), "path": item.path,
            "source": item.source, "line": item.line, "start": start, "end": end, "has_audio": has_audio,
            "frame_size": frame_size, "clips": clips}
    return [("json", _json_bytes(meta)), *members], meta


def _write_shard(plan: _Plan, shard: int) -> dict[str, Any]:
    """Write shard `shard` (tar as .tmp, renamed when complete, then its index); returns the index."""
    name = _shard_name(shard)
    path = os.path.join(plan.out, name)
    records: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    with open(path + ".tmp", "wb") as f:
        with tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for i in plan.shard_items(shard):
                item, index = plan.dataset.items[i], plan.keys[i]
                key = f"{index:0{_KEY_DIGITS}d}"
                try:
                    members, meta = _encode_item(plan, item, key, index)
                except (DecodeError, OSError) as e:
                    reason = f"{type(e).__name__}: {e}"
                    if not plan.skip_bad:
                        raise ClipError(f"{item.path} (annotation {item.source}:{item.line}): cannot read the clip: "
                                        f"{reason} (pass --skip-bad to leave such videos out, counted in the "
                                        "report)") from e
                    bad.append({"index": index, "path": item.path, "source": item.source, "line": item.line,
                                "reason": reason})
                    continue
                offset = f.tell()
                for ext, data in members:
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size, info.mtime, info.mode = len(data), 0, 0o644
                    tar.addfile(info, io.BytesIO(data))
                records.append({"key": key, "index": index, "offset": offset, "size": f.tell() - offset,
                                **{k: meta[k] for k in ("video_id", "labels", "path", "source", "line", "start",
                                                        "end", "has_audio")}})
        f.flush()
        os.fsync(f.fileno())
        size = f.tell()
    os.replace(path + ".tmp", path)
    index = {"shard": name, "bytes": size, "samples": records, "bad": bad}
    _atomic_write(os.path.join(plan.out, _index_name(name)), _json_bytes(index))
    return index


_WORKER_PLAN: _Plan | None = None


def _init_worker(plan: _Plan) -> None:
    global _WORKER_PLAN
    _WORKER_PLAN = plan
    torch.set_num_threads(1)


def _write_shard_in_worker(shard: int) -> dict[str, Any]:
    assert _WORKER_PLAN is not None
    return _write_shard(_WORKER_PLAN, shard)


def _finished_index(out: str, shard: int) -> dict[str, Any] | None:
    """The index of a completely written shard, or None (missing, or its tar does not match)."""
    name = _shard_name(shard)
    try:
        with open(os.path.join(out, _index_name(name))) as f:
            index = json.load(f)
        return index if os.path.getsize(os.path.join(out, name)) == index["bytes"] else None
    except (OSError, ValueError, KeyError):
        return None


def _plan_record(plan: _Plan, annotations: Annotations) -> dict[str, Any]:
    """What identifies a run, to resume only the same one."""
    digest = hashlib.sha256()
    for i in plan.order:
        it = plan.dataset.items[i]
        digest.update(repr((plan.keys[i], it.path, it.labels, it.start, it.end, it.video_id)).encode())
    record = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "storage": dataclasses.asdict(plan.shard_cfg),
              "recipe": _recipe(plan.dataset.cfg, plan.shard_cfg.mode), "classes": annotations.class_names,
              "items": len(plan.order), "items_sha256": digest.hexdigest()}
    return json.loads(json.dumps(record))  # as read back from plan.json (tuples -> lists)


def _recipe(cfg: DataConfig, mode: str) -> dict[str, Any]:
    recipe = {name: getattr(cfg, name) for name in RECIPE_FIELDS}
    if mode == "test":
        recipe["num_test_clips"] = cfg.num_test_clips
    return recipe


def _clear(out: str) -> None:
    """Remove what a prepare run writes (and nothing else) from `out`."""
    for name in os.listdir(out):
        ours = name in (MANIFEST, PLAN, REPORT) or (name.startswith("shard-") and
                                                     name.endswith((".tar", ".json", ".tmp")))
        if ours or name in (MANIFEST + ".tmp", PLAN + ".tmp", REPORT + ".tmp"):
            os.remove(os.path.join(out, name))


def prepare_shards(
    annotations: Annotations,
    cfg: DataConfig,
    out: str | os.PathLike[str],
    shard_cfg: ShardConfig | None = None,
    *,
    workers: int = 1,
    skip_bad: bool = False,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Write `annotations` as shards into the local folder `out` (module docstring); returns the
    report (counts, videos left out). Re-running on a folder an interrupted run left resumes it.
    `progress(done, total)` is called after each shard."""
    sc = shard_cfg or ShardConfig()
    out = os.fspath(out)
    if _is_url(out):
        raise ValueError(f"{out}: write shards to a local folder, then copy it to object storage")
    os.makedirs(out, exist_ok=True)
    if os.path.exists(os.path.join(out, MANIFEST)):
        if not overwrite:
            raise FileExistsError(f"{out}: already holds finished shards ({MANIFEST}); choose another folder or "
                                  "pass --overwrite")
        _clear(out)
    tic = time.perf_counter()
    ds = AVDataset(annotations, cfg, sc.mode, modalities=sc.modalities, skip_bad=skip_bad)  # raises on missing files
    position = {id(it): k for k, it in enumerate(annotations.items)}
    keys = [position[id(it)] for it in ds.items]
    order = np.random.default_rng(sc.seed).permutation(len(ds.items)).tolist()
    plan = _Plan(ds, sc, out, order, keys, skip_bad)
    record = _plan_record(plan, annotations)
    plan_path = os.path.join(out, PLAN)
    resumed = os.path.exists(plan_path)
    if resumed:
        with open(plan_path) as f:
            previous = json.load(f)
        changed = sorted(k for k in set(record) | set(previous) if record.get(k) != previous.get(k))
        if changed:
            raise ValueError(f"{out}: holds an unfinished run of different shards ({', '.join(changed)} differ); "
                             "run the same command to finish it, or pass --overwrite to start over")
    else:
        _clear(out)
        _atomic_write(plan_path, _json_bytes(record))
    for name in os.listdir(out):
        if name.endswith(".tmp"):
            os.remove(os.path.join(out, name))
    indexes: dict[int, dict[str, Any]] = {}
    for shard in range(plan.num_shards):
        index = _finished_index(out, shard)
        if index is not None:
            indexes[shard] = index
    kept = len(indexes)
    todo = [s for s in range(plan.num_shards) if s not in indexes]
    if progress:
        progress(kept, plan.num_shards)
    if workers > 1 and len(todo) > 1:
        import multiprocessing

        with multiprocessing.get_context().Pool(min(workers, len(todo)), _init_worker, (plan,)) as pool:
            for index in pool.imap_unordered(_write_shard_in_worker, todo):
                indexes[int(index["shard"][6:12])] = index
                if progress:
                    progress(len(indexes), plan.num_shards)
    else:
        for shard in todo:
            indexes[shard] = _write_shard(plan, shard)
            if progress:
                progress(len(indexes), plan.num_shards)

    shards = [indexes[s] for s in range(plan.num_shards)]
    left_out = [{"path": path, "source": "", "line": 0, "reason": reason} for path, reason in ds.dropped]
    left_out += [b for s in shards for b in s["bad"]]
    written = sum(len(s["samples"]) for s in shards)
    report = {
        "out": out,
        "mode": sc.mode,
        "items": len(annotations.items),
        "written": written,
        "left_out": len(left_out),
        "missing_files": len(ds.dropped),
        "unreadable": len(left_out) - len(ds.dropped),
        "without_audio": sum(1 for s in shards for r in s["samples"] if not r["has_audio"]),
        "annotation_rows_skipped": len(annotations.problems),
        "shards": plan.num_shards,
        "shards_kept_from_interrupted_run": kept if resumed else 0,
        "bytes": sum(s["bytes"] for s in shards),
        "seconds": time.perf_counter() - tic,
        "first_left_out": [f"{b['path']}: {b['reason']}" for b in left_out[:_MAX_LISTED]],
    }
    _atomic_write(os.path.join(out, REPORT), _json_bytes({
        "left_out": left_out,
        "annotation_rows_skipped": [list(p) for p in annotations.problems],
    }))
    manifest = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "mode": sc.mode,
        "modalities": list(sc.modalities),
        "recipe": _recipe(cfg, sc.mode),
        "window_seconds": ds.window_seconds,
        "storage": {k: v for k, v in dataclasses.asdict(sc).items() if k not in ("mode", "modalities")},
        "classes": {"names": annotations.class_names, "multi_label": annotations.multi_label,
                    "class_splits": list(annotations.class_splits), "split_names": list(annotations.split_names)},
        "annotations": {"format": annotations.format, "sources": list(annotations.sources)},
        "shards": [{"name": s["shard"], "samples": len(s["samples"]), "bytes": s["bytes"]} for s in shards],
        "report": {k: v for k, v in report.items() if k not in ("out", "seconds", "first_left_out")},
    }
    _atomic_write(os.path.join(out, MANIFEST), _json_bytes(manifest))
    return report
