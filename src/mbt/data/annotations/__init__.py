"""Annotation formats -> one representation: `Annotations`, a list of `Item`s plus class names.

Parsers (each reads `.gz` files transparently):

- `parse_folder`: one sub-folder per class (classes = sorted folder names).
- `parse_manifest`: a CSV (header `path,label[s][,start,end,video_id]`) or JSONL manifest.
- `parse_audioset`: AudioSet segment CSVs + `class_labels_indices.csv` (multi-label, 527 classes).
- `parse_vggsound`: `vggsound.csv` (`ytid,start,label,split`, no header) or the authors' split lists
  (`ytid_%06d.mp4,label`), optional official class list.
- `parse_vggsounder`: VGGSounder's multi-label re-annotation of the VGGSound test set (modality tags).
- `parse_epic100`: EPIC-KITCHENS-100 `EPIC_100_{train,validation}.csv` + verb/noun class CSVs.
- `parse_kinetics`: Kinetics CSVs (`label,youtube_id,time_start,time_end,split`).
- `parse_kinetics_sounds`: the OGM-GE Kinetics-Sounds lists (`ytid_N,10,class_index`).
- `load_annotations(format, files, ...)`: the dispatcher used by the CLI and the trainer, reading
  the registry `ANNOTATION_FORMATS` (`formats`: each format's parser, options and help line).

Modules: `base` (the data model and row readers), `locator` (media files of a row), `formats` (the
registry), one module per dataset family (`manifest`, `audioset`, `vggsound`, `epic`, `kinetics`,
`moments`). Standard library only: the CLI reads the registry for its help.

Labels. `Item.labels` are indices into `Annotations.class_names`. For EPIC-KITCHENS the label
space is the concatenation of the noun (300) and verb (97) classes, in that order
(`class_splits=(300, 97)`, `split_names=('noun', 'verb')`, the order of ViViT's Epic-Kitchens
config that MBT's multi-head model uses, spec §5): an item's labels are `(noun, 300 + verb)`,
so a multi-hot vector over `num_classes` is the two one-hot targets concatenated.

Errors. A bad row (unknown label, malformed or negative number or timestamp, wrong column count,
a quote left open at the end of the line, bytes that are not UTF-8) is a `Problem(file, line,
message)` and costs only its own line (a CSV row is one line: no format here has multi-line fields).
Without `skip_bad` the parser raises `AnnotationError` listing them; with it the rows are skipped and
kept in `Annotations.problems`. `load_annotations` also refuses annotations without items (an empty
or header-only file) and clips listed twice (same id and segment) unless `duplicates` is 'keep' or
'drop' (then listed in `Annotations.duplicates` and warned about). A missing media file never stops the
parse: the item is kept with `found=False` and listed by `Annotations.missing`; the dataset then
refuses to start unless asked to skip them.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any

from .audioset import parse_audioset
from .base import (
    MAX_LISTED,
    AnnotationError,
    Annotations,
    Item,
    PathLike,
    Problem,
    open_text,
    parse_timestamp,
    read_class_list,
)
from .epic import EPIC_SPLIT_NAMES, parse_epic100
from .formats import ANNOTATION_FORMATS, FORMATS, AnnotationFormat, formats_help
from .kinetics import parse_kinetics, parse_kinetics_sounds
from .locator import AUDIO_EXTENSIONS, DEFAULT_PATTERNS, MEDIA_EXTENSIONS, VIDEO_EXTENSIONS, MediaLocator
from .manifest import parse_folder, parse_manifest
from .moments import parse_moments_in_time
from .vggsound import VGGSOUNDER_SUBSETS, modality_subset_targets, parse_vggsound, parse_vggsounder

__all__ = [
    "ANNOTATION_FORMATS",
    "AUDIO_EXTENSIONS",
    "DEFAULT_PATTERNS",
    "DUPLICATES",
    "EPIC_SPLIT_NAMES",
    "FORMATS",
    "MEDIA_EXTENSIONS",
    "VGGSOUNDER_SUBSETS",
    "VIDEO_EXTENSIONS",
    "AnnotationError",
    "AnnotationFormat",
    "Annotations",
    "Item",
    "MediaLocator",
    "PathLike",
    "Problem",
    "find_duplicates",
    "formats_help",
    "load_annotations",
    "modality_subset_targets",
    "open_text",
    "parse_audioset",
    "parse_epic100",
    "parse_folder",
    "parse_kinetics",
    "parse_kinetics_sounds",
    "parse_manifest",
    "parse_moments_in_time",
    "parse_timestamp",
    "parse_vggsound",
    "parse_vggsounder",
    "read_class_list",
]

# ---------------------------------------------------------------------- dispatcher
DUPLICATES = ("error", "keep", "drop")
"""What `load_annotations` does with a clip listed twice: refuse the file, or keep/drop the repeats
(each reported in `Annotations.duplicates` and warned about)."""


def find_duplicates(items: Sequence[Item]) -> list[tuple[Item, Item]]:
    """(earlier, repeat) for each item whose clip (id, file and source segment) came before."""
    seen: dict[tuple[Any, ...], Item] = {}
    pairs = []
    for it in items:
        key = (it.video_id, it.path, it.extra.get("source_start", it.start), it.extra.get("source_end", it.end))
        if key in seen:
            pairs.append((seen[key], it))
        else:
            seen[key] = it
    return pairs


def _checked(ann: Annotations, duplicates: str) -> Annotations:
    """Refuse annotations without items, and handle repeated clips as `duplicates` says."""
    where = ", ".join(ann.sources)
    if not ann.items:
        why = (f"all {len(ann.problems)} rows are bad" if ann.problems
               else "no media files in its class folders" if ann.format == "folder"
               else "the file is empty or has only a header")
        raise AnnotationError(f"{where}: no items ({why})", ann.problems)
    pairs = find_duplicates(ann.items)
    if not pairs:
        return ann
    found = [
        Problem(rep.source, rep.line, f"clip {rep.video_id} [{rep.extra.get('source_start', rep.start)}-"
                                      f"{rep.extra.get('source_end', rep.end)} s] repeats {first.source}:{first.line}")
        for first, rep in pairs
    ]
    listed = "\n".join(f"  {p}" for p in found[:MAX_LISTED]) + ("\n  ..." if len(found) > MAX_LISTED else "")
    if duplicates == "error":
        raise AnnotationError(
            f"{where}: {len(found)} duplicated clip(s):\n{listed}\n"
            "(keep or drop them with duplicates='keep'|'drop' / --duplicates keep|drop)",
            found,
        )
    repeats = {id(rep) for _, rep in pairs}
    items = ann.items if duplicates == "keep" else [it for it in ann.items if id(it) not in repeats]
    done = "kept" if duplicates == "keep" else "dropped"
    warnings.warn(f"{where}: {len(found)} duplicated clip(s), {done}:\n{listed}", stacklevel=3)
    return dataclasses.replace(ann, items=items, duplicates=found)


def load_annotations(
    format: str,
    files: Sequence[PathLike],
    *,
    classes: PathLike | None = None,
    verb_classes: PathLike | None = None,
    noun_classes: PathLike | None = None,
    root: PathLike | None = None,
    path_pattern: str | None = None,
    ext: str | None = None,
    split: str | None = None,
    trimmed: bool | None = None,
    skip_bad: bool = False,
    duplicates: str = "error",
) -> Annotations:
    """Parse `files` in `format` (one of `FORMATS`, see `ANNOTATION_FORMATS`); options the format
    does not accept must be unset. Annotations without items are refused; a clip listed twice is
    refused, kept or dropped as `duplicates` says (one of `DUPLICATES`; never silently)."""
    if format not in ANNOTATION_FORMATS:
        raise AnnotationError(f"unknown annotation format {format!r}; known: {list(FORMATS)}")
    fmt = ANNOTATION_FORMATS[format]
    if duplicates not in DUPLICATES:
        raise AnnotationError(f"duplicates={duplicates!r}: expected one of {list(DUPLICATES)}")
    files = list(files)
    if not files:
        raise AnnotationError(f"format {format!r} needs an annotation file (or folder)")
    if not fmt.many_files and len(files) > 1:
        raise AnnotationError(f"format {format!r} takes one annotation file, got {len(files)}")
    given = {"classes": classes, "verb_classes": verb_classes, "noun_classes": noun_classes, "root": root,
             "path_pattern": path_pattern, "ext": ext, "split": split, "trimmed": trimmed}
    unused = [k for k, v in given.items() if v is not None and k not in fmt.options]
    if unused:
        raise AnnotationError(f"format {format!r} does not take {unused} (it takes {list(fmt.options)})")
    kwargs = {fmt.keywords.get(k, k): v for k, v in given.items() if v is not None}
    return _checked(fmt.parse(files if fmt.many_files else files[0], skip_bad=skip_bad, **kwargs), duplicates)
