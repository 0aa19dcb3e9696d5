"""Random access to shards: a stored sample -> model inputs (`SampleDecoder`), and `ShardDataset`, the
`AVDataset` interface over a shard folder."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

import av
import numpy as np
import torch
from PIL import Image  # torchvision's dependency; torchvision.io's JPEG codec is deprecated (and 14x slower to encode)

from ..annotations import Annotations, Item
from ..config import DataConfig
from ..dataset import MODALITIES, AVDataset, Split, check_modalities
from ..views import ClipInputs, draw_centre, frame_times
from .format import AUDIO_CODECS, ShardError, frame_name, sample_members, sample_meta
from .io import RangeReader, ShardSet, open_shards
from .remote import ReadConfig


def _decode_audio(data: bytes, codec: str, where: str) -> np.ndarray:
    """int16 samples of a stored audio member."""
    try:
        if codec == "pcm16":
            return np.load(io.BytesIO(data), allow_pickle=False)
        with av.open(io.BytesIO(data), format="flac") as c:
            return np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    except (av.FFmpegError, ValueError, OSError) as e:
        raise ShardError(f"{where}: cannot decode the stored audio ({e})") from e


class SampleDecoder:
    """Stored sample -> model inputs: the clip of a view (train: drawn from the span), frames
    through the train/eval transform or a test crop, audio through log-mel (and SpecAugment)."""

    def __init__(self, shards: ShardSet, cfg: DataConfig, split: Split, modalities: Sequence[str]) -> None:
        self.cfg, self.split, self.modalities = cfg, split, tuple(modalities)
        self.codec = shards.manifest["storage"]["audio_codec"]
        self.audio_ext = AUDIO_CODECS[self.codec]
        self.inputs = ClipInputs(cfg, split, rgb="rgb" in self.modalities)

    def __call__(self, members: dict[str, bytes], meta: dict[str, Any], view: int, generator: torch.Generator,
                 where: str) -> dict[str, Any]:
        cfg = self.cfg
        clip_no = view // cfg.num_test_crops if self.split == "test" else 0
        clip = meta["clips"][clip_no]
        num_audio = round(cfg.audio_seconds * cfg.sample_rate)
        if self.split == "train":
            centre = draw_centre(clip["centre_min"], clip["centre_max"], generator)
            frames = [round((t - clip["frame_start"]) / clip["frame_step"]) for t in frame_times(centre, cfg)]
            audio_offset = round((centre - cfg.audio_seconds / 2 - clip["audio_start"]) * cfg.sample_rate)
            audio_offset = min(max(audio_offset, 0), clip["audio_samples"] - num_audio)
        else:
            frames, audio_offset = list(range(clip["frames"])), 0
        rgb = audio = None
        if "rgb" in self.modalities:
            if frames[0] < 0 or frames[-1] >= clip["frames"]:
                raise ShardError(f"{where}: clip frames {frames[0]}..{frames[-1]} outside the {clip['frames']} stored")
            rgb = self._frames(members, clip_no, frames, where)
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
        return {"has_audio": bool(meta["has_audio"]), **self.inputs(rgb, audio, view, generator)}

    @staticmethod
    def _frames(members: dict[str, bytes], clip: int, frames: list[int], where: str) -> torch.Tensor:
        """uint8 [T, H, W, 3] of the stored JPEG frames."""
        images = []
        for k in frames:
            name = frame_name(clip, k)
            if name not in members:
                raise ShardError(f"{where}: member {name} missing")
            try:
                with Image.open(io.BytesIO(members[name])) as image:
                    images.append(np.asarray(image.convert("RGB")))
            except (OSError, ValueError) as e:
                raise ShardError(f"{where}: cannot decode the stored JPEG {name} ({e})") from e
        return torch.from_numpy(np.stack(images))


class ShardDataset(AVDataset):
    """`AVDataset`'s interface over a shard folder: the same items (up to JPEG and 16-bit audio
    coding; train frames within half a grid step of their time), keys `(epoch, index)`, seeded
    augmentation, `skip_bad`, views for test. Items are in annotation order; `dropped` lists the
    videos `prepare_shards` left out (path, reason). `read`: retries and timeouts of URL reads."""

    def __init__(
        self,
        shards: str | os.PathLike[str] | ShardSet,
        cfg: DataConfig,
        split: Split,
        modalities: Sequence[str] = MODALITIES,
        seed: int = 0,
        skip_bad: bool = False,
        annotations: Annotations | None = None,
        read: ReadConfig | None = None,
    ) -> None:
        check_modalities(modalities)
        self.shards = open_shards(shards, read)
        self.shards.check(cfg, split, modalities)
        annotations = annotations if annotations is not None else self.shards.annotations()
        super().__init__(annotations, cfg, split, modalities, seed=seed, skip_bad=skip_bad)
        self.dropped = [(b["path"], b["reason"]) for b in self.shards.report()["left_out"]]
        self._decode = SampleDecoder(self.shards, cfg, split, modalities)
        self._reader = RangeReader(dict(zip(self.shards.urls, self.shards.sizes, strict=True)), self.shards.read)

    @property
    def window_seconds(self) -> float:
        """The window the shards were prepared with (their clip timing)."""
        return self.shards.window_seconds

    def _load(self, item: Item, view: int, generator: torch.Generator) -> dict[str, Any]:
        shard, offset, size = item.extra["shard"]
        url = self.shards.urls[shard]
        where = f"{url} sample {item.extra['key']}"
        members = sample_members(self._reader.read(url, offset, size), where)
        return self._decode(members, sample_meta(members, where), view, generator, where)


