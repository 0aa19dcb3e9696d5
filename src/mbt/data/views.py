"""A clip -> model inputs: the one path shared by media files (`AVDataset`) and shards (`ShardDataset`,
`ShardStream`), so both give the same items for the same seed.

Timing (`mbt.data.dataset` has the rules): a clip is placed by its centre, drawn in training from
`centre_range`, fixed for val and test views (`clip_centre`); its frames are shown at `frame_times`.
`ClipInputs` turns the decoded frames and audio into inputs: the training augmentation, the eval
centre crop or test crop `view`; the spectrogram (`features.spectrogram`: the configured front end,
length and normalisation), and SpecAugment in training. Randomness is drawn from the
item's generator in that order: centre, frames, SpecAugment.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from .augment import VideoTransform, spatial_crops, spec_augment
from .config import DataConfig
from .features import spectrogram

Split = Literal["train", "val", "test"]


def frame_times(centre: float, cfg: DataConfig) -> list[float]:
    """Times of the `num_frames` frames of a clip centred on `centre`, `1 / frame_rate` apart."""
    n, rate = cfg.num_frames, cfg.frame_rate
    return [centre + (i - (n - 1) / 2) / rate for i in range(n)]


def centre_range(start: float, end: float, window: float) -> tuple[float, float]:
    """Centres that keep a `window`-second clip inside `[start, end]` (the middle when it is shorter)."""
    half = min(window / 2, (end - start) / 2)
    return start + half, end - half


def draw_centre(lo: float, hi: float, generator: torch.Generator) -> float:
    """A training centre, uniform in `[lo, hi]`."""
    return lo + (hi - lo) * float(torch.rand((), generator=generator, dtype=torch.float64))


def clip_centre(start: float, end: float, window: float, split: Split, view: int, cfg: DataConfig,
                generator: torch.Generator) -> float:
    """Centre of the clip of `view` in the segment `[start, end]`, at least `window / 2`."""
    lo, hi = centre_range(start, end, window)
    if split == "train":
        centre = draw_centre(lo, hi, generator)
    elif split == "val" or cfg.num_test_clips == 1:
        centre = (start + end) / 2
    else:
        centre = lo + (hi - lo) * (view // cfg.num_test_crops) / (cfg.num_test_clips - 1)
    return max(centre, window / 2)


class ClipInputs:
    """Decoded frames and audio of one clip -> `rgb` and `spectrogram` inputs for a split."""

    def __init__(self, cfg: DataConfig, split: Split, rgb: bool = True) -> None:
        self.cfg, self.split = cfg, split
        self.video_transform = VideoTransform(cfg, train=split == "train") if rgb else None
        """Train augmentation or eval centre crop; test views use `augment.spatial_crops`."""

    def __call__(self, rgb: np.ndarray | torch.Tensor | None, audio: np.ndarray | torch.Tensor | None, view: int,
                 generator: torch.Generator) -> dict[str, Any]:
        """uint8 frames `[T, H, W, 3]` and float32 mono audio (None: not wanted) -> `rgb` float32
        `[T, 3, S, S]` and `spectrogram` float32 `[T_spec, F]`, normalised."""
        cfg, out = self.cfg, {}
        if rgb is not None:
            if self.split == "test":
                out["rgb"] = spatial_crops(rgb, cfg)[view % cfg.num_test_crops]
            else:
                assert self.video_transform is not None
                out["rgb"] = self.video_transform(rgb, generator)
        if audio is not None:
            spec = spectrogram(torch.as_tensor(audio), cfg)
            if self.split == "train":
                spec = spec_augment(spec, cfg, generator)
            out["spectrogram"] = spec
        return out
