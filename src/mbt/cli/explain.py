"""`mbt explain`: pictures of what the model attends to in a video."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="pictures of what the model attends to in a video")
    p.add_argument("video", help="a video (or audio) file")
    p.add_argument("--model", required=True,
                   help="a model folder (save_pretrained format) or a run folder (its best model, else final)")
    p.add_argument("--out", required=True, help="output folder for the PNG files")
    p.add_argument("--start", type=float, metavar="SECONDS",
                   help="explain the clip starting this many seconds into the file (default: the middle clip)")
    p.add_argument("--target", "--class", dest="target", metavar="NAME|INDEX",
                   help="weight the attention by the gradient of this class (default: plain attention); "
                        "--class is the older name")
    p.add_argument("--device", default="cpu", help="torch device to run the model on (cpu, cuda, cuda:1, ...)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..api import explain

    for path in explain(args.video, args.model, args.out, device=args.device, start=args.start, target=args.target):
        print(path)
    return 0
