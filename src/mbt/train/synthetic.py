"""A generated audio-visual data set with the interface of `mbt.data.dataset.AVDataset`.

`dataset.format='synthetic'` trains and evaluates the whole stack (sampling, mixup, DDP,
checkpoints, multi-clip evaluation) without any media file: for smoke tests, benchmarks
of the training step, and the tests of the trainer. Each class owns a fixed random
picture pattern and a fixed spectral band; an example is noise plus the patterns of its
labels at a random strength, so the task is learnable from either modality. Examples are
a pure function of `(seed, split, video, view)` and of `(epoch, index)` for the training
noise, like AVDataset's items.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..data.annotations import Annotations, Item
from ..data.config import DataConfig
from ..data.dataset import MODALITIES, item_seed
from ..models.config import MBTConfig

_SPLIT_IDS = {"train": 1, "val": 2, "test": 3}


def synthetic_annotations(model: MBTConfig, split: str, num_videos: int, seed: int = 0) -> Annotations:
    """`num_videos` items whose labels fit the model's label space, drawn from `seed`."""
    rng = np.random.default_rng([seed, _SPLIT_IDS[split]])
    c = model.num_classes
    items = []
    for v in range(num_videos):
        if model.multi_label:
            labels = tuple(int(k) for k in np.flatnonzero(rng.random(c) < min(0.5, 2.0 / c)))
            labels = labels or (int(rng.integers(c)),)
        elif model.class_splits:
            offsets = np.cumsum([0, *model.class_splits[:-1]])
            labels = tuple(int(o + rng.integers(n)) for o, n in zip(offsets, model.class_splits, strict=True))
        else:
            labels = (int(rng.integers(c)),)
        items.append(Item(f"synthetic://{split}/{v}", labels, video_id=f"synthetic-{split}-{v:05d}"))
    names = list(model.label_names) if model.label_names else [f"class{k}" for k in range(c)]
    return Annotations(
        items,
        names,
        multi_label=model.multi_label,
        class_splits=tuple(model.class_splits or ()),
        split_names=tuple(model.split_names or ()),
        format="synthetic",
        sources=(f"synthetic:{split}",),
    )


class SyntheticAVDataset(torch.utils.data.Dataset):
    """Generated clips, returned as AVDataset returns them (`rgb` [T, 3, H, W],
    `spectrogram` [T_spec, F], `label`, `label_index`, `has_audio`, `video_id`,
    `clip_index`, `index`); the test split has `num_test_clips * num_test_crops` views per
    video, views of a video consecutive."""

    def __init__(
        self,
        model: MBTConfig,
        data: DataConfig,
        split: str,
        num_videos: int,
        seed: int = 0,
        modalities: tuple[str, ...] | None = None,
    ) -> None:
        if split not in _SPLIT_IDS:
            raise ValueError(f"split must be one of {list(_SPLIT_IDS)}, got {split!r}")
        self.annotations = synthetic_annotations(model, split, num_videos, seed)
        self.items = self.annotations.items
        self.cfg, self.split, self.seed = data, split, seed
        self.modalities = tuple(modalities or model.modalities)
        unknown = [m for m in self.modalities if m not in MODALITIES]
        if unknown:
            raise ValueError(f"unknown modalities {unknown}")
        self.views = data.num_test_clips * data.num_test_crops if split == "test" else 1
        self.num_classes = model.num_classes
        self.single_label = not model.multi_label and not model.class_splits
        self.epoch = 0
        self.dropped: list[tuple[str, str]] = []
        g = torch.Generator().manual_seed(seed)
        size = data.image_size
        self._rgb_patterns = torch.randn(self.num_classes, 3, size, size, generator=g)
        bins = data.num_mel_bins
        centres = torch.randint(0, bins, (self.num_classes,), generator=g)
        freq = torch.arange(bins)
        self._spec_patterns = torch.exp(-0.5 * ((freq[None] - centres[:, None]) / 2.0) ** 2)

    def __len__(self) -> int:
        return len(self.items) * self.views

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} entries")
        video, view = divmod(index, self.views)
        item = self.items[video]
        noise_epoch = epoch if self.split == "train" else 0
        seed = item_seed(self.seed * 7 + _SPLIT_IDS[self.split], noise_epoch, index)
        g = torch.Generator().manual_seed(seed)
        strength = 1.0 + torch.rand((), generator=g)
        labels = list(item.labels)
        cfg = self.cfg
        out: dict[str, Any] = {"has_audio": True}
        if "rgb" in self.modalities:
            pattern = self._rgb_patterns[labels].sum(0)
            noise = torch.randn(cfg.num_frames, 3, cfg.image_size, cfg.image_size, generator=g)
            out["rgb"] = (0.5 * strength * pattern + noise).clamp(-3, 3) / 3
        if "spectrogram" in self.modalities:
            band = self._spec_patterns[labels].sum(0)
            # its own stream: a clip's spectrogram does not depend on whether its frames are read
            noise = torch.randn(cfg.num_spectrogram_frames, cfg.num_mel_bins,
                                generator=torch.Generator().manual_seed(seed ^ 1))
            out["spectrogram"] = strength * band + noise
        label = torch.zeros(self.num_classes)
        label[labels] = 1.0
        out.update(
            label=label,
            label_index=labels[0] if self.single_label else -1,
            video_id=item.video_id,
            clip_index=view,
            index=index,
        )
        return out
