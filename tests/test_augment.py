"""Augmentation: shapes, ranges, determinism under a generator, and that each random op
really happens with the configured statistics."""

from __future__ import annotations

import colorsys
import dataclasses

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as F

from mbt.data import augment
from mbt.data.augment import VideoTransform, spec_augment
from mbt.data.config import DataConfig
from mbt.data.decode import read_clip

from .conftest import ASSETS

SMALL = DataConfig(image_size=32, min_resize=40)
PLAIN = dataclasses.replace(SMALL, color_jitter_prob=0.0, color_drop_prob=0.0, flip=False)


def coordinate_video(height: int = 48, width: int = 64, frames: int = 2) -> np.ndarray:
    """Red = column, green = row (scaled to 0..255), blue = 100: where a pixel came from."""
    ys, xs = np.mgrid[0:height, 0:width]
    img = np.stack([xs * 255 // (width - 1), ys * 255 // (height - 1), np.full_like(xs, 100)], -1)
    return np.repeat(img[None].astype(np.uint8), frames, axis=0)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_paper_size_shapes_and_range():
    cfg = DataConfig()
    rgb = np.random.default_rng(0).integers(0, 256, (8, 240, 320, 3), dtype=np.uint8)
    train = VideoTransform(cfg, train=True)(rgb, gen(0))
    val = VideoTransform(cfg, train=False)(rgb)
    views = augment.spatial_crops(rgb, cfg, num_crops=3)
    assert train.shape == val.shape == (8, 3, 224, 224) and views.shape == (3, 8, 3, 224, 224)
    for x in (train, val, views):
        assert x.dtype == torch.float32 and x.min() >= -1.0 and x.max() <= 1.0


def test_eval_is_resize_and_centre_crop():
    rgb = coordinate_video(40, 60)  # short side already min_resize: a pure centre crop
    out = VideoTransform(SMALL, train=False)(rgb)
    expected = torch.from_numpy(rgb[:, 4:36, 14:46]).permute(0, 3, 1, 2).float() * (2 / 255) - 1
    torch.testing.assert_close(out, expected)
    grey = np.full((3, 30, 50, 3), 77, np.uint8)  # resized first; a flat image stays flat
    out = VideoTransform(SMALL, train=False)(grey)
    torch.testing.assert_close(out, torch.full((3, 3, 32, 32), 77 * 2 / 255 - 1), atol=1e-6, rtol=0)


def test_same_generator_seed_same_output_and_fixed_draws():
    rgb = np.random.default_rng(1).integers(0, 256, (4, 50, 70, 3), dtype=np.uint8)
    t = VideoTransform(SMALL, train=True)
    torch.testing.assert_close(t(rgb, gen(5)), t(rgb, gen(5)), rtol=0, atol=0)
    assert not torch.equal(t(rgb, gen(5)), t(rgb, gen(6)))
    # every call draws the same amount, whatever happens, so later draws do not shift
    states = []
    for cfg in (SMALL, PLAIN, dataclasses.replace(SMALL, color_jitter_prob=1.0, color_drop_prob=1.0)):
        g = gen(7)
        VideoTransform(cfg, train=True)(rgb, g)
        states.append(g.get_state())
    assert all(torch.equal(states[0], s) for s in states)
    with pytest.raises(ValueError, match="Generator"):
        t(rgb)


def test_flip_happens_half_the_time():
    rgb = coordinate_video()
    t = VideoTransform(dataclasses.replace(PLAIN, flip=True), train=True)
    flipped = 0
    for seed in range(300):
        red = t(rgb, gen(seed))[0, 0]
        flipped += bool(red[:, 0].mean() > red[:, -1].mean())  # red grows left to right unless flipped
    assert 0.42 < flipped / 300 < 0.58
    never = VideoTransform(PLAIN, train=True)
    assert all(never(rgb, gen(s))[0, 0, :, 0].mean() < never(rgb, gen(s))[0, 0, :, -1].mean() for s in range(20))


def test_crop_and_scale_jitter_statistics():
    """From a coordinate image, recover where each crop came from and how much it was scaled."""
    height, width = 48, 64
    rgb = coordinate_video(height, width)
    t = VideoTransform(PLAIN, train=True)
    base = PLAIN.min_resize / min(height, width)
    factors_w, lefts = [], []
    for seed in range(300):
        out = (t(rgb, gen(seed))[0] + 1) * (255 / 2)  # back to 0..255
        x_left = float(out[0, :, 0].mean()) * (width - 1) / 255
        x_right = float(out[0, :, -1].mean()) * (width - 1) / 255
        span = (x_right - x_left) * PLAIN.image_size / (PLAIN.image_size - 1)  # source pixels covered
        factors_w.append(PLAIN.image_size / (span * base))
        lefts.append(x_left)
    factors_w, lefts = np.array(factors_w), np.array(lefts)
    lo, hi = PLAIN.scale_jitter
    assert factors_w.min() > lo - 0.06 and factors_w.max() < hi + 0.06
    assert abs(factors_w.mean() - (lo + hi) / 2) < 0.04
    assert lefts.min() < 3 and lefts.max() > 12  # the crop position varies over the frame


def test_colour_jitter_and_drop_probabilities():
    rgb = np.random.default_rng(2).integers(30, 220, (2, 40, 40, 3), dtype=np.uint8)
    full = VideoTransform(SMALL, train=True)
    geometry_only = VideoTransform(dataclasses.replace(SMALL, color_jitter_prob=0.0, color_drop_prob=0.0),
                                   train=True)
    jittered = dropped = 0
    n = 300
    for seed in range(n):
        a, b = full(rgb, gen(seed)), geometry_only(rgb, gen(seed))
        grey = torch.equal(a[:, 0], a[:, 1]) and torch.equal(a[:, 1], a[:, 2])
        dropped += grey
        if not grey:
            jittered += not torch.equal(a, b)
    assert abs(dropped / n - SMALL.color_drop_prob) < 0.05
    assert abs(jittered / (n - dropped) - SMALL.color_jitter_prob) < 0.07


def test_neutral_colour_draws_are_identity_and_brightness_is_additive():
    x = torch.rand(2, 3, 8, 8, generator=gen(0)) * 0.8 + 0.1
    torch.testing.assert_close(augment._color_jitter(x.clone(), [0.5, 0.5, 0.5, 0.5]), x, atol=1e-5, rtol=0)
    brighter = augment._color_jitter(x.clone(), [1.0, 0.5, 0.5, 0.5])
    torch.testing.assert_close(brighter, (x + 32 / 255).clamp(0, 1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("delta", [-0.2, -0.07, 0.0, 0.13, 0.2, 0.5])
def test_hue_matches_torchvision(delta):
    x = torch.rand(3, 3, 17, 19, generator=gen(1))
    x[0, :, 0, :3] = torch.tensor([[0.5, 0.2, 0.7], [0.5, 0.7, 0.7], [0.5, 0.7, 0.2]])  # grey and ties
    ours = augment._adjust_hue_(x.clone(), delta, x.new_empty((6, 3, 17, 19)))
    torch.testing.assert_close(ours, F.adjust_hue(x, delta), atol=1e-5, rtol=0)


@pytest.mark.parametrize("factor", [0.6, 0.95, 1.4])
def test_saturation_matches_hsv_scaling(factor):
    x = torch.rand(1, 3, 6, 7, generator=gen(2))
    ours = augment._adjust_saturation_(x.clone(), factor, x.new_empty((6, 1, 6, 7)))
    for i in range(6):
        for j in range(7):
            h, s, v = colorsys.rgb_to_hsv(*x[0, :, i, j].tolist())
            expected = colorsys.hsv_to_rgb(h, min(s * factor, 1.0), v)
            np.testing.assert_allclose(ours[0, :, i, j].numpy(), expected, atol=1e-5)


def test_one_pixel_video_gives_a_valid_crop():
    clip = read_clip(f"{ASSETS}/media/moviepy_bitmap_1x1_noaudio.mp4", [0.0, 1.0], 0.0, 0.0)
    assert clip.rgb.shape == (2, 1, 1, 3)
    cfg = DataConfig()
    value = torch.from_numpy(clip.rgb[:, 0, 0]).float() * (2 / 255) - 1  # [T, 3]
    for out in (VideoTransform(cfg, train=False)(clip.rgb),
                VideoTransform(dataclasses.replace(cfg, color_jitter_prob=0.0, color_drop_prob=0.0),
                               train=True)(clip.rgb, gen(0)),
                augment.spatial_crops(clip.rgb, cfg, 3)[2]):
        assert out.shape == (2, 3, 224, 224)
        torch.testing.assert_close(out, value[:, :, None, None].expand_as(out), atol=2e-6, rtol=0)
    assert VideoTransform(cfg, train=True)(clip.rgb, gen(1)).shape == (2, 3, 224, 224)


def test_three_crops_cover_the_long_side():
    for height, width in ((40, 64), (64, 40)):
        rgb = coordinate_video(height, width)
        views = augment.spatial_crops(rgb, SMALL, num_crops=3)
        assert views.shape == (3, 2, 3, 32, 32)
        channel, axis = (0, -1) if width > height else (1, -2)  # red = column, green = row
        starts = [float(v[0, channel].select(axis, 0).mean()) for v in views]
        ends = [float(v[0, channel].select(axis, -1).mean()) for v in views]
        assert starts[0] == pytest.approx(-1.0, abs=1e-6) and ends[2] == pytest.approx(1.0, abs=1e-6)
        assert starts[0] < starts[1] < starts[2]
        torch.testing.assert_close(augment.spatial_crops(rgb, SMALL, 1)[0], VideoTransform(SMALL, False)(rgb))
        torch.testing.assert_close(views[1], VideoTransform(SMALL, False)(rgb))
    with pytest.raises(ValueError, match="num_test_crops"):
        augment.spatial_crops(coordinate_video(), SMALL, 2)


def test_bad_inputs_are_rejected():
    t = VideoTransform(SMALL, train=False)
    with pytest.raises(ValueError, match="uint8"):
        t(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        t(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="scale_jitter"):
        VideoTransform(dataclasses.replace(SMALL, scale_jitter=(1.2, 0.9)), train=True)


def test_spec_augment_masks():
    cfg = DataConfig()
    spec = torch.randn(800, 128, generator=gen(0)) + 5.0  # no natural zeros
    out = spec_augment(spec, cfg, gen(1))
    assert out.shape == spec.shape and torch.all(spec > 0)  # input untouched
    torch.testing.assert_close(spec_augment(spec, cfg, gen(1)), out)
    widths = []
    for seed in range(400):
        masked = spec_augment(spec, cfg, gen(seed)) == 0
        cols = masked.all(dim=0)
        assert torch.equal(masked, cols.expand_as(masked))  # whole frequency bands, no time masks
        idx = torch.nonzero(cols).flatten()
        if len(idx):
            assert idx.max() - idx.min() + 1 == len(idx)  # one contiguous band
        widths.append(len(idx))
    widths = np.array(widths)
    assert widths.max() < cfg.freq_mask_max_bins and abs(widths.mean() - (cfg.freq_mask_max_bins - 1) / 2) < 2.5
    timed = dataclasses.replace(cfg, freq_mask_count=0, time_mask_count=2, time_mask_max_frames=100)
    masked = spec_augment(spec, timed, gen(3)) == 0
    rows = masked.all(dim=1)
    assert torch.equal(masked, rows[:, None].expand_as(masked)) and 0 < rows.sum() < 200
