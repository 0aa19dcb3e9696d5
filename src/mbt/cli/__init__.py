"""`mbt` command line: train | eval | predict | embed | probe | explain | demo | convert | export | flops
| bench | data.

One module per verb, each with `add_parser(subparsers)` and its handler; handlers import
the library lazily, so building the parser (`mbt --help`, `mbt <verb> --help`) imports no
torch. This package is the only code that sees argparse.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence

from . import bench, convert, data, demo, embed, eval as eval_, explain, export, flops, predict, probe, train

VERBS = (convert, flops, export, data, train, eval_, demo, predict, embed, probe, explain, bench)
"""The verb modules, in the order of `mbt --help`."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mbt", description="Multimodal Bottleneck Transformers for audio-visual classification."
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)
    for verb in VERBS:
        verb.add_parser(sub)
    _describe(parser)
    return parser


def _describe(parser: argparse.ArgumentParser) -> None:
    """Every (sub-)command's `--help` opens with a description: its one-line help where no longer
    description was written."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                if not sub.description and helps.get(name):
                    sub.description = helps[name][0].upper() + helps[name][1:] + "."
                _describe(sub)


def _version() -> str:
    from .. import __version__

    return f"mbt {__version__}"


def _note(message: Warning | str, category: type[Warning], filename: str, lineno: int,
          line: str | None = None) -> str:
    """Warnings as one line (`mbt: note: ...`), not the file and line of the library code."""
    kind = "note" if category is UserWarning else category.__name__
    return f"mbt: {kind}: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    warnings.formatwarning = _note
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as e:
        # bad input (configs, files, videos) is reported in one line; MBT_DEBUG=1 shows the traceback
        if os.environ.get("MBT_DEBUG"):
            raise
        print(f"mbt {args.command}: error: {e}", file=sys.stderr)
        return 1
