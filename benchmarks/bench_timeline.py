"""`mbt predict --timeline` on long videos: time and memory against the video's length.

    python benchmarks/bench_timeline.py [--minutes 10 60] [--json out.json]

Writes H.264 + AAC videos (64x64 at 8 frames/s, 16 kHz mono; scenes alternate every 5
minutes) of each length into a temp folder, then runs the timeline of the demo's tiny
model (2-s windows, 1-s hop) on each in a fresh process, one torch thread, and reports
the windows, seconds, windows per second, the most frames held at once and the peak
resident memory of the process. Bounded memory shows as a peak that does not grow with
the length.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

RUN = r"""
import json, resource, sys, time
import torch
import mbt
from mbt.demo.run import _demo_data, _demo_model
from mbt.timeline import timeline
torch.set_num_threads(1)
model = mbt.MBT(_demo_model()).eval()
tic = time.perf_counter()
tl = timeline(mbt.Predictor(model, _demo_data()), sys.argv[1])
seconds = time.perf_counter() - tic
print(json.dumps({"windows": len(tl.starts), "seconds": seconds, "windows_per_s": len(tl.starts) / seconds,
                  "peak_frames_held": tl.stats["peak_frames_held"], "passes": tl.stats["passes"],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_video(path: Path, seconds: int, fps: int = 8, size: int = 64, rate: int = 16000) -> None:
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=fps)
        vs.width = vs.height = size
        vs.pix_fmt = "yuv420p"
        vs.options = {"preset": "ultrafast"}
        a = c.add_stream("aac", rate=rate)
        a.layout = "mono"
        for sec in range(seconds):
            level = 220 if (sec // 300) % 2 == 0 else 35
            for _ in range(fps):
                img = np.full((size, size, 3), level, np.uint8)
                img[::8] = rng.integers(0, 255)
                c.mux(vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
            t = (np.arange(rate) + sec * rate) / rate
            wav = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            for k in range(0, rate, 1024):
                frame = av.AudioFrame.from_ndarray(wav[None, k:k + 1024], format="fltp", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = rate, sec * rate + k, Fraction(1, rate)
                c.mux(a.encode(frame))
        c.mux(vs.encode())
        c.mux(a.encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=int, nargs="+", default=[10, 60])
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in args.minutes:
            video = Path(tmp) / f"{minutes}min.mp4"
            write_video(video, minutes * 60)
            done = subprocess.run([sys.executable, "-c", RUN, str(video)], capture_output=True, text=True, check=True)
            row = {"minutes": minutes, **json.loads(done.stdout.strip().splitlines()[-1])}
            rows.append(row)
            print(f"{minutes:4d} min: {row['windows']} windows in {row['seconds']:.1f} s "
                  f"({row['windows_per_s']:.0f}/s), {row['peak_frames_held']} frames held at most, "
                  f"{row['passes']} demux pass, peak RSS {row['peak_rss_mb']:.0f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
