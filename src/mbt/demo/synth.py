"""The demo's audio-visual data set: real mp4 files (H.264 + AAC) generated from a seed.

Each 2-second clip shows a moving square covered by a pattern and plays a sound. The
label is the pair (pattern, sound): 3 patterns x 3 sounds = 9 classes.

- Seen: horizontal stripes, vertical stripes or a checkerboard, in random colours, on a
  square of random size, start and velocity, over a noisy tinted background, with a
  small distractor blob and per-frame noise.
- Heard: a low hum (300-500 Hz), a high whistle (1.8-2.6 kHz) or a rising chirp
  (0.4 -> 3 kHz), starting at a random time for a random duration and loudness, over
  background noise of random level and three distractor clicks.

Why each model should fail or succeed: the picture alone tells the pattern but nothing
about the sound, so a video-only model can at best pick the right third of the classes
(33%); likewise audio only. Both modalities together determine the class (100%). The two
factors are independent, so the answer is a sum of evidence from each modality; late
fusion, which only averages per-modality predictions, can therefore solve it too: this
data shows that fusion is needed, not that MBT fuses better than late fusion.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

PATTERNS = ("horizontal stripes", "vertical stripes", "checkerboard")
SOUNDS = ("low hum", "high whistle", "rising chirp")
CLASSES = tuple(f"{p} + {s}" for p in PATTERNS for s in SOUNDS)


@dataclass(frozen=True)
class SynthConfig:
    """What the generator makes; any change gives a new cache folder."""

    seed: int = 0
    """Everything (labels, pictures, sounds) is a function of this seed."""
    train: int = 720
    """Training clips (balanced over the classes)."""
    val: int = 180
    """Validation clips, used to pick the best epoch."""
    test: int = 270
    """Held-out clips on which accuracy is reported."""
    size: int = 64
    """Frame width and height."""
    fps: int = 8
    """Video frame rate."""
    seconds: float = 2.0
    """Clip length."""
    sample_rate: int = 16000
    """Audio sample rate (mono)."""
    encoding: int = 2
    """Version of the encoding settings, in the cache key so that a change re-encodes (2: x264
    without its macroblock-tree rate control, which on these 64x64 frames made about 2% of
    the files differ from one generation to the next)."""

    def key(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


def default_cache_dir() -> Path:
    """`$MBT_CACHE` or `~/.cache/mbt`."""
    return Path(os.environ.get("MBT_CACHE", Path.home() / ".cache" / "mbt"))


def _picture(rng: np.random.Generator, pattern: int, cfg: SynthConfig) -> np.ndarray:
    """[T, H, W, 3] uint8 frames."""
    n, s = int(cfg.fps * cfg.seconds), cfg.size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    background = rng.uniform(0, 0.35, 3) + rng.normal(0, 0.08, (s, s, 1))
    fg, bg = rng.uniform(0.55, 1.0, 3), rng.uniform(0.0, 0.45, 3)
    half = rng.uniform(10, 15)
    x0, y0 = rng.uniform(half, s - half, 2)
    vx, vy = rng.uniform(-3, 3, 2)
    period = rng.uniform(5.5, 7.0)
    blob_colour, (bx, by), (bvx, bvy) = rng.uniform(0, 1, 3), rng.uniform(4, s - 4, 2), rng.uniform(-2, 2, 2)
    frames = np.empty((n, s, s, 3), np.float32)
    for t in range(n):
        cx, cy = np.clip(x0 + vx * t, half, s - half), np.clip(y0 + vy * t, half, s - half)
        img = background + rng.normal(0, 0.04, (s, s, 1))
        rows = np.sin(2 * np.pi * (yy - cy) / period) > 0
        cols = np.sin(2 * np.pi * (xx - cx) / period) > 0
        stripes = (rows, cols, rows ^ cols)[pattern]
        inside = (np.abs(xx - cx) <= half) & (np.abs(yy - cy) <= half)
        img = np.where((inside & stripes)[..., None], fg, np.where(inside[..., None], bg, img))
        blob = (np.abs(xx - (bx + bvx * t)) <= 3) & (np.abs(yy - (by + bvy * t)) <= 3)
        frames[t] = np.where(blob[..., None], blob_colour, img)
    return (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)


def _sound(rng: np.random.Generator, sound: int, cfg: SynthConfig) -> np.ndarray:
    """[S] float32 mono waveform in [-1, 1]."""
    n = int(cfg.sample_rate * cfg.seconds)
    t = np.arange(n) / cfg.sample_rate
    wave = rng.normal(0, rng.uniform(0.01, 0.05), n)
    onset, duration = rng.uniform(0, cfg.seconds * 0.5), rng.uniform(0.5, 1.0)
    local = t - onset
    envelope = ((local >= 0) & (local < duration)).astype(np.float64)
    if sound == 0:
        phase = 2 * np.pi * rng.uniform(300, 500) * t
    elif sound == 1:
        phase = 2 * np.pi * rng.uniform(1800, 2600) * t
    else:
        f0, f1 = 400.0, 3000.0
        phase = 2 * np.pi * (f0 * local + (f1 - f0) / (2 * duration) * local**2)
    wave += rng.uniform(0.2, 0.6) * envelope * np.sin(phase)
    for click in rng.uniform(0, cfg.seconds, 3):
        i = int(click * cfg.sample_rate)
        wave[i : i + 80] += rng.uniform(-0.5, 0.5)
    return np.clip(wave, -1, 1).astype(np.float32)


def _yuv420p(rgb: np.ndarray) -> np.ndarray:
    """BT.601 limited-range planar YUV 4:2:0 of an even-sized RGB image, computed here
    because FFmpeg's converter rounds differently with the memory alignment of its input,
    which made the files differ from run to run."""
    x = rgb.astype(np.float64)
    y = 16 + 0.257 * x[..., 0] + 0.504 * x[..., 1] + 0.098 * x[..., 2]
    u = 128 - 0.148 * x[..., 0] - 0.291 * x[..., 1] + 0.439 * x[..., 2]
    v = 128 + 0.439 * x[..., 0] - 0.368 * x[..., 1] - 0.071 * x[..., 2]
    h, w = y.shape
    u = u.reshape(h // 2, 2, w // 2, 2).mean((1, 3))
    v = v.reshape(h // 2, 2, w // 2, 2).mean((1, 3))
    planes = [p.round().clip(0, 255).astype(np.uint8) for p in (y, u, v)]
    return np.concatenate([planes[0], planes[1].reshape(h // 4, w), planes[2].reshape(h // 4, w)])


def write_clip(path: Path, frames: np.ndarray, audio: np.ndarray, fps: int, sample_rate: int) -> None:
    """An mp4 with an H.264 video track and an AAC audio track."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        # one thread and no macroblock-tree: the same input gives the same bytes on every run
        video.options = {"crf": "15", "preset": "veryfast", "threads": "1", "x264-params": "no-mbtree=1"}
        sound = container.add_stream("aac", rate=sample_rate)
        sound.layout = "mono"
        for img in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(_yuv420p(img), format="yuv420p")))
        container.mux(video.encode())
        chunk = 1024
        for i in range(0, len(audio), chunk):
            frame = av.AudioFrame.from_ndarray(audio[None, i : i + chunk], format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = sample_rate, i, Fraction(1, sample_rate)
            container.mux(sound.encode(frame))
        container.mux(sound.encode())


def _write_one(job: tuple[SynthConfig, str, int, int, int]) -> None:
    cfg, folder, split_id, i, label = job
    rng = np.random.default_rng([cfg.seed, split_id, i])
    pattern, sound = divmod(label, len(SOUNDS))
    name = Path(folder) / "clips" / f"{_SPLITS[split_id]}_{i:05d}.mp4"
    write_clip(name, _picture(rng, pattern, cfg), _sound(rng, sound, cfg), cfg.fps, cfg.sample_rate)


_SPLITS = ("train", "val", "test")


def generate(cfg: SynthConfig = SynthConfig(), cache_dir: str | os.PathLike | None = None,
             progress: bool = True, workers: int = 1) -> Path:
    """Write the data set (mp4 files, `train.csv` / `val.csv` / `test.csv` manifests and
    `classes.txt`) into a cache folder named by the config, or return it if already there.
    The folder appears only when complete."""
    from concurrent.futures import ProcessPoolExecutor

    from tqdm.auto import tqdm

    root = Path(cache_dir or default_cache_dir()) / f"demo-{cfg.key()}"
    if (root / "complete.json").is_file():
        return root
    tmp = root.with_name(root.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "clips").mkdir(parents=True)
    (tmp / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    jobs = []
    for split_id, split in enumerate(_SPLITS):
        count = getattr(cfg, split)
        labels = np.random.default_rng([cfg.seed, split_id]).permutation(np.arange(count) % len(CLASSES))
        with open(tmp / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label"])
            for i, label in enumerate(labels):
                writer.writerow([f"clips/{split}_{i:05d}.mp4", CLASSES[label]])
                jobs.append((cfg, str(tmp), split_id, i, int(label)))
    with tqdm(total=len(jobs), desc="demo data", unit="clip", disable=not progress) as bar:
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                for _ in pool.map(_write_one, jobs, chunksize=16):
                    bar.update(1)
        else:
            for job in jobs:
                _write_one(job)
                bar.update(1)
    (tmp / "complete.json").write_text(json.dumps({"config": asdict(cfg), "classes": CLASSES}, indent=2))
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)
    return root
