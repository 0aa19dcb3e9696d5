"""`mbt train`: argument handling around `mbt.train.train()`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ._options import add_set_option


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train MBT (a paper preset or a config file, KEY=VALUE overrides); torchrun for DDP",
        description="Train MBT. Config = preset (or defaults) <- --config file <- --set overrides; the "
                    "resolved config is saved in the run folder. Under torchrun every process runs this.",
    )
    p.add_argument("--preset", help="a paper experiment (see --list-presets), e.g. audioset-mini")
    p.add_argument("--config", help="YAML/JSON file with model/data/dataset/train sections")
    add_set_option(p)
    p.add_argument("--run-dir", help="run folder (default runs/<name>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR|auto",
                   help="continue the run in RUN_DIR from its latest checkpoint; 'auto' (with --run-dir and the "
                        "config options of the first start): continue the run of --run-dir when it holds a "
                        "checkpoint, else start it, so the same command line serves torchrun restarts and "
                        "requeued jobs")
    p.add_argument("--print-config", action="store_true",
                   help="print the config the run will use (classes read from the training annotations) and exit")
    p.add_argument("--list-presets", action="store_true", help="list the presets and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the final results as JSON")
    p.set_defaults(func=run)


def resolve_config(args: argparse.Namespace) -> Any:
    """Preset (or defaults) <- config file <- --set; with --resume, the run's saved config <- --set."""
    from ..train.launch import resolve_experiment

    return resolve_experiment(args.preset, args.config, args.set, args.resume)


def run(args: argparse.Namespace) -> int:
    if args.list_presets:
        import inspect
        import textwrap

        from ..train.presets import PRESETS

        for name, fn in PRESETS.items():
            text = " ".join(inspect.getdoc(fn).split()) if fn.__doc__ else ""
            print(textwrap.fill(text, 100, initial_indent=f"{name:20s} ", subsequent_indent=" " * 21,
                                break_on_hyphens=False, break_long_words=False))
        return 0
    cfg = resolve_config(args)
    if args.print_config:
        import yaml

        from ..overrides import ConfigDumper

        cfg, notes = _with_label_space(cfg)
        for line in notes:
            print(f"# {line}")
        yaml.dump(cfg.to_dict(), sys.stdout, Dumper=ConfigDumper, sort_keys=False)  # read back by --config
        return 0
    from ..errors import ConfigError
    from ..train.loop import train

    auto = args.resume == "auto"
    if auto and not args.run_dir:
        raise ConfigError("--resume auto needs --run-dir: the folder to start, or continue, the run in")
    run_dir = args.run_dir if auto else args.resume or args.run_dir
    results = train(cfg, run_dir, resume="auto" if auto else bool(args.resume), progress=not args.no_progress)
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return 0


def _with_label_space(cfg: Any) -> tuple[Any, list[str]]:
    """The config the run will use: the label space (number of classes, multi-label, names)
    from the training annotations, as `train` takes it; a note when they cannot be read yet."""
    from ..train.data import load_split_annotations, resolve_label_space

    if cfg.dataset.format == "synthetic":
        return cfg, []
    try:
        annotations = load_split_annotations(cfg, "train")
    except (OSError, ValueError) as e:
        return cfg, [f"label space not read from the training annotations ({e}): model.num_classes etc. as below"]
    if annotations is None:
        return cfg, ["no training annotations (dataset.train): model.num_classes etc. as below"]
    return resolve_label_space(cfg, annotations)
