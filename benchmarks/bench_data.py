"""Data pipeline throughput per worker: decode + log-mel + train augmentation, against the
time plain PyAV (FFmpeg) needs to decode exactly the same frames and audio (the floor).

    python benchmarks/bench_data.py [--rounds 7] [--clips 6] [--json out.json] [--markdown]

It writes a few 10-s H.264 + AAC videos with natural-ish content (a panning, zooming
multi-scale texture with moving shapes and grain; a vibrato tone with noise bursts) into a
temp folder, in two sizes (320x240 at 30 fps, 398x224 at 25 fps) and two keyframe layouts
(x264's default keyint 250, i.e. one keyframe per 10-s clip as in re-encoded AudioSet or
VGGSound clips, and a 2-s GOP). Each round decodes the same random training clips (8
frames at 3.125 frames/s, 8 s of audio, the dataset's timing) with every variant, clip by
clip in rotating order so that machine load hits them alike; the report gives medians over
rounds. One process, one torch thread, one decoder thread: one data-loader worker.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from fractions import Fraction

import av
import numpy as np
import torch
import torchvision

from mbt.data import decode
from mbt.data.augment import VideoTransform, spec_augment
from mbt.data.config import DataConfig
from mbt.data.decode import read_clip
from mbt.data.features import log_mel

CFG = DataConfig()
SR = CFG.sample_rate
VIDEOS = [  # name, width, height, fps, keyint
    ("320x240_30fps_keyint250", 320, 240, 30, None),
    ("320x240_30fps_gop2s", 320, 240, 30, 60),
    ("398x224_25fps_keyint250", 398, 224, 25, None),
    ("398x224_25fps_gop2s", 398, 224, 25, 50),
]
SECONDS = 10.0


# ---------------------------------------------------------------------------- test media
def _smooth_noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Multi-scale colour noise: large blobs plus finer detail, like a natural texture."""
    img = np.zeros((h, w, 3))
    for scale, weight in ((64, 1.0), (16, 0.5), (4, 0.25)):
        coarse = torch.from_numpy(rng.standard_normal((1, 3, h // scale + 2, w // scale + 2)))
        img += weight * torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic",
                                                        align_corners=False)[0].permute(1, 2, 0).numpy()
    img = (img - img.min()) / (img.max() - img.min())
    return img * 255


def write_video(path: str, width: int, height: int, fps: int, keyint: int | None, seed: int) -> None:
    rng = np.random.default_rng(seed)
    texture = _smooth_noise(rng, 2 * height, 2 * width)
    n = round(SECONDS * fps)
    with av.open(path, "w") as c:
        vs = c.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.options = {"crf": "23"} | ({"g": str(keyint), "keyint_min": str(keyint)} if keyint else {})
        ast = c.add_stream("aac", rate=44100)
        ast.layout = "stereo"
        discs = rng.uniform(0, 1, (3, 4))  # x, y, vx, vy
        yy, xx = np.mgrid[0:height, 0:width]
        for k in range(n):
            t = k / fps
            zoom = 1.0 + 0.3 * math.sin(2 * math.pi * t / SECONDS)
            y0 = int((height / 2) * (0.5 + 0.5 * math.sin(t / 3)))
            x0 = int((width / 2) * (0.5 + 0.5 * math.cos(t / 4)))
            hh, ww = int(height * zoom), int(width * zoom)
            crop = torch.from_numpy(texture[y0:y0 + hh, x0:x0 + ww].copy()).permute(2, 0, 1)[None]
            frame = torch.nn.functional.interpolate(crop, size=(height, width), mode="bilinear",
                                                    align_corners=False)[0].permute(1, 2, 0).numpy()
            for d in discs:
                cx = (d[0] + 0.1 * d[2] * t) % 1 * width
                cy = (d[1] + 0.1 * d[3] * t) % 1 * height
                frame[(xx - cx) ** 2 + (yy - cy) ** 2 < (0.08 * height) ** 2] = 255 * d[[2, 3, 0]]
            frame = np.clip(frame + rng.normal(0, 3, frame.shape), 0, 255).astype(np.uint8)
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts, vf.time_base = k, Fraction(1, fps)
            for p in vs.encode(vf):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        t = np.arange(round(SECONDS * 44100)) / 44100
        f0 = 220 * (1 + 0.02 * np.sin(2 * np.pi * 5 * t))
        tone = 0.2 * np.sin(2 * np.pi * np.cumsum(f0) / 44100) + 0.1 * np.sin(4 * np.pi * np.cumsum(f0) / 44100)
        bursts = rng.standard_normal(len(t)) * 0.1 * (np.sin(2 * np.pi * 0.7 * t) > 0.6)
        wav = np.stack([tone + bursts, tone - 0.5 * bursts]).astype(np.float32)
        for k in range(0, wav.shape[1], 1024):
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(wav[:, k:k + 1024]), format="fltp",
                                            layout="stereo")
            af.sample_rate, af.pts = 44100, k
            for p in ast.encode(af):
                c.mux(p)
        for p in ast.encode():
            c.mux(p)


def training_clips(rng: np.random.Generator, n: int) -> list[tuple[list[float], float]]:
    """The dataset's training timing: a random centre; 8 frames around it, 8 s of audio
    centred on it (from 0 when that would start before the file)."""
    clips = []
    for _ in range(n):
        centre = rng.uniform(CFG.clip_seconds / 2, SECONDS - CFG.clip_seconds / 2)
        first = centre - CFG.clip_seconds / 2
        clips.append(([first + k / CFG.frame_rate for k in range(CFG.num_frames)],
                      max(centre - CFG.audio_seconds / 2, 0.0)))
    return clips


# ---------------------------------------------------------------------------- the floor
def bare_pyav(path: str, times: list[float], audio_start: float) -> tuple[np.ndarray, np.ndarray]:
    """FFmpeg alone, doing the least work for the same frames and audio: the video from the
    keyframe before the first frame (FFmpeg's seek) to the frame after the last; the
    audio from 0.2 s before the window to its end (plus the start of the track when the
    window wraps), resampled to 16 kHz mono; picked frames converted to RGB at their size."""
    n_audio = round(CFG.audio_seconds * SR)
    with av.open(path) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        v.codec_context.thread_type, v.codec_context.thread_count = "SLICE", 1
        c.seek(int(times[0] / v.time_base), stream=v)  # FFmpeg goes to the keyframe before
        picked, prev, k = [], None, 0
        for frame in c.decode(v):
            while k < len(times) and frame.time > times[k] + 1e-6:
                picked.append(prev.to_ndarray(format="rgb24", threads=1))
                k += 1
            if k == len(times):
                break
            prev = frame
        picked += [prev.to_ndarray(format="rgb24", threads=1)] * (len(times) - k)

        def audio_from(start: float, samples: int) -> np.ndarray:
            c.seek(max(0, int((start - 0.2) / a.time_base)), stream=a)
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SR)
            chunks, end = [], 0
            for frame in c.decode(a):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray()[0])
                    end = out.pts + out.samples
                if end >= round(start * SR) + samples:
                    break
            return np.concatenate(chunks)

        audio = [audio_from(audio_start, n_audio)]
        wrapped = round(audio_start * SR) + n_audio - math.floor(float(a.duration * a.time_base) * SR)
        if wrapped > 0:
            audio.append(audio_from(0.0, wrapped))
    return np.stack(picked), np.concatenate(audio)


