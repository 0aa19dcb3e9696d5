"""The demo's generated data set and the demo run (at a tiny size: the full demo's
accuracy is measured by `mbt demo` itself and recorded in the README)."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import replace

import numpy as np
import pytest

import mbt
from mbt.data.decode import probe, read_clip
from mbt.demo import CLASSES, DemoConfig, SynthConfig, generate, run_demo
from mbt.demo.synth import SOUNDS

SMALL = SynthConfig(train=18, val=9, test=9)
pytestmark = pytest.mark.slow  # the demo: its clips generated and encoded, its runs


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    return generate(SMALL, tmp_path_factory.mktemp("cache"), progress=False, workers=2)


def test_clips_are_real_h264_aac_mp4_with_balanced_labels(demo_data):
    with open(demo_data / "train.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 18 and {r["label"] for r in rows} == set(CLASSES)
    assert (demo_data / "classes.txt").read_text().split("\n")[:9] == list(CLASSES)
    info = probe(str(demo_data / rows[0]["path"]))
    assert info.video.codec == "h264" and info.audio.codec == "aac"
    assert (info.video.width, info.video.height) == (64, 64)
    assert abs(info.duration - 2.0) < 0.1


def test_generation_is_cached_and_deterministic(demo_data, tmp_path):
    before = os.path.getmtime(demo_data / "clips" / "train_00000.mp4")
    assert generate(SMALL, demo_data.parent, progress=False) == demo_data
    assert os.path.getmtime(demo_data / "clips" / "train_00000.mp4") == before
    again = generate(SMALL, tmp_path, progress=False, workers=1)
    # byte for byte, every file (x264's macroblock-tree made ~2% of them differ between runs)
    files = sorted(p.name for p in (demo_data / "clips").iterdir())
    assert len(files) == 36 and files == sorted(p.name for p in (again / "clips").iterdir())
    assert [f for f in files if (demo_data / "clips" / f).read_bytes() != (again / "clips" / f).read_bytes()] == []
    a = read_clip(str(demo_data / "clips" / "test_00003.mp4"), [0.5, 1.5], 0.0, 2.0)
    b = read_clip(str(again / "clips" / "test_00003.mp4"), [0.5, 1.5], 0.0, 2.0)
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_allclose(a.audio, b.audio, atol=1e-6)
    assert generate(replace(SMALL, seed=1), tmp_path, progress=False) != again


def _dominant_hz(audio: np.ndarray, sr: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(audio))
    return float(np.fft.rfftfreq(len(audio), 1 / sr)[spectrum.argmax()])


def _stripe_direction(frame: np.ndarray) -> str:
    grey = frame.astype(np.float64).mean(-1)
    rows = np.abs(np.diff(grey, axis=0)).mean()
    cols = np.abs(np.diff(grey, axis=1)).mean()
    return "rows" if rows > cols else "cols"


def test_each_modality_carries_its_factor(demo_data):
    """The sound's frequency tells the sound, the stripes' direction tells the pattern:
    the label needs both (what the demo is built on)."""
    with open(demo_data / "train.csv") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        pattern, sound = row["label"].split(" + ")
        clip = read_clip(str(demo_data / row["path"]), [1.0], 0.0, 2.0)
        hz = _dominant_hz(clip.audio)
        if sound == "low hum":
            assert 250 < hz < 550
        elif sound == "high whistle":
            assert 1700 < hz < 2700
        else:
            assert sound == SOUNDS[2]
        if pattern != "checkerboard":  # stripes change across rows (horizontal) or across columns
            x, y = np.unravel_index(np.argmax(np.abs(np.diff(clip.rgb[0].mean(-1), axis=0))), (63, 64))
            crop = clip.rgb[0][max(x - 6, 0) : x + 6, max(y - 6, 0) : y + 6]
            assert _stripe_direction(crop) == ("rows" if pattern.startswith("horizontal") else "cols")


def test_demo_run_writes_table_pictures_and_a_usable_model(demo_data, tmp_path):
    cfg = DemoConfig(out=str(tmp_path / "out"), data=SMALL, cache_dir=str(demo_data.parent),
                     variants=("video only", "bottleneck (MBT)"), workers=0)
    cfg.train = replace(cfg.train, epochs=1, batch_size=6)
    report = run_demo(cfg, progress=False)
    assert [r["variant"] for r in report["rows"]] == ["video only", "bottleneck (MBT)"]
    for row in report["rows"]:
        assert 0 <= row["accuracy"] <= 100 and row["gflops"] > 0 and row["params_k"] > 0
    out = tmp_path / "out"
    for name in ("results.json", "results.md", "curves.png", "accuracy.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| bottleneck (MBT) |" in (out / "results.md").read_text()
    assert json.loads((out / "results.json").read_text())["clips"] == {"train": 18, "val": 9, "test": 9}
    model = mbt.MBT.from_pretrained(out / "model")
    assert model.config.label_names == CLASSES and model.config.fusion == "bottleneck"
    pred = mbt.predict(str(demo_data / "clips" / "test_00000.mp4"), out / "model")[0]
    assert len(pred.top) == 5 and abs(sum(pred.scores) - 1) < 1e-5


