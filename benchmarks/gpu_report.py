"""One command for a GPU host: how fast MBT trains and evaluates, and whether the data keeps up.

    python benchmarks/gpu_report.py --out DIR [--peak-tflops T] [--budget-s 450]
    python benchmarks/gpu_report.py --out DIR --smoke      # on CPU, tiny sizes, ~1 minute

Writes DIR/gpu-report.json and DIR/gpu-report.md with:

1. The model table (`mbt.bench.measure_case`): bottleneck, late and vanilla fusion, eager
   and `torch.compile`d, training and evaluation, at the paper's size (MBT-B, 8 frames at
   224 + 8 s of audio) and batch 32 under bf16 autocast, as fractions of the card's dense
   bf16 peak (`mbt.bench.GPU_DENSE_BF16_TFLOPS` by the card's name: H100 SXM / H200 989,
   H100 PCIe 756, A100 312 TFLOP/s; `--peak-tflops` for others). Every training case also
   runs two steps under `torch.cuda.set_sync_debug_mode("error")` (`host_sync`: 'none'
   when the step never waits for the host).
2. The real trainer (`mbt.train.loop.train`, through `bench_e2e.run`) on generated H.264 +
   AAC videos (`bench_data.write_video`, 10 s of 320x240 at 30 fps) read raw, and on the
   `mbt data prepare` shards of the same videos, with 4, 8 and all-but-two loader workers:
   clips/s and `data_wait`, the fraction of step time spent waiting for the loader.

Cases run in order of importance until `--budget-s` is spent; those left out are listed.
JSON keys: `device`, `train_eager_fraction_of_peak` (bottleneck, eager, the recipe's
stochastic depth), `train_best_fraction_of_peak` (the fastest training mode),
`data_wait_recommended` (shards, all-but-two workers), `models`, `data`, `left_out`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_data import write_video
from bench_e2e import DATA as E2E_DATA, run as run_trainer

from mbt.bench import BenchConfig, Case, environment, measure_case

VARIANTS = ("bottleneck", "late", "vanilla")


def _write_job(job: tuple[str, int]) -> None:
    import torch

    torch.set_num_threads(1)
    write_video(job[0], 320, 240, 30, None, seed=job[1])


def write_videos(root: Path, count: int, workers: int) -> float:
    """`count` videos in two class folders; returns the seconds it took. A pool of
    `workers` processes started with 'spawn' (never a fork of a process whose torch threads
    run) writes `workers` distinct videos per class at most; the others are hard links to
    them (decoding a link costs what decoding a distinct file does)."""
    tic = time.perf_counter()
    paths = [root / f"class{k % 2}" / f"v{k:04d}.mp4" for k in range(count)]
    for p in paths[:2]:
        p.parent.mkdir(parents=True, exist_ok=True)
    distinct = min(count, 2 * max(1, workers))
    with multiprocessing.get_context("spawn").Pool(max(1, min(workers, distinct))) as pool:
        pool.map(_write_job, [(str(p), k) for k, p in enumerate(paths[:distinct])], chunksize=1)
    for k in range(distinct, count):
        os.link(paths[k % distinct], paths[k])
    return time.perf_counter() - tic


def prepare(root: Path, out: Path, workers: int, data: dict[str, Any]) -> float:
    """`mbt data prepare` (train mode) of the videos with the recipe `data`; returns the
    seconds it took."""
    from mbt.data.annotations import parse_folder
    from mbt.data.config import DataConfig
    from mbt.data.shards import ShardConfig, prepare_shards

    tic = time.perf_counter()
    prepare_shards(parse_folder(root), DataConfig(**data), out, ShardConfig(mode="train", shard_size=16),
                   workers=workers)
    return time.perf_counter() - tic


def model_cases(smoke: bool) -> list[Case]:
    """The model table's cases, most important first: eager training and evaluation of every
    variant, then compiled training, then compiled evaluation."""
    batch, amp = (2, "off") if smoke else (32, "bf16")
    compiled = (False,) if smoke else (False, True)  # compiling on a CPU takes minutes
    return [Case(v, mode, batch, amp, compile=c) for c in compiled for mode in ("train", "eval") for v in VARIANTS]


def summary(models: list[dict[str, Any]], data: list[dict[str, Any]], device: str, workers: list[int]
            ) -> dict[str, Any]:
    train = [r for r in models if r["mode"] == "train"]
    eager = next((r for r in train if r["variant"] == "bottleneck" and not r["compile"]), None)
    fractions = [r["fraction_of_peak"] for r in train if r["fraction_of_peak"] is not None]
    recommended = next((r for r in data if r["data"] == "shards" and r["workers"] == max(workers)), None)
    return {
        "device": device,
        "train_eager_fraction_of_peak": eager["fraction_of_peak"] if eager else None,
        "train_best_fraction_of_peak": max(fractions) if fractions else None,
        "train_best_case": max(train, key=lambda r: r["clips_per_s"])["case"] if train else None,
        "data_wait_recommended": recommended["data_wait"] if recommended else None,
        "recommended_data_path": f"shards, {max(workers)} loader workers",
    }


def markdown(report: dict[str, Any]) -> str:
    pct = lambda x: "n/a" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    lines = [f"GPU report: {report['device']}, torch {report['env']['torch']}, {report['env']['cores']} CPU cores "
             f"(`{report['command']}`)", "",
             f"- eager training (bottleneck): {pct(report['train_eager_fraction_of_peak'])} of the dense peak; "
             f"fastest training mode ({report['train_best_case']}): {pct(report['train_best_fraction_of_peak'])}",
             f"- data_wait with the recommended path ({report['recommended_data_path']}): "
             f"{pct(report['data_wait_recommended'])}", "",
             "| case | clips/s | step s | TFLOP/s | fraction of peak | host syncs in the step |",
             "|---|---:|---:|---:|---:|---|"]
    for r in report["models"]:
        lines.append(f"| {r['case']} | {r['clips_per_s']:.1f} | {r['step_s']:.4f} | {r['achieved_tflops']:.1f} "
                     f"| {pct(r['fraction_of_peak'])} | {r['host_sync'] or 'not checked'} |")
    lines += ["", "| data | loader workers | clips/s (trainer) | data_wait |", "|---|---:|---:|---:|"]
    for r in report["data"]:
        lines.append(f"| {r['data']} | {r['workers']} | {r['clips_per_s']:.1f} | {pct(r['data_wait'])} |")
    if report["left_out"]:
        lines += ["", "Left out (time budget): " + "; ".join(report["left_out"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for gpu-report.json and gpu-report.md")
    parser.add_argument("--smoke", action="store_true", help="on CPU at tiny sizes: checks the script works")
    parser.add_argument("--peak-tflops", type=float, help="the card's dense bf16 TFLOP/s (default: by its name)")
    parser.add_argument("--budget-s", type=float, help="stop starting new cases after this (default 450; smoke 90)")
    parser.add_argument("--videos", type=int, help="videos written (default 256; smoke 6)")
    parser.add_argument("--steps", type=int, help="trainer steps per data row (default 24; smoke 4)")
    parser.add_argument("--workers", type=int, nargs="+",
                        help="loader workers of the data rows (default 4, 8 and all cores but two; smoke 1)")
    args = parser.parse_args(argv)
    import torch

    if not args.smoke and not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU host, or pass --smoke for the CPU check")
    start = time.perf_counter()
    budget = args.budget_s or (90.0 if args.smoke else 450.0)
    cores = os.cpu_count() or 1
    workers = args.workers or ([1] if args.smoke else sorted({4, 8, max(1, cores - 2)}))
    device = "cpu" if args.smoke else "cuda"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    left_out: list[str] = []
    with_time = lambda: time.perf_counter() - start < budget  # noqa: E731

    # media first: the pools start before this process runs any torch op
    media = out / "media"
    videos = args.videos or (6 if args.smoke else 256)
    write_s = write_videos(media / "videos", videos, max(1, cores - 2))
    model, batch = ("toy", 2) if args.smoke else ("paper", 32)
    prepare_s = prepare(media / "videos", media / "shards", max(1, cores - 2), E2E_DATA.get(model, {}))
    print(f"{videos} videos written in {write_s:.1f} s, prepared in {prepare_s:.1f} s", file=sys.stderr)

    bench = BenchConfig(size="tiny" if args.smoke else "paper", rounds=1 if args.smoke else 3,
                        warmup=1 if args.smoke else 2, min_round_s=0.0 if args.smoke else 1.0, device=device,
                        peak_tflops=args.peak_tflops, isolate=False, sync_check=True)
    models = []
    data_reserve = 0.0 if args.smoke else 150.0  # the data rows come after the table
    for case in model_cases(args.smoke):
        if time.perf_counter() - start > budget - data_reserve:
            left_out.append(case.name)
            continue
        print(f"measuring {case.name} ...", file=sys.stderr, flush=True)
        models.append(measure_case(case, bench))
        torch.cuda.empty_cache() if torch.cuda.is_available() else None

    data = []
    steps = args.steps or (4 if args.smoke else 24)
    for shards in (media / "shards", None):
        for w in sorted(workers, reverse=True):
            name = f"{'shards' if shards else 'raw video'}, {w} workers"
            if not with_time():
                left_out.append(name)
                continue
            print(f"training on {name} ...", file=sys.stderr, flush=True)
            run_dir = out / "runs" / name.replace(", ", "-").replace(" ", "_")
            data.append(run_trainer(media / "videos", model, w, steps, run_dir, device=device, amp="auto",
                                    batch=batch, shards=shards))

    report = {
        **summary(models, data, torch.cuda.get_device_name() if device == "cuda" else "cpu (smoke)", workers),
        "smoke": args.smoke,
        "command": "python benchmarks/gpu_report.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "env": environment(torch.device(device)),
        "media": {"videos": videos, "write_s": write_s, "prepare_s": prepare_s},
        "models": models,
        "data": data,
        "left_out": left_out,
        "wall_s": time.perf_counter() - start,
    }
    (out / "gpu-report.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "gpu-report.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
