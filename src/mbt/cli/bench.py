"""`mbt bench`: speed, peak memory and FLOP/s of the fusion variants (mbt.bench)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from ..bench_cases import AMPS, MODES, SIZES, VARIANT_FIELDS, VARIANTS
from ._options import add_set_option, section_overrides


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="speed, peak memory and FLOP/s (vs a matmul measured alongside) of the fusion variants",
        description="Time eval and training steps of each fusion variant, with achieved FLOP/s as a fraction of "
                    "a large matmul timed in the same rounds (medians over rounds) and the peak memory of a step; "
                    "each case runs in a fresh process. See docs/benchmarks.md.",
    )
    p.add_argument("--size", choices=list(SIZES), default="tiny", help="model size (paper: MBT-B)")
    add_set_option(p, "override model fields of the size (not fusion, fusion_layer, share_encoder), "
                      "e.g. model.num_layers=2")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                   help="fusion variants to measure (default: all)")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES),
                   help="eval (forward) and/or train (forward, backward, optimizer step)")
    p.add_argument("--eval-batch", nargs="+", type=int, default=[1, 4], help="eval batch sizes")
    p.add_argument("--train-batch", nargs="+", type=int, default=[2], help="training batch sizes")
    p.add_argument("--amp", nargs="+", choices=AMPS, default=["off"], help="precisions to measure")
    p.add_argument("--grad-checkpointing", choices=("off", "on", "both"), default="off",
                   help="recompute blocks in the backward pass (both: measure with and without)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd", help="optimizer of the training steps")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: the GPU if there is one, else the CPU")
    p.add_argument("--threads", type=int, help="CPU threads (default: one per core)")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per case (medians reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--min-round-s", type=float, default=0.2, help="repeat short steps to last this long per round")
    p.add_argument("--matmul-size", type=int, help="side of the reference matmul (default 4096 CPU, 8192 GPU)")
    p.add_argument("--peak-tflops", type=float, help="the device's dense peak TFLOP/s (default: GPU datasheet)")
    p.add_argument("--interleave", action="store_true",
                   help="run all cases in one process, interleaved, for ratios between them (no memory)")
    p.add_argument("--no-isolate", action="store_true", help="run cases in this process (no memory figures)")
    p.add_argument("--no-malloc-env", action="store_true",
                   help="do not set MALLOC_MMAP/TRIM_THRESHOLD_ in the case processes (truer CPU peak memory, "
                        "less repeatable times)")
    p.add_argument("--markdown", action="store_true", help="print a markdown table")
    p.add_argument("--json", help="also write the full report (every round) to this file")
    p.add_argument("--json-only", action="store_true", help="print the full report as JSON, no progress")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bench import BenchConfig, cases_from, compare_cases, environment, format_row, markdown_table, run_bench
    from ..errors import ConfigError
    from ..models.config import MBTConfig
    from ..overrides import apply_overrides

    assignments = section_overrides(args.set, "model")
    given = {a.split("=", 1)[0].strip() for a in assignments}
    fixed = given & set(VARIANT_FIELDS)
    if fixed:
        raise ConfigError(f"--set {sorted(fixed)}: the fusion variant sets these; choose --variants instead")
    # typed and validated on the size's config (fusion at layer 0 is valid at any depth)
    changed = apply_overrides(MBTConfig(**{**SIZES[args.size], "fusion_layer": 0}), assignments)
    overrides = {k: v for k, v in dataclasses.asdict(changed).items() if k in given}
    bench = BenchConfig(
        size=args.size, model_overrides=overrides, rounds=args.rounds, warmup=args.warmup,
        min_round_s=args.min_round_s, optimizer=args.optimizer, device=args.device, threads=args.threads,
        matmul_size=args.matmul_size, peak_tflops=args.peak_tflops, isolate=not args.no_isolate,
        malloc_env=not args.no_malloc_env,
    )
    ckpt = {"off": (False,), "on": (True,), "both": (False, True)}[args.grad_checkpointing]
    cases = cases_from(args.variants, args.modes, args.eval_batch, args.train_batch, args.amp, ckpt, args.compile)
    say = None if args.json_only else (lambda s: print(s, file=sys.stderr, flush=True))
    if args.interleave:
        report: dict[str, Any] = compare_cases(cases, bench)
        results = report["cases"]
    else:
        results = run_bench(cases, bench, progress=say)
        report = {"cases": results, "size": bench.size, "env": results[0]["env"] if results else environment()}
    report["options"] = {k: v for k, v in vars(args).items() if k != "func"}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, default=str)
    if args.json_only:
        json.dump(report, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    elif args.markdown:
        print(markdown_table(results))
    else:
        for r in results:
            print(format_row(r) + ("" if "speed_vs_first" not in r else f"  x{r['speed_vs_first']:.3f} vs first"))
    return 0
