"""`mbt probe`: a linear probe on embeddings written by `mbt embed --format`."""

from __future__ import annotations

import argparse

from ._options import print_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "probe", help="linear probe on embeddings: fit on one split's, report the dataset's metric on another's",
        description="Logistic regression (softmax, per-head softmax or sigmoid, as the dataset's labels) on "
                    "embeddings written by `mbt embed --format`, fitted by L-BFGS on standardised features.",
    )
    p.add_argument("train", help="embeddings folder to fit on")
    p.add_argument("test", help="embeddings folder to score on")
    p.add_argument("--feature", default="fused", help="fused (default), rgb or spectrogram")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="L2 penalty on the weights")
    p.add_argument("--max-iter", type=int, default=500, help="L-BFGS iterations")
    p.add_argument("--device", default="cpu", help="torch device to fit the probe on (cpu, cuda, ...)")
    p.add_argument("--out", help="also write the probe (weight, bias, mean, std) to this .safetensors file")
    p.add_argument("--json", action="store_true", help="print all metrics as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..embed_dataset import load_embeddings
    from ..probe import linear_probe

    result = linear_probe(load_embeddings(args.train), load_embeddings(args.test), feature=args.feature,
                          weight_decay=args.weight_decay, max_iter=args.max_iter, device=args.device)
    weights = result.pop("weights")
    if args.out:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in weights.items()}, args.out)
    if args.json:
        print_json(result)
        return 0
    left = result["left_out"]
    note = f" ({left['train']} train / {left['test']} test rows without {args.feature} left out)" if any(
        left.values()) else ""
    print(f"linear probe on {args.feature}: {result['metric']} {result['value']:.4f} on {result['num_test']} items, "
          f"fitted on {result['num_train']} (train {result['metric']} "
          f"{result['train_metrics'][result['metric']]:.4f}){note}")
    return 0
