"""Training and evaluation transforms for rgb clips and spectrograms (spec §4.2, §4.3).

All randomness comes from an explicit ``torch.Generator``: a dataset can seed one per
(seed, epoch, index) and get the same augmentation whatever the number of workers. Each
call draws a fixed number of values, so one random choice never shifts the others.

RGB (train), following DMVR/Scenic: short side to ``min_resize``, independent height and
width scale jitter from ``scale_jitter``, a random ``image_size`` crop (same for all
frames), horizontal flip with p=0.5, then with ``color_jitter_prob`` the colour jitter of
``color_default_augm`` (brightness ±32/255 additive, saturation ×[0.6, 1.4] in HSV,
contrast ×[0.6, 1.4] around each frame's per-channel mean, hue ±0.2, in that order; one
draw for the whole clip), then grey (3 channels) with ``color_drop_prob``. The resize,
jitter and crop are done as one `resized_crop` of the source region that the crop covers
(up to rounding of that region to whole source pixels), which is much cheaper than
resizing whole frames first. Values are clipped to [0, 1] before the hue shift as well
as after it (TF clips only after it; the HSV hue of out-of-range values is ill-defined).

RGB (eval/test): short side to ``min_resize`` and a centre crop, or `spatial_crops` for 3
crops along the long side. Output: float32 ``[T, 3, image_size, image_size]`` in [-1, 1].

Spectrogram (train): `spec_augment`, frequency and time masks set to 0 on the normalised
log-mel (0 = the dataset mean).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torchvision.transforms.v2.functional as F

from .config import DataConfig

__all__ = ["VideoTransform", "spatial_crops", "spec_augment", "to_video_tensor"]

BRIGHTNESS_MAX_DELTA = 32.0 / 255.0
SATURATION_RANGE = (0.6, 1.4)
CONTRAST_RANGE = (0.6, 1.4)
HUE_MAX_DELTA = 0.2

_NUM_DRAWS = 11
"""Uniform draws per training call: scale h, scale w, crop y, crop x, flip, colour coin,
brightness, saturation, contrast, hue, drop coin."""


def to_video_tensor(rgb: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` (numpy or torch) -> uint8 tensor ``[T, 3, H, W]``."""
    video = torch.from_numpy(np.ascontiguousarray(rgb)) if isinstance(rgb, np.ndarray) else rgb
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"expected rgb frames [T, H, W, 3], got shape {tuple(video.shape)}")
    if video.dtype != torch.uint8:
        raise ValueError(f"expected uint8 rgb frames, got {video.dtype}")
    if min(video.shape[1:3]) < 1:
        raise ValueError(f"empty frames of shape {tuple(video.shape)}")
    return video.permute(0, 3, 1, 2)


