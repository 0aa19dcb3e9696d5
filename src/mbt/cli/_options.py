"""Options shared by several verbs, and the helpers that read them back."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from ..data.annotations import FORMATS, formats_help

SET_HELP = ("override any field, e.g. train.lr=1e-4 model.fusion_layer=4 dataset.root=/data train.amp=off; "
            "values as in config files: null/none, true/false, numbers, [a, b] or (a, b), any other word a string")


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def add_set_option(p: argparse.ArgumentParser | argparse._ArgumentGroup, help: str = SET_HELP) -> None:
    """`--set SECTION.FIELD=VALUE ...`, the same in every verb: several values, repeatable."""
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="SECTION.FIELD=VALUE", help=help)


def section_overrides(assignments: Sequence[str], section: str) -> list[str]:
    """The `FIELD=VALUE` assignments of `--set SECTION.FIELD=VALUE` for a verb that only
    takes fields of one config section (`model` for flops/bench, `data` for data/embed)."""
    out = []
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        head, dot, field = key.strip().partition(".")
        if not sep or not dot or head != section or not field:
            name = field if dot else head
            raise ValueError(f"--set {assignment!r}: this command takes {section} fields: write "
                             f"{section}.FIELD=VALUE, e.g. {section}.{name or 'FIELD'}={value or 'VALUE'}")
        out.append(f"{field}={value}")
    return out


def add_stream_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--video-stream", type=int, metavar="N",
                   help="container index of the video stream to read (default: the default one, else the first)")
    p.add_argument("--audio-stream", type=int, metavar="N",
                   help="container index of the audio stream to read (default: the default one, else the first)")


def add_dataset_args(p: argparse.ArgumentParser) -> None:
    """Which annotations, in which format, with media under which root (mbt.data.annotations)."""
    p.add_argument("annotations", nargs="+", help=f"annotation file(s), by --format: {formats_help()}")
    p.add_argument("--format", required=True, choices=FORMATS, help="annotation format")
    add_annotation_options(p)


def add_annotation_options(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The options of `add_dataset_args` besides the files and their format."""
    p.add_argument("--classes", help="class list (AudioSet class_labels_indices.csv, VGGSound stat.csv, ...)")
    p.add_argument("--verb-classes", help="EPIC_100_verb_classes.csv (default: next to the annotations)")
    p.add_argument("--noun-classes", help="EPIC_100_noun_classes.csv (default: next to the annotations)")
    p.add_argument("--root", help="folder holding the media files (checked for missing files)")
    p.add_argument("--path-pattern", help='file naming under --root, e.g. "{ytid}_{start:06d}"')
    p.add_argument("--ext", help="media file extension to look for (default: any video/audio extension)")
    p.add_argument("--split", help="keep the rows of this split (vggsound: train/test; kinetics)")
    p.add_argument("--untrimmed", action="store_true",
                   help="files are full source videos: cut [start, end] out of them (YouTube formats)")
    p.add_argument("--skip-bad", action="store_true", help="skip bad rows (counted) instead of failing")
    p.add_argument("--duplicates", choices=("error", "keep", "drop"), default="error",
                   help="a clip listed twice: refuse the file (default), or keep/drop the repeats (reported)")


def annotations_from_args(args: argparse.Namespace, files: Sequence[str]) -> Any:
    """`load_annotations` from the options of `add_dataset_args`/`add_annotation_options`."""
    from ..data.annotations import load_annotations

    return load_annotations(
        args.format,
        list(files),
        classes=args.classes,
        verb_classes=args.verb_classes,
        noun_classes=args.noun_classes,
        root=args.root,
        path_pattern=args.path_pattern,
        ext=args.ext,
        split=args.split,
        trimmed=False if args.untrimmed else None,
        skip_bad=args.skip_bad,
        duplicates=args.duplicates,
    )
