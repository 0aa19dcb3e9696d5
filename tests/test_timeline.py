"""`mbt predict --timeline`: sliding windows over long videos, decoded in one streamed pass."""

from __future__ import annotations

import csv
import json
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

import mbt
from mbt.cli import main
from mbt.data.annotations import Annotations, Item
from mbt.data.config import DataConfig
from mbt.data.dataset import AVDataset
from mbt.demo.run import _demo_data, _demo_model
from mbt.demo.synth import CLASSES
from mbt.models.mbt import class_probabilities
from mbt.timeline import INTERLEAVE_S, clip_centres, timeline, window_starts

from .conftest import randomize


def _write(path, levels, fps=8, size=32, sample_rate=16000, audio=True):
    """H.264 video whose frame k is a flat grey `levels[k]`, with a chirp (so a misplaced
    audio window gives a different spectrogram)."""
    seconds = len(levels) / fps
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=fps)
        vs.width = vs.height = size
        vs.pix_fmt = "yuv420p"
        vs.options = {"preset": "ultrafast"}
        if audio:
            a = c.add_stream("aac", rate=sample_rate)
            a.layout = "mono"
        for level in levels:
            img = np.full((size, size, 3), level, np.uint8)
            c.mux(vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        c.mux(vs.encode())
        if audio:
            t = np.arange(round(seconds * sample_rate)) / sample_rate
            wav = (0.3 * np.sin(2 * np.pi * (200 + 150 * t) * t)).astype(np.float32)
            for k in range(0, len(wav), 1024):
                frame = av.AudioFrame.from_ndarray(wav[None, k:k + 1024], format="fltp", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = sample_rate, k, Fraction(1, sample_rate)
                c.mux(a.encode(frame))
            c.mux(a.encode())
    return str(path)


def _brightness_model(path):
    """An rgb model whose answer is known: hand-set weights make it 'bright' when the mean
    pixel is above mid-grey, 'dark' below. Every block's branches are zero (the residual
    stream passes through), patch tokens are [mean, -mean, 0...], global average pooling,
    the final LayerNorm turns the sign into +-1 and the head reads it."""
    cfg = mbt.MBTConfig(num_classes=2, label_names=("bright", "dark"), multi_label=False, modalities=("rgb",),
                        hidden_size=8, num_layers=1, num_heads=2, mlp_dim=8, fusion_layer=1, patch_size=(16, 16),
                        temporal_encoding="temporal_sampling", num_frames=2, n_sampled_frames=2,
                        image_size=(32, 32), classifier="gap", stochastic_depth=0.0)
    model = mbt.MBT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        w = model.embeddings["rgb"].proj.weight
        w[0], w[1] = 1 / w[0].numel(), -1 / w[0].numel()
        model.norm.weight.fill_(1.0)
        model.head.weight[0, :2] = torch.tensor([1.0, -1.0])
        model.head.weight[1, :2] = torch.tensor([-1.0, 1.0])
    model.save_pretrained(path, data_config=DataConfig(num_frames=2, frame_rate=1.0, image_size=32, min_resize=32))
    return path


@pytest.fixture(scope="module")
def brightness_model(tmp_path_factory):
    return _brightness_model(tmp_path_factory.mktemp("bright"))


def test_window_placement():
    assert window_starts(10.0, 4.0, 2.0) == [0.0, 2.0, 4.0, 6.0]
    assert window_starts(9.0, 4.0, 2.0) == [0.0, 2.0, 4.0, 5.0]  # a last window ends at the end
    assert window_starts(1.5, 4.0, 2.0) == [0.0]
    assert clip_centres(10.0, 2.0, 2.0) == [11.0]
    assert clip_centres(0.0, 6.0, 2.0) == [1.0, 3.0, 5.0]  # covering, each clip inside the window
    with pytest.raises(ValueError, match="hop"):
        window_starts(10.0, 4.0, 0.0)


def test_the_right_window_wins(brightness_model, tmp_path):
    # 20 s bright, then 20 s dark
    video = _write(tmp_path / "day_night.mp4", [220] * 160 + [35] * 160, audio=False)
    tl = timeline(mbt.Predictor(brightness_model), video, window=2.0, hop=1.0)
    assert len(tl.starts) == 39 and tl.stats["passes"] == 1
    top = [t[0][0] for t in tl.top(1)]
    assert all(top[w] == "bright" for w in range(len(top)) if tl.ends[w] <= 20.0)
    assert all(top[w] == "dark" for w in range(len(top)) if tl.starts[w] >= 20.0)
    assert top.count("bright") >= 18 and top.count("dark") >= 19
    assert tl.modalities == ("rgb",) and tl.note == ""


def test_decoding_is_streamed_in_bounded_memory(brightness_model, tmp_path):
    """One demux pass, and the frames held at once bounded by what a window needs, whatever
    the length of the video."""
    predictor = mbt.Predictor(brightness_model)
    peaks = []
    for seconds in (20, 160):
        levels = [220 if (k // 80) % 2 == 0 else 35 for k in range(8 * seconds)]
        tl = timeline(predictor, _write(tmp_path / f"v{seconds}.mp4", levels, audio=False), window=2.0, hop=1.0)
        assert tl.stats["passes"] == 1
        peaks.append(tl.stats["peak_frames_held"])
    assert tl.stats["frames_requested"] >= 150  # the long video asks for many frames...
    assert peaks[0] == peaks[1] <= 2 * 2  # ...but never holds more than two windows' frames


@pytest.mark.parametrize("changes", [
    {}, {"spectrogram_patch_stride": (10, 8), "distillation_token": True, "head_norm": True, "gelu": "exact"},
])
def test_windows_match_clip_by_clip_reading(tmp_path, changes):
    """The streamed frames and audio of a window give the model the same inputs as reading
    that clip on its own (`AVDataset`, which seeks to it); also with an AST-style spectrogram
    tower (overlapping patches, distillation token)."""
    model = randomize(mbt.MBT(_demo_model().replace(label_names=CLASSES, **changes)), seed=3)
    data = _demo_data()
    video = _write(tmp_path / "v.mp4", [int(v) for v in np.linspace(20, 230, 96)], size=64)  # 12 s
    predictor = mbt.Predictor(model, data)
    tl = timeline(predictor, video, window=2.0, hop=1.5)
    assert tl.modalities == ("spectrogram", "rgb")
    for w in (1, 3, 6):  # interior windows (no padding)
        s, e = float(tl.starts[w]), float(tl.ends[w])
        ds = AVDataset(Annotations([Item(video, (), s, e, video_id="v")], list(CLASSES)), data, "val",
                       modalities=model.config.modalities)
        item = ds[0]
        with torch.no_grad():
            logits = model({m: item[m][None] for m in model.config.modalities}).logits[0]
        expected = class_probabilities(logits, model.config.multi_label, model.config.class_splits)
        np.testing.assert_allclose(tl.scores[w], expected.numpy(), atol=2e-5)


def test_cli_writes_csv_json_and_png(brightness_model, tmp_path, capsys):
    video = _write(tmp_path / "v.mp4", [220] * 40 + [35] * 40)
    out = tmp_path / "tl"
    assert main(["predict", video, "--model", str(brightness_model), "--timeline", str(out), "--topk", "2",
                 "--window", "3", "--hop", "1", "--no-progress"]) == 0
    assert "8 windows of 3 s every 1 s" in capsys.readouterr().out
    with open(out / "timeline.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["start", "end", "top1", "p1", "top2", "p2"]
    assert [r["top1"] for r in rows][:2] == ["bright"] * 2 and rows[-1]["top1"] == "dark"
    assert rows[-1]["end"] == "10.000"
    doc = json.loads((out / "timeline.json").read_text())
    assert doc["window"] == 3.0 and len(doc["windows"]) == 8 and doc["windows"][0]["top"][0]["label"] == "bright"
    assert (out / "timeline.png").read_bytes()[:4] == b"\x89PNG"


def test_a_track_that_ends_early_does_not_fill_memory(tmp_path):
    """60 s of video with 5 s of sound: once the audio is gone its windows are silent, and
    the frames of the rest of the video are not all decoded and held while waiting for it."""
    from .synth_media import tone, write_media

    video = str(write_media(tmp_path / "v.mp4", num_frames=480, fps=8, size=(64, 64), sample_rate=16000,
                            signal=tone(440), audio_seconds=5.0))
    model = randomize(mbt.MBT(_demo_model().replace(label_names=CLASSES)), seed=3)
    tl = timeline(mbt.Predictor(model, _demo_data()), video, window=2.0, hop=1.0)
    assert len(tl.starts) == 59 and tl.modalities == ("spectrogram", "rgb")
    # the frames of INTERLEAVE_S seconds (2 requested per second) and a window, not the file's 112
    assert tl.stats["peak_frames_held"] <= 2 * (INTERLEAVE_S + 4)