def _to_unit_range(video: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [0, 1], in plain contiguous [T, 3, H, W] layout (the resize keeps
    the frames channels-last, where the per-channel colour ops are several times slower)."""
    return video.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)


def _to_signed_range(video: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1] (Scenic's ``zero_centering``)."""
    return video.mul(2.0).sub_(1.0)


def _resize_short_side(video: torch.Tensor, short_side: int) -> torch.Tensor:
    if min(video.shape[-2:]) == short_side:
        return video
    return F.resize(video, [short_side], antialias=True)


class VideoTransform:
    """uint8 frames ``[T, H, W, 3]`` -> float32 ``[T, 3, S, S]`` in [-1, 1] (``S =
    cfg.image_size``): the training augmentation, or the evaluation centre crop."""

    def __init__(self, cfg: DataConfig, train: bool):
        lo, hi = cfg.scale_jitter
        if not 0 < lo <= hi:
            raise ValueError(f"scale_jitter must be 0 < lo <= hi, got {cfg.scale_jitter}")
        for name in ("color_jitter_prob", "color_drop_prob"):
            if not 0.0 <= getattr(cfg, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(cfg, name)}")
        self.cfg = cfg
        self.train = train

    def __call__(self, rgb: np.ndarray | torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        video = to_video_tensor(rgb)
        if not self.train:
            size = self.cfg.image_size
            video = F.center_crop(_resize_short_side(video, self.cfg.min_resize), [size, size])
            return _to_signed_range(_to_unit_range(video))
        if generator is None:
            raise ValueError("the training transform needs a torch.Generator")
        u = torch.rand(_NUM_DRAWS, generator=generator, dtype=torch.float64).tolist()
        video = self._random_resized_crop(video, u[0:4])
        if self.cfg.flip and u[4] < 0.5:
            video = F.horizontal_flip(video)
        x = _to_unit_range(video)
        if u[5] < self.cfg.color_jitter_prob:
            x = _color_jitter(x, u[6:10])
        if u[10] < self.cfg.color_drop_prob:
            x = F.rgb_to_grayscale(x, num_output_channels=3)
        return _to_signed_range(x)

    def _random_resized_crop(self, video: torch.Tensor, u: list[float]) -> torch.Tensor:
        """Resize (short side to min_resize, then h/w scale jitter) and random crop, done as
        one resize of the source region the crop covers."""
        size = self.cfg.image_size
        height, width = video.shape[-2:]
        lo, hi = self.cfg.scale_jitter
        scale = self.cfg.min_resize / min(height, width)
        jit_h = max(size, round(height * scale * (lo + (hi - lo) * u[0])))
        jit_w = max(size, round(width * scale * (lo + (hi - lo) * u[1])))
        top = math.floor(u[2] * (jit_h - size + 1))
        left = math.floor(u[3] * (jit_w - size + 1))
        src_h = min(height, max(1, round(size * height / jit_h)))
        src_w = min(width, max(1, round(size * width / jit_w)))
        src_top = min(height - src_h, round(top * height / jit_h))
        src_left = min(width - src_w, round(left * width / jit_w))
        return F.resized_crop(video, src_top, src_left, src_h, src_w, [size, size], antialias=True)


def _color_jitter(x: torch.Tensor, u: list[float]) -> torch.Tensor:
    """DMVR's colour augmentation, in place on [0, 1] frames ``[T, 3, H, W]``, one draw for
    the clip. Written with in-place float ops on one scratch buffer: boolean masks and
    ``torch.where`` are several times slower on CPU."""
    scratch = x.new_empty((6, x.shape[0], *x.shape[2:]))
    x.add_((2.0 * u[0] - 1.0) * BRIGHTNESS_MAX_DELTA)
    _adjust_saturation_(x, SATURATION_RANGE[0] + (SATURATION_RANGE[1] - SATURATION_RANGE[0]) * u[1], scratch)
    factor = CONTRAST_RANGE[0] + (CONTRAST_RANGE[1] - CONTRAST_RANGE[0]) * u[2]
    mean = x.mean(dim=(-2, -1), keepdim=True)
    x.sub_(mean).mul_(factor).add_(mean).clamp_(0.0, 1.0)
    _adjust_hue_(x, (2.0 * u[3] - 1.0) * HUE_MAX_DELTA, scratch)
    return x.clamp_(0.0, 1.0)


def _adjust_saturation_(x: torch.Tensor, factor: float, scratch: torch.Tensor) -> torch.Tensor:
    """TF's ``adjust_saturation`` (HSV S times ``factor``, clipped to [0, 1]; H and V kept)
    without the HSV round trip: with V = max and S = (max - min) / max, every channel moves
    towards V by the ratio ``S' / S = clip(V / (max - min), 0, factor)``."""
    value, spread = scratch[0].unsqueeze(-3), scratch[1].unsqueeze(-3)
    torch.amax(x, dim=-3, keepdim=True, out=value)
    torch.amin(x, dim=-3, keepdim=True, out=spread)
    spread.neg_().add_(value).clamp_min_(1e-12)
    ratio = torch.div(value, spread, out=spread).clamp_(0.0, factor)
    return x.sub_(value).mul_(ratio).add_(value)


def _floor_mod6_(k: torch.Tensor, tmp: torch.Tensor) -> torch.Tensor:
    torch.mul(k, 1.0 / 6.0, out=tmp).floor_().mul_(-6.0)
    return k.add_(tmp)


def _adjust_hue_(x: torch.Tensor, delta: float, scratch: torch.Tensor) -> torch.Tensor:
    """Rotate the HSV hue by ``delta`` turns (what ``torchvision``'s ``adjust_hue`` and TF's
    compute, tested against the former), in place on [0, 1] frames. Hue is kept in sextants
    ``h6 in [0, 6)`` and channel ``n`` is rebuilt as ``V - C * clip(min(k, 4 - k), 0, 1)``
    with ``k = (h6 + {5, 3, 1}[n]) mod 6`` and chroma ``C = max - min``."""
    r, g, b = x.unbind(-3)
    vmax, chroma, tmp, hue, hue_g, hue_b = scratch
    torch.maximum(torch.maximum(r, g, out=vmax), b, out=vmax)
    torch.minimum(torch.minimum(r, g, out=chroma), b, out=chroma)
    chroma.neg_().add_(vmax)
    inv = torch.clamp_min(chroma, 1e-12, out=tmp).reciprocal_()
    torch.sub(g, b, out=hue).mul_(inv)  # max is red
    torch.sub(b, r, out=hue_g).mul_(inv).add_(2.0)  # max is green
    torch.sub(r, g, out=hue_b).mul_(inv).add_(4.0)  # max is blue
    # pick red, else green, else blue; sign(max - c) is 0 where c is the max, else 1
    torch.lerp(hue_g, hue_b, torch.sub(vmax, g, out=tmp).sign_(), out=hue_g)
    torch.lerp(hue, hue_g, torch.sub(vmax, r, out=tmp).sign_(), out=hue)
    _floor_mod6_(hue.add_(6.0 * delta), tmp)
    k, w = hue_g, hue_b
    for c, offset in enumerate((5.0, 3.0, 1.0)):
        _floor_mod6_(torch.add(hue, offset, out=k), tmp)
        torch.neg(k, out=w).add_(4.0)
        torch.minimum(k, w, out=k).clamp_(0.0, 1.0)
        x[:, c] = k.mul_(chroma).neg_().add_(vmax)
    return x


def spatial_crops(rgb: np.ndarray | torch.Tensor, cfg: DataConfig, num_crops: int | None = None) -> torch.Tensor:
    """Evaluation views of one clip: float32 ``[num_crops, T, 3, S, S]`` in [-1, 1]. The
    short side is resized to ``min_resize``; 1 crop is the centre, 3 crops are the start,
    centre and end of the long side (left/centre/right or top/centre/bottom)."""
    num_crops = cfg.num_test_crops if num_crops is None else num_crops
    if num_crops not in (1, 3):
        raise ValueError(f"num_test_crops must be 1 or 3, got {num_crops}")
    size = cfg.image_size
    video = _resize_short_side(to_video_tensor(rgb), cfg.min_resize)
    height, width = video.shape[-2:]
    if num_crops == 1:
        views = [F.center_crop(video, [size, size])]
    else:
        top, left = (height - size) // 2, (width - size) // 2
        if width >= height:
            views = [F.crop(video, top, x, size, size) for x in (0, left, width - size)]
        else:
            views = [F.crop(video, y, left, size, size) for y in (0, top, height - size)]
    return _to_signed_range(_to_unit_range(torch.stack(views)))


def spec_augment(spec: torch.Tensor, cfg: DataConfig, generator: torch.Generator) -> torch.Tensor:
    """SpecAugment on a normalised spectrogram ``[..., T, F]`` (same masks for any leading
    dims): ``freq_mask_count`` bands of width ``floor(U * freq_mask_max_bins)`` and
    ``time_mask_count`` spans of width ``floor(U * time_mask_max_frames)`` (at most the
    axis length), each at a uniform start where it fits; masked values become 0."""
    num_time, num_freq = spec.shape[-2:]
    counts = cfg.freq_mask_count + cfg.time_mask_count
    u = torch.rand(2 * counts, generator=generator, dtype=torch.float64).tolist()
    out = spec.clone()
    for k in range(counts):
        is_freq = k < cfg.freq_mask_count
        length = num_freq if is_freq else num_time
        max_width = cfg.freq_mask_max_bins if is_freq else cfg.time_mask_max_frames
        width = min(length, math.floor(u[2 * k] * max_width))
        start = math.floor(u[2 * k + 1] * (length - width + 1))
        if is_freq:
            out[..., start:start + width] = 0.0
        else:
            out[..., start:start + width, :] = 0.0
    return out