# ---------------------------------------------------------------------------- the pipeline
class Pipeline:
    """Decode + log-mel + train augmentation for one clip, timed by stage."""

    def __init__(self, **read_kwargs: object):
        self.read_kwargs = read_kwargs
        self.transform = VideoTransform(CFG, train=True)
        self.stages: dict[str, list[float]] = {"decode": [], "log_mel": [], "video_aug": [], "spec_aug": []}

    def __call__(self, path: str, times: list[float], audio_start: float, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        t0 = time.perf_counter()
        clip = read_clip(path, times, audio_start, CFG.audio_seconds, SR, CFG.pad_mode, **self.read_kwargs)
        t1 = time.perf_counter()
        spec = log_mel(clip.audio, CFG)
        t2 = time.perf_counter()
        rgb = self.transform(clip.rgb, g)
        t3 = time.perf_counter()
        spec = spec_augment(spec, CFG, g)
        t4 = time.perf_counter()
        assert rgb.shape == (8, 3, 224, 224) and spec.shape == (800, 128)
        for name, dt in zip(self.stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            self.stages[name].append(dt)


@contextlib.contextmanager
def seek_rule(rule: str) -> Iterator[None]:
    """Ablation of the seek policy: 'never' decodes from the start of the file, 'always'
    seeks to the clip's start time, 'policy' is `read_clip`'s rule."""
    original = decode.ClipReader._seek_target
    if rule == "never":
        decode.ClipReader._seek_target = lambda self, start, stream: None  # type: ignore[method-assign]
    elif rule == "always":
        decode.ClipReader._seek_target = lambda self, start, stream: start if start > 0 else None  # type: ignore[method-assign]
    try:
        yield
    finally:
        decode.ClipReader._seek_target = original  # type: ignore[method-assign]


def seek_study(tmp: str, repeats: int) -> dict[str, dict[str, dict[float, float]]]:
    """CPU ms to decode 8 frames (no audio) starting at various times of a 30-s 320x240
    video with a 2-s GOP, in MP4 (full index) and Matroska (cues read on the first seek),
    under each seek rule."""
    out: dict[str, dict[str, dict[float, float]]] = {}
    for ext in ("mp4", "mkv"):
        path = os.path.join(tmp, f"long.{ext}")
        global SECONDS
        saved, SECONDS = SECONDS, 30.0
        try:
            write_video(path, 320, 240, 30, 60, seed=9)
        finally:
            SECONDS = saved
        out[ext] = {}
        for rule in ("policy", "never", "always"):
            out[ext][rule] = {}
            for start in (0.5, 1.0, 1.5, 2.5, 8.0, 20.0):
                times = [start + k / CFG.frame_rate for k in range(CFG.num_frames)]
                spent = []
                for _ in range(repeats):
                    with seek_rule(rule):
                        cpu = time.process_time()
                        read_clip(path, times, 0.0, 0.0)
                        spent.append(time.process_time() - cpu)
                out[ext][rule][start] = 1000 * statistics.median(spent)
    return out


def measure(paths: dict[str, str], rounds: int, clips_per_video: int) -> dict[str, object]:
    rng = np.random.default_rng(0)
    work = [(name, path, times, a0) for name, path in paths.items()
            for times, a0 in training_clips(rng, clips_per_video)]
    pipe = Pipeline(resize_short_side=CFG.min_resize, shrink_only=True)
    pipe_up = Pipeline(resize_short_side=CFG.min_resize)
    pipe_noseek = Pipeline(resize_short_side=CFG.min_resize, shrink_only=True)

    def run_noseek(path: str, times: list[float], a0: float, seed: int) -> None:
        with seek_rule("never"):
            pipe_noseek(path, times, a0, seed)

    variants: dict[str, Callable[..., object]] = {
        "floor (bare PyAV)": lambda path, times, a0, seed: bare_pyav(path, times, a0),
        "pipeline": pipe,
        "pipeline, upscale in FFmpeg": pipe_up,
        "pipeline, no seeking": run_noseek,
    }
    names = list(variants)
    # seconds per call: [clock][variant] -> [round, clip]
    spent = {clock: {v: np.zeros((rounds, len(work))) for v in names} for clock in ("wall", "cpu")}
    for i, (_, path, times, a0) in enumerate(work[:2]):  # warm-up
        for v in names:
            variants[v](path, times, a0, i)
    for r in range(rounds):
        for i, (_, path, times, a0) in enumerate(work):
            for v in names[(i + r) % len(names):] + names[:(i + r) % len(names)]:
                wall, cpu = time.perf_counter(), time.process_time()
                variants[v](path, times, a0, 1000 * r + i)
                spent["cpu"][v][r, i] = time.process_time() - cpu
                spent["wall"][v][r, i] = time.perf_counter() - wall
    n = len(work)
    result: dict[str, object] = {"clips_per_round": n, "rounds": rounds}
    for clock, table in spent.items():
        totals = {v: table[v].sum(axis=1) for v in names}  # per round
        floor = totals[names[0]]
        result[clock] = {
            "clips_per_s": {v: float(np.median(n / totals[v])) for v in names},
            "ratio_to_floor": {v: float(np.median(totals[v] / floor)) for v in names},
            "per_video_ms": {video: {v: 1000 * float(np.median(table[v][:, [k for k, w in enumerate(work)
                                                                            if w[0] == video]]))
                                     for v in names} for video in paths},
        }
    result["pipeline_stages_ms"] = {s: 1000 * statistics.median(ts) for s, ts in pipe.stages.items()}
    return result


def environment() -> dict[str, object]:
    cpu = platform.processor()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "av": av.__version__,
        "ffmpeg": av.ffmpeg_version_info,
        "torch_threads": torch.get_num_threads(),
    }


def markdown(result: dict, env: dict, command: str) -> str:
    lines = [
        f"Command: `{command}`  ",
        f"Machine: {env['cpu']}, {env['cores']} cores, shared (load average {env['load_start']:.1f} at the start, "
        f"{env['load_average'][0]:.1f} at the end); Python {env['python']}, torch {env['torch']}, "
        f"torchvision {env['torchvision']}, PyAV {env['av']} (FFmpeg {env['ffmpeg']}); 1 torch thread, "
        "1 decoder thread.",
        "",
        f"{result['clips_per_round']} training clips per round (8 frames at 224, 8 s audio -> 800x128), "
        f"medians over {result['rounds']} rounds. CPU time is the process's own (all its threads): what one "
        "worker does with a core to itself; wall time includes waiting for the machine's other processes.",
        "",
        "| variant | clips/s (CPU time) | vs floor (CPU time) | clips/s (wall) | vs floor (wall) |",
        "|---|---|---|---|---|",
    ]
    cpu, wall = result["cpu"], result["wall"]
    for v in cpu["clips_per_s"]:
        lines.append(f"| {v} | {cpu['clips_per_s'][v]:.1f} | {cpu['ratio_to_floor'][v]:.2f}x "
                     f"| {wall['clips_per_s'][v]:.1f} | {wall['ratio_to_floor'][v]:.2f}x |")
    lines += ["", "Median CPU ms per clip by video:", "",
              "| video | " + " | ".join(cpu["clips_per_s"]) + " |",
              "|---" * (1 + len(cpu["clips_per_s"])) + "|"]
    for video, d in cpu["per_video_ms"].items():
        lines.append(f"| {video} | " + " | ".join(f"{ms:.1f}" for ms in d.values()) + " |")
    stages = ", ".join(f"{s} {ms:.1f} ms" for s, ms in result["pipeline_stages_ms"].items())
    lines += ["", f"Pipeline stages (wall, median per clip): {stages}."]
    study = result.get("seek_study")
    if study:
        starts = list(next(iter(next(iter(study.values())).values())))
        lines += ["", "Seek policy: CPU ms to decode 8 frames from a given start of a 30-s 320x240 video "
                  "(2-s GOP), by rule:", "",
                  "| container, rule | " + " | ".join(f"{t:g} s" for t in starts) + " |",
                  "|---" * (1 + len(starts)) + "|"]
        for ext, rules in study.items():
            for rule, row in rules.items():
                lines.append(f"| {ext}, {rule} | " + " | ".join(f"{ms:.1f}" for ms in row.values()) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--clips", type=int, default=6, help="training clips per video per round")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--markdown", action="store_true", help="print a docs/benchmarks.md section")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for k, (name, w, h, fps, keyint) in enumerate(VIDEOS):
            paths[name] = os.path.join(tmp, f"{name}.mp4")
            write_video(paths[name], w, h, fps, keyint, seed=k)
        result = measure(paths, args.rounds, args.clips)
        result["seek_study"] = seek_study(tmp, repeats=args.rounds)
    emit_report("bench_data.py", result, markdown, args, argv, load_start)
    return 0


def emit_report(script: str, result: dict, to_markdown: Callable[[dict, dict, str], str], args: argparse.Namespace,
                argv: list[str] | None, load_start: float | None) -> None:
    """Print a benchmark's result as JSON (and markdown with `--markdown`); save it with `--json`."""
    env = {**environment(), "load_start": load_start}
    command = f"python benchmarks/{script} " + " ".join(argv if argv is not None else sys.argv[1:])
    print(json.dumps({"env": env, **result}, indent=2, default=str))
    if args.markdown:
        print(to_markdown(result, env, command.strip()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": env, "command": command, **result}, f, indent=2, default=str)


if __name__ == "__main__":
    sys.exit(main())
