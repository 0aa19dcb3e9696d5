"""`mbt export`: a saved model as ONNX or a torch.export program."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="a saved model as ONNX or a torch.export program (.pt2), dynamic batch")
    p.add_argument("--model", required=True,
                   help="a model folder (config.json + model.safetensors) or a run folder (its best model, else final)")
    p.add_argument("--format", choices=("onnx", "pt2"),
                   help="onnx or pt2 (a torch.export program); default: from the --out extension")
    p.add_argument("--out", required=True, help="output file: .onnx or .pt2 (other extensions are refused)")
    p.add_argument("--allow-unverified", action="store_true",
                   help="export a model folder whose config.json has no weights_sha256 (weights not verified)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..export import export_pretrained

    print(export_pretrained(args.model, args.out, args.format, allow_unverified=args.allow_unverified))
    return 0
