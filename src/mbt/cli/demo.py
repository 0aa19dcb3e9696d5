"""`mbt demo`: small MBT variants trained on generated clips, compared."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train small MBT variants on generated audio-visual clips and compare them")
    p.add_argument("--out", default="mbt-demo", help="output folder (default: mbt-demo)")
    p.add_argument("--epochs", type=int, help="training epochs per variant (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated data")
    p.add_argument("--variants", nargs="+", metavar="NAME",
                   help="variants to train: audio, video, late, cross, bottleneck (default: all)")
    p.add_argument("--cache-dir", help="where the generated clips are kept (default $MBT_CACHE or ~/.cache/mbt)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..demo import VARIANTS, DemoConfig, run_demo

    cfg = DemoConfig(out=args.out, cache_dir=args.cache_dir)
    cfg.data = replace(cfg.data, seed=args.seed)
    if args.epochs:
        cfg.train = replace(cfg.train, epochs=args.epochs)
    if args.variants:
        chosen = []
        for word in args.variants:
            match = [v for v in VARIANTS if v.split()[0].startswith(word.lower())]
            if len(match) != 1:
                raise ValueError(f"--variants: {word!r} matches {match or 'none'} of {list(VARIANTS)}")
            chosen.append(match[0])
        cfg.variants = tuple(chosen)
    report = run_demo(cfg, progress=not args.no_progress)
    from ..demo.run import markdown_table

    print()
    print(markdown_table(report["rows"]))
    print(f"\n{report['seconds']['total_s']:.0f} s on {report['threads']} CPU threads. Written to {args.out}/: "
          "results.md, results.json, curves.png, accuracy.png, model/")
    print(f"Try it: mbt predict {report['data']}/clips/test_00000.mp4 --model {report['model']}")
    return 0
