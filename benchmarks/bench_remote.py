"""Shards over HTTP against local disk: training items per second through the real loaders, the same
shards read from the folder and from a server on 127.0.0.1.

    python benchmarks/bench_remote.py [--rounds 3] [--repeats 4] [--workers 2] [--json out.json] [--markdown]

Media and recipe as `bench_shards.py` (10-s H.264 + AAC videos, `DataConfig()`), prepared as train
shards (FLAC, 2x frames, 8 samples per shard). Servers: python's own `http.server`
(`ThreadingHTTPServer` + `SimpleHTTPRequestHandler`: no range requests) and the tests' file server with
range requests (`tests/http_server.py`), both on 127.0.0.1 with an ephemeral port. Each round runs every
variant for one epoch, in rotating order so machine load hits them alike; ratios are remote / local of
the same round, medians over rounds.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench_data import emit_report
from bench_shards import CFG, make_media
from tests.http_server import FileServer

from mbt.data.annotations import parse_folder
from mbt.data.loader import build_loader
from mbt.data.shards import ShardConfig, ShardDataset, ShardStream, build_stream_loader, prepare_shards


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def _python_http_server(root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def run(tmp: str, repeats: int, rounds: int, workers: int, batch: int = 8) -> dict[str, object]:
    root = make_media(tmp, repeats)
    folder = Path(tmp) / "train"
    prepare_shards(parse_folder(root), CFG, folder, ShardConfig(mode="train", shard_size=8))
    plain, plain_url = _python_http_server(Path(tmp))
    with FileServer(Path(tmp)) as ranged:
        stream = functools.partial(ShardStream, split="train", cfg=CFG, shuffle_buffer=16)
        built = {
            "ShardDataset, local disk": build_loader(ShardDataset(folder, CFG, "train"), batch, True, workers),
            "ShardDataset, HTTP with ranges": build_loader(
                ShardDataset(f"{ranged.url}/train", CFG, "train"), batch, True, workers),
            "ShardDataset, python http.server (no ranges)": build_loader(
                ShardDataset(f"{plain_url}/train", CFG, "train"), batch, True, workers),
            "ShardStream, local disk": build_stream_loader(stream(folder), batch, workers),
            "ShardStream, python http.server": build_stream_loader(stream(f"{plain_url}/train"), batch, workers),
        }
        names = list(built)
        rates: dict[str, list[float]] = {n: [] for n in names}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the no-range warning, once per worker
            for r in range(rounds + 1):  # round 0 warms up
                for name in names[r % len(names):] + names[:r % len(names)]:
                    loader = built[name]
                    loader.set_epoch(r)
                    tic = time.perf_counter()
                    count = sum(b["batch_size"] for b in loader)
                    if r:
                        rates[name].append(count / (time.perf_counter() - tic))
    plain.shutdown()
    plain.server_close()
    local = {"ShardDataset": names[0], "ShardStream": names[3]}
    return {
        "items": len(parse_folder(root).items), "rounds": rounds, "workers": workers, "batch": batch,
        "items_per_s": {n: statistics.median(v) for n, v in rates.items()},
        "ratio_to_local": {n: statistics.median(a / b for a, b in zip(v, rates[local[n.split(",")[0]]], strict=True))
                           for n, v in rates.items()},
    }


def markdown(result: dict, env: dict, command: str) -> str:
    lines = [
        f"Command: `{command}`  ",
        f"Machine: {env['cpu']}, {env['cores']} cores, shared (load average {env['load_start']:.1f} at the start, "
        f"{env['load_average'][0]:.1f} at the end); Python {env['python']}, torch {env['torch']}.",
        "",
        f"{result['items']} training items per epoch, DataLoader with {result['workers']} workers, batch "
        f"{result['batch']}, medians over {result['rounds']} rounds (one epoch each, after a warm-up epoch):",
        "",
        "| reader | items/s | remote / local (same round) |",
        "|---|---|---|",
    ]
    for name, rate in result["items_per_s"].items():
        lines.append(f"| {name} | {rate:.1f} | {result['ratio_to_local'][name]:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=4, help="times each of the 6 videos is listed")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--markdown", action="store_true", help="print a docs/benchmarks.md section")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        result = run(tmp, args.repeats, args.rounds, args.workers)
    emit_report("bench_remote.py", result, markdown, args, argv, load_start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
