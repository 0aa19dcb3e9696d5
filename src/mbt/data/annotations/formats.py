"""The annotation formats, in one registry: each format's parser, the options it accepts and a
line saying what its files are. `load_annotations` dispatches on it, the command line builds
its `--format` choices and help from it, and `DatasetConfig` checks `dataset.format` against
it. A new format is one `AnnotationFormat` entry in `ANNOTATION_FORMATS`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .audioset import parse_audioset
from .base import Annotations
from .epic import parse_epic100
from .kinetics import parse_kinetics, parse_kinetics_sounds
from .manifest import parse_folder, parse_manifest
from .moments import parse_moments_in_time
from .vggsound import parse_vggsound, parse_vggsounder

OPTIONS = ("classes", "verb_classes", "noun_classes", "root", "path_pattern", "ext", "split", "trimmed")
"""The options of `load_annotations` that a format may accept (`skip_bad` and `duplicates`
apply to every format)."""

_LOCATED = ("root", "path_pattern", "ext")
"""The options of the formats whose rows name media files by id, found under `root`."""


@dataclass(frozen=True)
class AnnotationFormat:
    """One annotation format."""

    name: str
    """The `format` / `dataset.format` / `--format` value."""
    parse: Callable[..., Annotations]
    """The parser: called with the annotation file (the list of files when `many_files`), the
    accepted options that are set, and `skip_bad`."""
    options: tuple[str, ...]
    """The `OPTIONS` it accepts; any other set option is refused, never ignored."""
    doc: str
    """What its annotation files are, in a few words (help texts)."""
    many_files: bool = False
    """It reads several annotation files together (AudioSet's segment CSVs)."""
    named_classes: bool = False
    """Its class list can be given as names (e.g. a trained model's `label_names`) as well as a file."""
    keywords: dict[str, str] = field(default_factory=dict)
    """The parser's keyword for an option, where it differs from the option's name."""


ANNOTATION_FORMATS: dict[str, AnnotationFormat] = {f.name: f for f in (
    AnnotationFormat("folder", parse_folder, ("classes", "ext"), "a folder with one sub-folder per class",
                     named_classes=True),
    AnnotationFormat("csv", parse_manifest, ("classes", "root"), "a CSV manifest (path,label[s][,start,end])",
                     named_classes=True),
    AnnotationFormat("jsonl", parse_manifest, ("classes", "root"), "a JSONL manifest", named_classes=True),
    AnnotationFormat("audioset", parse_audioset, ("classes", *_LOCATED, "trimmed"),
                     "AudioSet segment CSVs (+ --classes class_labels_indices.csv)", many_files=True,
                     keywords={"classes": "class_labels"}),
    AnnotationFormat("vggsound", parse_vggsound, ("classes", *_LOCATED, "split", "trimmed"),
                     "vggsound.csv or a VGGSound split list", named_classes=True),
    AnnotationFormat("vggsounder", parse_vggsounder, ("classes", *_LOCATED, "trimmed"),
                     "VGGSounder's vggsounder.csv", named_classes=True),
    AnnotationFormat("epic100", parse_epic100, ("verb_classes", "noun_classes", *_LOCATED),
                     "EPIC_100_{train,validation}.csv"),
    AnnotationFormat("kinetics", parse_kinetics, ("classes", *_LOCATED, "split", "trimmed"), "a Kinetics CSV",
                     named_classes=True),
    AnnotationFormat("kinetics-sounds", parse_kinetics_sounds, ("classes", *_LOCATED),
                     "an OGM-GE Kinetics-Sounds list", named_classes=True),
    AnnotationFormat("moments-in-time", parse_moments_in_time, ("classes", *_LOCATED),
                     "a Moments in Time CSV"),
)}
"""Every annotation format by name."""

FORMATS = tuple(ANNOTATION_FORMATS)
"""The names of the annotation formats."""


def formats_help() -> str:
    """'name: files; ...' for every format, for help texts."""
    return "; ".join(f"{f.name}: {f.doc}" for f in ANNOTATION_FORMATS.values())
