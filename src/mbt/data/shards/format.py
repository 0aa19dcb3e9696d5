"""The shard folder format: names, version, recipe fields, `ShardConfig`, and the member names of a sample
(layout in the package docstring)."""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from typing import Any

from ..dataset import MODALITIES, check_modalities

FORMAT_NAME = "mbt-shards"
FORMAT_VERSION = 1
MANIFEST, PLAN, REPORT, PART = "manifest.json", "plan.json", "report.json", "part.json"
AUDIO_CODECS = {"flac": "flac", "pcm16": "npy"}
"""Audio codec -> member extension: 16-bit FLAC (lossless, about half the raw size) or the raw
int16 samples as a `.npy` array (no decoding cost, twice the bytes)."""
RECIPE_FIELDS = ("num_frames", "frame_rate", "min_resize", "sample_rate", "audio_seconds", "pad_mode")
"""`DataConfig` fields fixed by the shards (plus `num_test_clips` for test shards); the other
fields (crop size, augmentation, log-mel, normalisation, test crops) apply at load time."""
KEY_DIGITS = 9
MAX_LISTED = 5
TIME_EPS = 1e-6


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
        check_modalities(self.modalities)
        if self.shard_size < 1 or self.frame_oversample < 1:
            raise ValueError("shard_size and frame_oversample must be >= 1")
        if not 1 <= self.jpeg_quality <= 95:
            raise ValueError(f"jpeg_quality must be in [1, 95], got {self.jpeg_quality}")
        if self.audio_codec not in AUDIO_CODECS:
            raise ValueError(f"audio_codec must be one of {list(AUDIO_CODECS)}, got {self.audio_codec!r}")


def sample_members(data: bytes, where: str) -> dict[str, bytes]:
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


def frame_name(clip: int, k: int) -> str:
    return f"c{clip}.f{k:05d}.jpg"


def sample_meta(members: dict[str, bytes], where: str) -> dict[str, Any]:
    try:
        return json.loads(members["json"])
    except KeyError as e:
        raise ShardError(f"{where}: no json member") from e
    except json.JSONDecodeError as e:
        raise ShardError(f"{where}: bad json member ({e})") from e


def index_name(shard_name: str) -> str:
    return shard_name[: -len(".tar")] + ".json"


def shard_file_name(i: int) -> str:
    return f"shard-{i:06d}.tar"
