"""`mbt flops`: the compute of one config, or the table of fusion variants."""

from __future__ import annotations

import argparse
import json

from ._options import add_set_option, section_overrides


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("flops", help="compute of a config in GFLOPs (multiply-adds, the paper's convention)")
    p.add_argument("--preset", help="a training preset or model folder to take the config from")
    add_set_option(p, "override model fields, e.g. model.fusion_layer=4 model.num_frames=16")
    p.add_argument("--table", action="store_true", help="the paper-size table over fusion variants")
    p.add_argument("--json", action="store_true", help="print the counts as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..models.config import MBTConfig
    from ..models.flops import count_flops, flops_table, format_count
    from ..overrides import apply_overrides

    assignments = section_overrides(args.set, "model")
    cfg = MBTConfig()
    if args.preset:
        from ..models.pretrained import read_config

        try:
            cfg = MBTConfig.from_dict(read_config(args.preset)["model"])
        except FileNotFoundError:
            from ..train.presets import preset

            cfg = preset(args.preset).model
    cfg = apply_overrides(cfg, assignments)
    if args.table:
        rows = flops_table(cfg)
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            print(f"{'variant':<36} {'GFLOPs':>8} {'params (M)':>11}")
            for r in rows:
                print(f"{r['variant']:<36} {r['gflops']:>8.4g} {r['params_m']:>11.4g}")
        return 0
    report = count_flops(cfg)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(f"{format_count(report.macs)} (multiply-adds, the paper's convention; "
              f"{format_count(report.flops, 'floating-point operations', ' ')})")
    return 0
