"""Shards against raw videos: items per second per worker through the same dataset interface
(decode + log-mel + train augmentation at the paper's clip size), the cost and size of
`mbt data prepare`, and loader throughput with several workers.

    python benchmarks/bench_shards.py [--rounds 5] [--repeats 4] [--workers 2] [--json out.json] [--markdown]

Media: `bench_data.py`'s 10-s H.264 + AAC videos (natural-ish texture, one keyframe per clip as in
re-encoded AudioSet clips), 398x224 at 25 fps and 320x240 at 30 fps, 3 of each, listed `--repeats`
times as items of a folder dataset. Recipe: `DataConfig()` (8 frames at 3.125 frames/s, short side
256, 224 crop, 8 s of 16 kHz audio -> 800x128 log-mel). Per-worker numbers run in one process with
one torch thread and one decoder thread, variants interleaved item by item in rotating order so
machine load hits them alike; medians over rounds. Every round is a new epoch (new random clips).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_data import emit_report, write_video

from mbt.data.annotations import parse_folder
from mbt.data.config import DataConfig
from mbt.data.dataset import AVDataset
from mbt.data.loader import build_loader
from mbt.data.shards import (
    ShardConfig,
    ShardDataset,
    ShardStream,
    build_stream_loader,
    open_shards,
    prepare_shards,
)

CFG = DataConfig()
VIDEOS = [("398x224_25fps", 398, 224, 25), ("320x240_30fps", 320, 240, 30)]
SHARD_VARIANTS = {  # name -> (mode, ShardConfig fields)
    "train, flac, 2x frames": ("train", {}),
    "train, pcm16, 2x frames": ("train", {"audio_codec": "pcm16"}),
    "train, flac, 1x frames": ("train", {"frame_oversample": 1}),
    "val, flac": ("val", {}),
}


def make_media(tmp: str, repeats: int) -> Path:
    """A folder dataset: 2 classes (the two sizes), each video linked `repeats` times."""
    root = Path(tmp) / "videos"
    for k, (name, w, h, fps) in enumerate(VIDEOS):
        (root / name).mkdir(parents=True)
        for j in range(3):
            path = root / name / f"v{j}.mp4"
            write_video(str(path), w, h, fps, None, seed=10 * k + j)
            for r in range(1, repeats):
                (root / name / f"v{j}_copy{r}.mp4").symlink_to(path)
    return root


def prepare_all(root: Path, tmp: str) -> tuple[dict[str, Path], dict[str, dict[str, float]]]:
    ann = parse_folder(root)
    folders, stats = {}, {}
    for name, (mode, fields) in SHARD_VARIANTS.items():
        folders[name] = Path(tmp) / name.replace(", ", "_").replace(" ", "")
        wall, cpu = time.perf_counter(), time.process_time()
        report = prepare_shards(ann, CFG, folders[name], ShardConfig(mode=mode, shard_size=8, **fields))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        n = report["written"]
        stats[name] = {"items": n, "ms_per_item_wall": 1000 * wall / n, "ms_per_item_cpu": 1000 * cpu / n,
                       "kib_per_item": report["bytes"] / n / 1024}
        stats[name].update(member_sizes(folders[name]))
    return folders, stats


def member_sizes(folder: Path) -> dict[str, float]:
    """Mean KiB per item of frames and audio, and frames stored per item."""
    jpg = audio = frames = items = 0
    for url in open_shards(folder).urls:
        with tarfile.open(url) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".jpg"):
                    jpg, frames = jpg + m.size, frames + 1
                elif m.name.endswith((".flac", ".npy")):
                    audio += m.size
                elif m.name.endswith(".json"):
                    items += 1
    return {"frames_per_item": frames / items, "frames_kib_per_item": jpg / items / 1024,
            "audio_kib_per_item": audio / items / 1024}


class Floor:
    """The least a shard item costs: read its bytes, split the tar members, decode the 8 JPEG
    frames a clip uses and the whole stored FLAC (no augmentation, no log-mel)."""

    def __init__(self, folder: Path) -> None:
        self.shards = open_shards(folder)
        self.records = self.shards.index()

    def __call__(self, key: tuple[int, int]) -> None:
        r = self.records[key[1]]
        with open(self.shards.urls[r["shard"]], "rb") as f:
            f.seek(r["offset"])
            data = f.read(r["size"])
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            members = {m.name.partition(".")[2]: tar.extractfile(m).read() for m in tar}
        for k in range(CFG.num_frames):
            np.asarray(Image.open(io.BytesIO(members[f"c0.f{2 * k:05d}.jpg"])).convert("RGB"))
        if "c0.flac" in members:
            with av.open(io.BytesIO(members["c0.flac"])) as c:
                for _ in c.decode(audio=0):
                    pass


def per_worker(root: Path, folders: dict[str, Path], rounds: int) -> dict[str, object]:
    ann = parse_folder(root)
    train: dict[str, Callable[[tuple[int, int]], object]] = {
        "videos (AVDataset)": AVDataset(ann, CFG, "train").__getitem__,
        "shards (ShardDataset), flac, 2x frames": ShardDataset(folders["train, flac, 2x frames"], CFG,
                                                               "train").__getitem__,
        "shards (ShardDataset), pcm16, 2x frames": ShardDataset(folders["train, pcm16, 2x frames"], CFG,
                                                                "train").__getitem__,
        "shards (ShardDataset), flac, 1x frames": ShardDataset(folders["train, flac, 1x frames"], CFG,
                                                               "train").__getitem__,
        "shard floor (read + 8 JPEG + FLAC decode)": Floor(folders["train, flac, 2x frames"]),
    }
    val: dict[str, Callable[[tuple[int, int]], object]] = {
        "videos (AVDataset)": AVDataset(ann, CFG, "val").__getitem__,
        "shards (ShardDataset)": ShardDataset(folders["val, flac"], CFG, "val").__getitem__,
    }
    n = len(ann.items)
    out: dict[str, object] = {"items_per_round": n, "rounds": rounds}
    for split, variants in (("train", train), ("val", val)):
        names = list(variants)
        for name in names:  # warm-up
            variants[name]((0, 0))
        spent = {clock: {v: np.zeros((rounds, n)) for v in names} for clock in ("wall", "cpu")}
        for r in range(rounds):
            for i in range(n):
                for v in names[(i + r) % len(names):] + names[:(i + r) % len(names)]:
                    wall, cpu = time.perf_counter(), time.process_time()
                    variants[v]((r + 1, i))
                    spent["cpu"][v][r, i] = time.process_time() - cpu
                    spent["wall"][v][r, i] = time.perf_counter() - wall
        base = names[0]
        out[split] = {clock: {v: {"items_per_s": float(np.median(n / table[v].sum(axis=1))),
                                  "speedup": float(np.median(table[base].sum(axis=1) / table[v].sum(axis=1)))}
                              for v in names} for clock, table in spent.items()}
    # streaming: whole epochs, one process (shard order, shuffle buffer, sequential reads)
    stream = ShardStream(folders["train, flac, 2x frames"], CFG, "train", shuffle_buffer=16)
    epochs = []
    for r in range(rounds):
        stream.set_epoch(r + 1)
        wall, cpu = time.perf_counter(), time.process_time()
        count = sum(1 for _ in stream)
        epochs.append((count / (time.perf_counter() - wall), count / (time.process_time() - cpu)))
    out["stream"] = {"items_per_s_wall": statistics.median(e[0] for e in epochs),
                     "items_per_s_cpu": statistics.median(e[1] for e in epochs)}
    return out


def loaders(root: Path, folders: dict[str, Path], workers: int, epochs: int, batch: int = 8) -> dict[str, float]:
    """Training items per second (wall) through real DataLoaders with `workers` workers, over
    `epochs` epochs after one warm-up epoch."""
    ann = parse_folder(root)
    folder = folders["train, flac, 2x frames"]
    built = {
        "videos: AVDataset + build_loader": build_loader(AVDataset(ann, CFG, "train"), batch, True, workers),
        "shards: ShardDataset + build_loader": build_loader(ShardDataset(folder, CFG, "train"), batch, True, workers),
        "shards: ShardStream + build_stream_loader": build_stream_loader(
            ShardStream(folder, CFG, "train", shuffle_buffer=16), batch, workers),
    }
    rates = {}
    for name, loader in built.items():
        seen, spent = 0, 0.0
        for epoch in range(epochs + 1):
            loader.set_epoch(epoch)
            tic = time.perf_counter()
            count = sum(b["batch_size"] for b in loader)
            if epoch:
                seen, spent = seen + count, spent + time.perf_counter() - tic
        rates[name] = seen / spent
    return rates


def markdown(result: dict, env: dict, command: str) -> str:
    pw = result["per_worker"]
    lines = [
        f"Command: `{command}`  ",
        f"Machine: {env['cpu']}, {env['cores']} cores, shared (load average {env['load_start']:.1f} at the start, "
        f"{env['load_average'][0]:.1f} at the end); Python {env['python']}, torch {env['torch']}, "
        f"PyAV {env['av']} (FFmpeg {env['ffmpeg']}).",
        "",
        f"Per worker (one process, 1 torch thread, 1 decoder thread): {pw['items_per_round']} items per round, "
        f"medians over {pw['rounds']} rounds; speed-up = time of the videos / time of the variant in the same round.",
        "",
        "| split | variant | items/s (CPU time) | speed-up (CPU) | items/s (wall) | speed-up (wall) |",
        "|---|---|---|---|---|---|",
    ]
    for split in ("train", "val"):
        cpu, wall = pw[split]["cpu"], pw[split]["wall"]
        for v in cpu:
            lines.append(f"| {split} | {v} | {cpu[v]['items_per_s']:.1f} | {cpu[v]['speedup']:.2f}x "
                         f"| {wall[v]['items_per_s']:.1f} | {wall[v]['speedup']:.2f}x |")
    s = pw["stream"]
    lines += [f"| train | shards (ShardStream, whole epochs, buffer 16), flac, 2x frames | "
              f"{s['items_per_s_cpu']:.1f} | | {s['items_per_s_wall']:.1f} | |", ""]
    lines += [f"DataLoader, {result['loader_workers']} workers, batch 8, training items/s (wall):", "",
              "| loader | items/s |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in result["loaders"].items()]
    lines += ["", "`mbt data prepare` (one process) and what it stores per item:", "",
              "| shards | ms/item (wall) | ms/item (CPU) | KiB/item | frames/item | frames KiB | audio KiB |",
              "|---|---|---|---|---|---|---|"]
    for k, v in result["prepare"].items():
        lines.append(f"| {k} | {v['ms_per_item_wall']:.0f} | {v['ms_per_item_cpu']:.0f} | {v['kib_per_item']:.0f} "
                     f"| {v['frames_per_item']:.0f} | {v['frames_kib_per_item']:.0f} | "
                     f"{v['audio_kib_per_item']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=4, help="times each of the 6 videos is listed")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for the loader comparison")
    parser.add_argument("--loader-epochs", type=int, default=3)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--markdown", action="store_true", help="print a docs/benchmarks.md section")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = make_media(tmp, args.repeats)
        folders, prepare = prepare_all(root, tmp)
        result = {"prepare": prepare, "per_worker": per_worker(root, folders, args.rounds),
                  "loader_workers": args.workers,
                  "loaders": loaders(root, folders, args.workers, args.loader_epochs)}
    emit_report("bench_shards.py", result, markdown, args, argv, load_start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
