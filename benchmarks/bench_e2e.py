"""End-to-end training throughput with the real DataLoader: does the model wait for data?

    python benchmarks/bench_e2e.py [--model tiny paper] [--workers 0 1 2] [--videos 16]
                                   [--json out.json] [--markdown]

It writes H.264 + AAC videos (10 s, 320x240 at 30 fps, one keyframe per clip, as
re-encoded AudioSet/VGGSound clips; `bench_data.write_video`) into class folders, then runs
`mbt.train.loop.train` on them with the paper's data recipe (8 frames at 224, 8 s of
log-mel, train augmentation) for a few steps per worker count, and reads the trainer's
own log: `examples_per_s` and `data_wait`, the fraction of step time spent waiting for
the loader, from the second log window (the first one includes starting the workers).

Models: 'tiny' (width 64, 4 layers, on the paper's input sizes: the data pipeline is the
bottleneck, so this shows how many workers it takes) and 'paper' (MBT-B: on this CPU
the model is the bottleneck).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_data import write_video

from mbt.bench import MALLOC_ENV, environment
from mbt.train.config import ExperimentConfig

MODELS = {
    "tiny": {"hidden_size": 64, "num_layers": 4, "num_heads": 4, "mlp_dim": 256, "fusion_layer": 3},
    "paper": {},
    "toy": {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "mlp_dim": 64, "fusion_layer": 1, "num_frames": 2,
            "n_sampled_frames": 2, "image_size": (32, 32), "spectrogram_size": (100, 32)},
}
BATCH = {"tiny": 8, "paper": 2, "toy": 2}
DATA = {"toy": {"num_frames": 2, "image_size": 32, "min_resize": 32, "audio_seconds": 1.0, "num_mel_bins": 32}}
"""Data recipe changes per model ('toy': small inputs, to check scripts quickly); the
others take the paper's recipe (8 frames at 224, 8 s of audio, 128 mel bins)."""


def run(root: Path, model: str, workers: int, steps: int, run_dir: Path, *, device: str = "auto",
        amp: str = "auto", batch: int | None = None, compile: bool | str = False, shards: Path | None = None,
        ) -> dict[str, Any]:
    """Train on the videos under `root` (or the `mbt data prepare` folder `shards` made from
    them) and read the trainer's log. `device`, `amp` and `compile` as `train.*`."""
    from mbt.train.loop import train

    videos = sum(1 for _ in root.rglob("*.mp4"))
    batch = batch or BATCH[model]
    epochs = max(1, -(-steps // (videos // batch)))
    dataset = {"format": "shards", "train": [str(shards)]} if shards else {"format": "folder", "train": [str(root)]}
    cfg = ExperimentConfig.from_dict({
        "name": f"e2e-{model}-w{workers}",
        "model": {**MODELS[model], "stochastic_depth": 0.1},
        "data": DATA.get(model, {}),
        "dataset": dataset,
        "train": {"init_from": None, "epochs": epochs, "batch_size": batch, "num_workers": workers,
                  "log_every": max(1, (epochs * (videos // batch)) // 2), "checkpoint_every": 10**6,
                  "amp": amp, "device": device, "compile": compile, "warmup_epochs": 0.0, "lr": 0.01},
    })
    tic = time.perf_counter()
    train(cfg, run_dir, progress=False)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    windows = [r for r in records if r["split"] == "train"]
    last = windows[-1]
    return {"model": model, "data": "shards" if shards else "raw video", "workers": workers, "batch": batch,
            "steps": last["step"],
            "clips_per_s": last["examples_per_s"], "data_wait": last["data_wait"],
            "first_window": {"clips_per_s": windows[0]["examples_per_s"], "data_wait": windows[0]["data_wait"]},
            "wall_s": time.perf_counter() - tic}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", nargs="+", choices=list(MODELS), default=["tiny", "paper"])
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--videos", type=int, default=16, help="videos written (two classes)")
    parser.add_argument("--steps", type=int, default=8, help="training steps per run (tiny: x3)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="as train.device")
    parser.add_argument("--amp", choices=["auto", "off", "bf16", "fp16"], default="auto", help="as train.amp")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    missing = [k for k in MALLOC_ENV if os.environ.get(k) != MALLOC_ENV[k]]
    if missing:  # set before the process starts, for the trainer and its workers
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "videos"
        for k in range(args.videos):
            folder = root / f"class{k % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            write_video(str(folder / f"v{k:03d}.mp4"), 320, 240, 30, None, seed=k)
        for model in args.model:
            for workers in args.workers:
                steps = args.steps * (3 if model == "tiny" else 1)
                rows.append(run(root, model, workers, steps, Path(tmp) / f"run-{model}-{workers}",
                                device=args.device, amp=args.amp))
                r = rows[-1]
                print(f"{model} model, {workers} workers: {r['clips_per_s']:.2f} clips/s, "
                      f"{100 * r['data_wait']:.1f}% of step time waiting for data", file=sys.stderr, flush=True)
    env = environment()
    report = {"env": env, "rows": rows, "command": "python benchmarks/bench_e2e.py " + " ".join(sys.argv[1:])}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    if args.markdown:
        print("| model | batch | loader workers | clips/s (end to end) | step time waiting for data |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['model']} | {r['batch']} | {r['workers']} | {r['clips_per_s']:.2f} "
                  f"| {100 * r['data_wait']:.1f}% |")
    else:
        print(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
