"""`mbt predict`: top classes of media files, clip-averaged or over time (--timeline)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from typing import Any

from ._options import add_stream_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="top classes of media files (clip-averaged), or over time (--timeline)")
    p.add_argument("videos", nargs="+", help="video or audio files (mp4, mkv, wav, mp3, flac, m4a, ogg, ...)")
    p.add_argument("--model", required=True,
                   help="a model folder (save_pretrained format) or a run folder (its best model, else final)")
    p.add_argument("--topk", type=int, help="classes shown per file (1 to the model's classes; default 5)")
    p.add_argument("--clips", type=int, help="clips per video (default: enough to cover it, >= num_test_clips)")
    p.add_argument("--device", default="cpu", help="torch device to run the model on (cpu, cuda, cuda:1, ...)")
    p.add_argument("--modalities", metavar="M[,M]",
                   help="predict with only these of the model's towers (e.g. spectrogram: from the sound alone)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    add_stream_options(p)
    p.add_argument("--timeline", metavar="DIR",
                   help="sliding windows over each file (any length, decoded in one streamed pass): "
                        "timeline.csv, timeline.json and timeline.png in DIR (DIR/<file name>/ for several files)")
    p.add_argument("--window", type=float, help="--timeline: window seconds (default: the model's clip length)")
    p.add_argument("--hop", type=float, help="--timeline: seconds between window starts (default: window / 2)")
    p.add_argument("--no-progress", action="store_true", help="--timeline: no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..inference import Predictor

    predictor = Predictor(args.model, device=args.device,
                          modalities=args.modalities.split(",") if args.modalities else None)
    streams = {"video_stream": args.video_stream, "audio_stream": args.audio_stream}
    predictor.data = replace(predictor.data, **{k: v for k, v in streams.items() if v is not None})
    args.topk = predictor.topk(args.topk)  # before any file: one error, not one per file
    if args.timeline:
        return _run_timeline(predictor, args)
    failed = 0
    for path in args.videos:
        try:
            pred = predictor.predict(path, args.topk, args.clips)
        except (OSError, RuntimeError, ValueError) as e:
            failed += 1
            print(f"{path}: error: {e}", file=sys.stderr)
            continue
        if pred.damage:
            print(f"warning: {path}: decoded with concealed damage: {pred.damage}", file=sys.stderr)
        if args.json:
            print(json.dumps(pred.to_dict(), allow_nan=False))
            continue
        extra = f"  ({pred.note})" if pred.note else ""
        print(f"{path}  [{pred.num_clips} clip(s), {'+'.join(pred.modalities)}]{extra}")
        for head, ranking in pred.heads.items():
            print(f"  {head}:")
            for name, prob in ranking:
                print(f"    {prob:7.2%}  {name}")
        if pred.heads and len(pred.heads) != 2:
            continue
        if pred.heads:
            print("  actions (joint):")
        for name, prob in pred.top:
            print(f"{'    ' if pred.heads else '  '}{prob:7.2%}  {name}")
    return 1 if failed else 0


def _run_timeline(predictor: Any, args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..timeline import timeline, write_timeline

    for path in args.videos:
        out = Path(args.timeline) / Path(path).name if len(args.videos) > 1 else Path(args.timeline)
        tl = timeline(predictor, path, args.window, args.hop, progress=not args.no_progress)
        written = write_timeline(tl, out, topk=args.topk)
        extra = f"  ({tl.note})" if tl.note else ""
        print(f"{path}  [{len(tl.starts)} windows of {tl.window:g} s every {tl.hop:g} s, "
              f"{'+'.join(tl.modalities)}]{extra}: {', '.join(str(w) for w in written)}")
    return 0
