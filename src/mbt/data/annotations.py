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
- `load_annotations(format, files, ...)`: the dispatcher used by the CLI and the trainer.

Labels. `Item.labels` are indices into `Annotations.class_names`. For EPIC-KITCHENS the label
space is the concatenation of the noun (300) and verb (97) classes, in that order
(`class_splits=(300, 97)`, `split_names=('noun', 'verb')`, the order of ViViT's Epic-Kitchens
config that MBT's multi-head model uses, spec §5): an item's labels are `(noun, 300 + verb)`,
so a multi-hot vector over `num_classes` is the two one-hot targets concatenated.

Locating media. Formats that name YouTube clips (AudioSet, VGGSound, Kinetics, Kinetics-Sounds)
or EPIC videos are matched to files under `root` by trying naming patterns in order; the first
that exists wins. A pattern is a `str.format` template over the fields of a row, written without
an extension (any media extension matches; `ext` restricts it) or with one (exact match):

    audioset          {ytid}_{start:06d}, {ytid}_{start_ms}_{end_ms}, Y{ytid}, {ytid}
    vggsound          {ytid}_{start:06d}, {ytid}        (also vggsounder)
    kinetics          {label}/{ytid}_{start:06d}_{end:06d}, {label_}/..., {ytid}_{start:06d}_{end:06d}, {ytid}
    kinetics-sounds   {clip_id}, {label}/{clip_id}, {label_}/{clip_id}
    epic100           {participant}/videos/{video_id}, {participant}/{video_id}, {video_id}

Fields: `ytid`, `start`, `end` (int when whole seconds), `start_ms`, `end_ms`, `label`, `label_`
(spaces -> underscores), `split`, `clip_id` (the row's own id), `participant`, `video_id`,
`narration_id`. `path_pattern` replaces the list with one pattern of your own.

Segments. For the YouTube-clip formats the stored files are usually the cut segment (`trimmed=True`,
the default): the item's segment is then `[0, end - start]` of the file. With `trimmed=False` the
files are the full source videos and the segment is `[start, end]`. EPIC segments are always cut
from the long videos by `start_timestamp`/`stop_timestamp`.

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

import ast
import csv
import dataclasses
import gzip
import io
import json
import os
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

PathLike = str | os.PathLike

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".ts", ".3gp")
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".opus")
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS + AUDIO_EXTENSIONS
"""Files recognised as media (compared case-insensitively, so EPIC's `.MP4` matches)."""

FORMATS = ("folder", "csv", "jsonl", "audioset", "vggsound", "vggsounder", "epic100", "kinetics",
           "kinetics-sounds", "moments-in-time")

DEFAULT_PATTERNS: dict[str, tuple[str, ...]] = {
    "audioset": ("{ytid}_{start:06d}", "{ytid}_{start_ms}_{end_ms}", "Y{ytid}", "{ytid}"),
    "vggsound": ("{ytid}_{start:06d}", "{ytid}"),
    "kinetics": (
        "{label}/{ytid}_{start:06d}_{end:06d}",
        "{label_}/{ytid}_{start:06d}_{end:06d}",
        "{ytid}_{start:06d}_{end:06d}",
        "{ytid}",
    ),
    "kinetics-sounds": ("{clip_id}", "{label}/{clip_id}", "{label_}/{clip_id}"),
    "epic100": ("{participant}/videos/{video_id}", "{participant}/{video_id}", "{video_id}"),
    "moments-in-time": ("{path}",),
}

EPIC_SPLIT_NAMES = ("noun", "verb")
"""Order of EPIC's label blocks, as ViViT's Epic-Kitchens config (`class_splits=[300, 97]`)."""

_MAX_LISTED = 10  # problems named in an error message


class AnnotationError(ValueError):
    """Bad annotation input; `problems` lists every bad row found (file, line, message)."""

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


class Problem(NamedTuple):
    """One bad row: annotation file, 1-based line number (0: not from a line) and what is wrong."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}" if self.line else f"{self.file}: {self.message}"


@dataclass
class Item:
    """One labelled example: a media file and, optionally, a segment of it."""

    path: str
    """Media file (under `root` when one was given, else as written / as the pattern made it)."""
    labels: tuple[int, ...]
    """Indices into `Annotations.class_names`."""
    start: float | None = None
    """Segment start in seconds of file time; None with `end` None: the whole file."""
    end: float | None = None
    """Segment end in seconds of file time; None: the end of the file."""
    video_id: str = ""
    """Identifier reported with predictions and used to group test views (YouTube id, Kinetics-Sounds
    clip id, EPIC narration_id, or the path relative to the folder/manifest)."""
    source: str = ""
    """Annotation file the item came from."""
    line: int = 0
    """1-based line in `source` (0 for folder datasets)."""
    found: bool | None = None
    """Whether the media file exists; None when it was not checked (no root given)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Format-specific fields (EPIC verb/noun/narration, the source segment of a trimmed clip...)."""


@dataclass
class Annotations:
    """Items with their class list; what a dataset is built from."""

    items: list[Item]
    class_names: list[str]
    multi_label: bool = False
    """Several labels per item are allowed (sigmoid loss); False: one class per item (per split)."""
    class_splits: tuple[int, ...] = ()
    """Sizes of the label blocks of a multi-head dataset (EPIC: (300, 97)); () for one head."""
    split_names: tuple[str, ...] = ()
    """Names of the label blocks (EPIC: ('noun', 'verb'))."""
    problems: list[Problem] = field(default_factory=list)
    """Bad rows that were skipped (`skip_bad=True`)."""
    duplicates: list[Problem] = field(default_factory=list)
    """Rows repeating an earlier clip (same id and segment), kept or dropped as `load_annotations`
    was asked; each names the earlier row."""
    format: str = ""
    sources: tuple[str, ...] = ()
    """Annotation files (or the folder) the items came from."""
    notes: list[str] = field(default_factory=list)
    """What a reader of the summary should know (e.g. that the rows of several splits are mixed)."""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def missing(self) -> list[Item]:
        """Items whose media file was looked for under the root and not found."""
        return [it for it in self.items if it.found is False]

    @property
    def num_multi_label_items(self) -> int:
        """Items with more than one label (EPIC: more than one per label block never happens)."""
        return sum(1 for it in self.items if len(it.labels) > (len(self.class_splits) or 1))

    def label_counts(self) -> list[int]:
        """Items per class."""
        counts = [0] * self.num_classes
        for it in self.items:
            for k in it.labels:
                counts[k] += 1
        return counts

    def label_names(self, item: Item) -> list[str]:
        return [self.class_names[k] for k in item.labels]

    def without_missing(self) -> Annotations:
        """A copy without the items whose file is missing."""
        return dataclasses.replace(self, items=[it for it in self.items if it.found is not False])

    def summary(self, first: int = 5) -> dict[str, Any]:
        """Counts, the first problems and missing files, and the first items with label names."""
        missing = self.missing
        return {
            "format": self.format,
            "sources": list(self.sources),
            "num_classes": self.num_classes,
            "class_splits": dict(zip(self.split_names, self.class_splits, strict=True)),
            "multi_label": self.multi_label,
            "num_items": len(self.items),
            "num_multi_label_items": self.num_multi_label_items,
            "files_checked": any(it.found is not None for it in self.items),
            "num_missing_files": len(missing),
            "missing_first": [f"{it.source}:{it.line}: {it.path}" for it in missing[:first]],
            "notes": list(self.notes),
            "num_problems": len(self.problems),
            "problems_first": [str(p) for p in self.problems[:first]],
            "num_duplicates": len(self.duplicates),
            "duplicates_first": [str(p) for p in self.duplicates[:first]],
            "first_items": [
                {
                    "video_id": it.video_id,
                    "path": it.path,
                    "start": it.start,
                    "end": it.end,
                    "labels": self.label_names(it),
                }
                for it in self.items[:first]
            ],
        }


# ---------------------------------------------------------------------- helpers
def open_text(path: PathLike) -> io.TextIOBase:
    """Open a text file for the csv module; `.gz` is decompressed; a UTF-8 BOM is dropped."""
    if str(path).endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")  # type: ignore[return-value]
    return open(path, encoding="utf-8-sig", newline="")


def _strip_gz(name: str) -> str:
    return name[:-3] if name.endswith(".gz") else name


def _csv_rows(path: PathLike, rows: _Rows | None = None, **kwargs: Any) -> Iterator[tuple[int, list[str]]]:
    """(1-based line, fields) for each non-empty row. One row is one line: a line that is not UTF-8
    or whose quote runs over the line end (an unterminated quote) is a bad row that costs only
    itself, reported to `rows` (raised as `AnnotationError` naming file and line without `rows`, or
    on line 1)."""
    if not os.path.isfile(path):
        raise AnnotationError(f"{path}: no such annotation file")
    line = 0
    bad_lines: dict[int, str] = {}
    pending: list[bytes] = []  # lines a runaway quote swallowed, read again
    consumed: list[bytes] = []  # lines the reader took for the current row

    def lines(f: Any) -> Iterator[str]:
        while True:
            raw = pending.pop() if pending else f.readline()
            if not raw:
                return
            consumed.append(raw)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                bad_lines[line + len(consumed)] = f"not UTF-8 text: byte 0x{raw[e.start]:02x} at column {e.start + 1}"
                text = "\n"
            yield text.removeprefix("\ufeff") if line == 0 and len(consumed) == 1 else text

    def report(message: str) -> None:
        if rows is None or line == 1:  # line 1 may be the header: nothing reads right without it
            raise AnnotationError(f"{path}:{line}: {message}")
        rows.bad(path, line, message)

    try:
        with gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb") as f:
            reader = csv.reader(lines(f), **kwargs)
            while True:
                consumed.clear()
                try:
                    row = next(reader, None)
                except csv.Error:
                    if len(consumed) <= 1:
                        raise
                    row = ["\n"]  # a runaway quote hit the field size limit
                if row is None:
                    return
                line += 1
                if line in bad_lines:
                    report(bad_lines.pop(line))
                elif len(consumed) > 1 or (row and row[-1].endswith(("\n", "\r"))):  # a quote left open
                    report("unterminated quote (a quoted field runs over the end of the line)")
                    pending.extend(reversed(consumed[1:]))
                    reader = csv.reader(lines(f), **kwargs)
                elif row and any(cell.strip() for cell in row):
                    yield line, row
    except (csv.Error, gzip.BadGzipFile, EOFError, OSError) as e:
        raise AnnotationError(f"{path}:{max(line, 1)}: not readable as CSV text: {e}") from e


def _number(text: str) -> int | float:
    """Seconds as int when whole (so `{start:06d}` patterns work), else float."""
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"not a finite number: {text!r}")
    return int(value) if value.is_integer() else value


_TIMESTAMP = re.compile(r"^(\d+):([0-5]?\d):(\d+(?:\.\d*)?)$")


def parse_timestamp(text: str) -> float:
    """EPIC's `HH:MM:SS.ff` -> seconds."""
    m = _TIMESTAMP.match(text.strip())
    if not m:
        raise ValueError(f"malformed timestamp {text!r} (expected HH:MM:SS.ff)")
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))


class _Rows:
    """Collects bad rows; `finish` raises them unless skipping was asked for."""

    def __init__(self, skip_bad: bool) -> None:
        self.skip_bad = skip_bad
        self.problems: list[Problem] = []

    def bad(self, file: PathLike, line: int, message: str) -> None:
        self.problems.append(Problem(str(file), line, message))

    def finish(self) -> list[Problem]:
        if self.problems and not self.skip_bad:
            raise AnnotationError(
                f"{len(self.problems)} bad row(s) in the annotations:\n"
                + "\n".join(f"  {p}" for p in self.problems[:_MAX_LISTED])
                + ("\n  ..." if len(self.problems) > _MAX_LISTED else "")
                + "\n(fix them, or skip them with skip_bad=True / --skip-bad)",
                self.problems,
            )
        return self.problems


def _ext_ok(name: str, ext: str | None) -> bool:
    suffix = os.path.splitext(name)[1].lower()
    return suffix == ("." + ext.lstrip(".")).lower() if ext else suffix in MEDIA_EXTENSIONS


class MediaLocator:
    """Finds the media file of a row under `root` by trying naming patterns (module docstring)."""

    def __init__(
        self,
        root: PathLike | None,
        patterns: Sequence[str],
        ext: str | None = None,
        user_pattern: bool = False,
    ) -> None:
        self.root = Path(root) if root is not None else None
        self.patterns = tuple(patterns)
        self.ext = ext.lstrip(".") if ext else None
        self.user_pattern = user_pattern
        self._files: set[str] | None = None
        self._stems: dict[str, str] = {}
        if self.root is not None and not self.root.is_dir():
            raise AnnotationError(f"media root {self.root} is not a folder")

    def _index(self) -> set[str]:
        """All media files under root (relative posix paths), walked once."""
        if self._files is None:
            assert self.root is not None
            files: set[str] = set()
            for dirpath, dirnames, filenames in os.walk(self.root, followlinks=True):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                rel_dir = os.path.relpath(dirpath, self.root)
                for name in sorted(filenames):
                    if name.startswith(".") or not _ext_ok(name, self.ext):
                        continue
                    rel = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
                    files.add(rel)
                    stem = os.path.splitext(rel)[0]
                    # When a stem exists with several extensions the first video extension wins.
                    old = self._stems.get(stem)
                    if old is None or _ext_rank(rel) < _ext_rank(old):
                        self._stems[stem] = rel
            self._files = files
        return self._files

    def _format(self, pattern: str, fields: dict[str, Any]) -> str | None:
        try:
            return pattern.format(**fields)
        except KeyError as e:
            if self.user_pattern:
                raise AnnotationError(
                    f"path pattern {pattern!r} uses unknown field {e}; fields of this format: "
                    f"{sorted(fields)}"
                ) from None
            raise
        except ValueError:  # e.g. {start:06d} on a fractional start: the pattern does not apply
            if self.user_pattern:
                raise
            return None

    def locate(self, fields: dict[str, Any]) -> tuple[str, bool | None]:
        """(path, found); without a root the first pattern's path, unchecked (found None)."""
        names = [n for n in (self._format(p, fields) for p in self.patterns) if n is not None]
        if not names:
            raise ValueError(f"no path pattern applies to fields {fields}")
        if self.root is None:
            return _with_ext(names[0], self.ext), None
        files = self._index()
        for name in names:
            if os.path.splitext(name)[1].lower() in MEDIA_EXTENSIONS:
                if name in files:
                    return str(self.root / name), True
            elif name in self._stems:
                return str(self.root / self._stems[name]), True
        return str(self.root / _with_ext(names[0], self.ext)), False


def _ext_rank(name: str) -> int:
    suffix = os.path.splitext(name)[1].lower()
    return MEDIA_EXTENSIONS.index(suffix) if suffix in MEDIA_EXTENSIONS else len(MEDIA_EXTENSIONS)


def _with_ext(name: str, ext: str | None) -> str:
    if os.path.splitext(name)[1].lower() in MEDIA_EXTENSIONS:
        return name
    return f"{name}.{ext or 'mp4'}"


def _locator(
    fmt: str, root: PathLike | None, path_pattern: str | None, ext: str | None
) -> MediaLocator:
    if path_pattern:
        return MediaLocator(root, [path_pattern], ext, user_pattern=True)
    return MediaLocator(root, DEFAULT_PATTERNS[fmt], ext)


def _time_fields(start: int | float, end: int | float) -> dict[str, Any]:
    return {"start": start, "end": end, "start_ms": round(start * 1000), "end_ms": round(end * 1000)}


def _segment(start: float, end: float, trimmed: bool) -> tuple[float, float]:
    """Segment in file time: a trimmed clip file holds just [start, end] of its source."""
    return (0.0, float(end - start)) if trimmed else (float(start), float(end))


# ---------------------------------------------------------------------- class lists
_NAME_COLUMNS = ("display_name", "name", "class_name", "label", "k400_label", "key", "class")
_INDEX_COLUMNS = ("index", "id")


def read_class_list(path: PathLike) -> list[str]:
    """Class names in index order from a `.txt` (one per line) or a CSV.

    CSVs with a header take the name from the first of `display_name, name, class_name, label,
    k400_label, key, class` and order rows by `index`/`id` when present (AudioSet
    `class_labels_indices.csv`, VGGSounder classes, EPIC verb/noun classes, the Kinetics-Sounds list);
    headerless CSVs take the first column (VGGSound `stat.csv`).
    """
    path = Path(path)
    if _strip_gz(path.name).endswith(".txt"):
        with open_text(path) as f:
            names = [line.strip() for line in f if line.strip()]
    else:
        rows = list(_csv_rows(path))
        if not rows:
            raise AnnotationError(f"{path}: empty class list")
        header = [c.strip().lower() for c in rows[0][1]]
        name_col = next((header.index(c) for c in _NAME_COLUMNS if c in header), None)
        if name_col is None and not any(c in header for c in (*_INDEX_COLUMNS, "mid")):
            names = [row[0].strip() for _, row in rows]
        else:
            if name_col is None:
                raise AnnotationError(f"{path}:1: no class-name column among {list(_NAME_COLUMNS)}")
            index_col = next((header.index(c) for c in _INDEX_COLUMNS if c in header), None)
            indexed: list[tuple[int, str]] = []
            for k, (line, row) in enumerate(rows[1:]):
                if len(row) != len(header):
                    raise AnnotationError(f"{path}:{line}: expected {len(header)} columns, got {len(row)}")
                try:
                    idx = int(row[index_col]) if index_col is not None else k
                except ValueError:
                    raise AnnotationError(
                        f"{path}:{line}: class index {row[index_col]!r} is not an integer"
                    ) from None
                indexed.append((idx, row[name_col].strip()))
            indexed.sort()
            if [i for i, _ in indexed] != list(range(len(indexed))):
                raise AnnotationError(f"{path}: class indices are not 0..{len(indexed) - 1} without gaps")
            names = [n for _, n in indexed]
    duplicates = [n for n, c in Counter(names).items() if c > 1]
    if duplicates:
        raise AnnotationError(f"{path}: duplicate class names {duplicates[:5]}")
    if not names:
        raise AnnotationError(f"{path}: empty class list")
    return names


def _class_index(names: Sequence[str]) -> dict[str, int]:
    return {n: i for i, n in enumerate(names)}


# ---------------------------------------------------------------------- folder
def parse_folder(root: PathLike, *, ext: str | None = None, skip_bad: bool = False) -> Annotations:
    """A folder with one sub-folder per class (sorted names = class indices), media files inside
    (at any depth). Media files directly under `root` belong to no class: bad rows."""
    root = Path(root)
    if not root.is_dir():
        raise AnnotationError(f"{root} is not a folder")
    rows = _Rows(skip_bad)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for p in sorted(root.iterdir()):
        if p.is_file() and _ext_ok(p.name, ext):
            rows.bad(p, 0, "media file outside any class folder")
    if not classes:
        raise AnnotationError(f"{root}: no class sub-folders")
    items = []
    for k, name in enumerate(classes):
        for dirpath, dirnames, filenames in os.walk(root / name, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fname in sorted(filenames):
                if fname.startswith(".") or not _ext_ok(fname, ext):
                    continue
                path = Path(dirpath) / fname
                rel = path.relative_to(root).as_posix()
                items.append(
                    Item(str(path), (k,), video_id=os.path.splitext(rel)[0], source=str(root), found=True)
                )
    return Annotations(items, classes, problems=rows.finish(), format="folder", sources=(str(root),))


# ---------------------------------------------------------------------- manifest
def _label_tokens(value: Any) -> list[Any]:
    """A labels cell: a JSON list, 'a;b;c', a single name/index, or (JSONL) a list/int."""
    if isinstance(value, list):
        return value
    if isinstance(value, int):
        return [value]
    text = str(value).strip()
    if text.startswith("["):
        tokens = json.loads(text)
        if not isinstance(tokens, list):
            raise ValueError(f"labels {text!r} is not a list")
        return tokens
    return [t.strip() for t in text.split(";") if t.strip()]


def _is_index(token: Any) -> bool:
    return isinstance(token, int) or (isinstance(token, str) and token.strip().isdigit())


def parse_manifest(
    path: PathLike,
    *,
    classes: PathLike | Sequence[str] | None = None,
    root: PathLike | None = None,
    multi_label: bool | None = None,
    skip_bad: bool = False,
) -> Annotations:
    """A CSV (header row) or JSONL manifest with `path`, `label` or `labels`, optional `start`,
    `end` (seconds) and `video_id`; other columns go to `Item.extra`.

    Labels are class names or indices; several per item as 'a;b' or a JSON list. Classes come from
    `classes` (a file or a list), else the sorted set of names (or 0..max when all are indices).
    Relative paths are taken under `root`, else the manifest's folder. `multi_label` defaults to
    whether any item has several labels.
    """
    path = Path(path)
    base = Path(root) if root is not None else path.parent
    rows = _Rows(skip_bad)
    records = list(_manifest_records(path, rows))
    class_names = (
        (read_class_list(classes) if isinstance(classes, (str, os.PathLike)) else list(classes))
        if classes is not None
        else None
    )
    tokens_per_record = []
    for line, rec in records:
        try:
            tokens_per_record.append(_label_tokens(rec["labels"]))
        except (ValueError, TypeError) as e:
            rows.bad(path, line, f"unreadable labels {rec['labels']!r}: {e}")
            tokens_per_record.append(None)
    if class_names is None:
        all_tokens = [t for toks in tokens_per_record if toks for t in toks]
        if all_tokens and all(_is_index(t) for t in all_tokens):
            class_names = [str(i) for i in range(max(int(t) for t in all_tokens) + 1)]
        else:
            class_names = sorted({str(t).strip() for t in all_tokens})
    index = _class_index(class_names)
    items = []
    for (line, rec), tokens in zip(records, tokens_per_record, strict=True):
        if tokens is None:
            continue
        labels, bad = [], None
        for t in tokens:
            name = str(t).strip()
            if name in index:
                labels.append(index[name])
            elif _is_index(t) and 0 <= int(t) < len(class_names):
                labels.append(int(t))
            else:
                bad = f"unknown label {name!r}"
                break
        if bad is None and not labels:
            bad = "no label"
        start = end = None
        try:
            if rec.get("start") not in (None, ""):
                start = float(rec["start"])
            if rec.get("end") not in (None, ""):
                end = float(rec["end"])
        except (TypeError, ValueError):
            bad = bad or f"start/end {rec.get('start')!r}/{rec.get('end')!r} are not numbers"
        if bad is None and start is not None and start < 0:
            bad = f"negative start time {start}"
        if bad is None and start is not None and end is not None and end <= start:
            bad = f"segment end {end} <= start {start}"
        if not rec.get("path"):
            bad = "empty path"
        if bad:
            rows.bad(path, line, bad)
            continue
        rel = str(rec["path"])
        media = Path(rel) if os.path.isabs(rel) else base / rel
        extra = {k: v for k, v in rec.items() if k not in ("path", "label", "labels", "start", "end", "video_id")}
        items.append(
            Item(
                str(media),
                tuple(dict.fromkeys(labels)),
                start=start,
                end=end,
                video_id=str(rec.get("video_id") or os.path.splitext(rel)[0]),
                source=str(path),
                line=line,
                found=media.is_file(),
                extra=extra,
            )
        )
    if multi_label is None:
        multi_label = any(len(it.labels) > 1 for it in items)
    elif not multi_label:
        for it in items:
            if len(it.labels) > 1:
                rows.bad(path, it.line, f"{len(it.labels)} labels but multi_label=False")
        items = [it for it in items if len(it.labels) == 1]
    fmt = "jsonl" if _strip_gz(path.name).endswith((".jsonl", ".json")) else "csv"
    return Annotations(
        items, class_names, multi_label=multi_label, problems=rows.finish(), format=fmt, sources=(str(path),)
    )


def _manifest_records(path: Path, rows: _Rows) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, record with a 'labels' key) from a CSV or JSONL manifest."""
    if _strip_gz(path.name).endswith((".jsonl", ".json")):
        with open_text(path) as f:
            for line, text in enumerate(f, start=1):
                if not text.strip():
                    continue
                try:
                    rec = json.loads(text)
                except json.JSONDecodeError as e:
                    rows.bad(path, line, f"invalid JSON: {e.msg}")
                    continue
                if not isinstance(rec, dict):
                    rows.bad(path, line, "a JSON object is expected")
                    continue
                labels = rec.get("labels", rec.get("label"))
                if labels is None:
                    rows.bad(path, line, "no 'label' or 'labels' field")
                    continue
                yield line, {**rec, "labels": labels}
        return
    it = _csv_rows(path, rows)
    first = next(it, None)
    if first is None:
        raise AnnotationError(f"{path}: empty manifest")
    header = [h.strip().lower() for h in first[1]]
    label_col = "labels" if "labels" in header else "label" if "label" in header else None
    if "path" not in header or label_col is None:
        raise AnnotationError(f"{path}:{first[0]}: the header needs 'path' and 'label' or 'labels', got {header}")
    for line, row in it:
        if len(row) != len(header):
            rows.bad(path, line, f"expected {len(header)} columns, got {len(row)}")
            continue
        rec = dict(zip(header, row, strict=True))
        rec["labels"] = rec.pop(label_col)
        yield line, rec


# ---------------------------------------------------------------------- AudioSet
def parse_audioset(
    segments: PathLike | Sequence[PathLike],
    class_labels: PathLike | None = None,
    *,
    root: PathLike | None = None,
    path_pattern: str | None = None,
    ext: str | None = None,
    trimmed: bool = True,
    skip_bad: bool = False,
) -> Annotations:
    """AudioSet segment CSVs (`# ...` header lines, then `YTID, start, end, "mid1,mid2"`) and the
    527-class `class_labels_indices.csv` (default: next to the first segments file). Multi-label.
    The header's row counts are not trusted; rows are counted as read."""
    files = [Path(segments)] if isinstance(segments, (str, os.PathLike)) else [Path(s) for s in segments]
    class_labels = Path(class_labels) if class_labels else files[0].parent / "class_labels_indices.csv"
    names = read_class_list(class_labels)  # validates the indices
    mids = _audioset_mids(class_labels)
    index = _class_index(mids)
    locator = _locator("audioset", root, path_pattern, ext)
    rows = _Rows(skip_bad)
    items = []
    for file in files:
        for line, row in _csv_rows(file, rows, skipinitialspace=True):
            if row[0].lstrip().startswith("#"):
                continue
            if len(row) != 4:
                rows.bad(file, line, f"expected 4 columns (YTID, start, end, labels), got {len(row)}")
                continue
            ytid, start_s, end_s, mid_s = (c.strip() for c in row)
            try:
                start, end = _number(start_s), _number(end_s)
            except ValueError:
                rows.bad(file, line, f"start/end {start_s!r}/{end_s!r} are not numbers")
                continue
            if start < 0:
                rows.bad(file, line, f"negative start time {start_s}")
                continue
            if end <= start:
                rows.bad(file, line, f"segment end {end} <= start {start}")
                continue
            row_mids = [m.strip() for m in mid_s.split(",") if m.strip()]
            unknown = [m for m in row_mids if m not in index]
            if unknown or not row_mids:
                rows.bad(file, line, f"unknown label(s) {unknown}" if unknown else "no label")
                continue
            path, found = locator.locate({"ytid": ytid, **_time_fields(start, end)})
            seg = _segment(start, end, trimmed)
            items.append(
                Item(
                    path,
                    tuple(dict.fromkeys(index[m] for m in row_mids)),
                    start=seg[0],
                    end=seg[1],
                    video_id=ytid,
                    source=str(file),
                    line=line,
                    found=found,
                    extra={"source_start": float(start), "source_end": float(end)},
                )
            )
    return Annotations(
        items,
        names,
        multi_label=True,
        problems=rows.finish(),
        format="audioset",
        sources=tuple(str(f) for f in files),
    )


def _audioset_mids(path: Path) -> list[str]:
    """The `mid` column of `class_labels_indices.csv`, in index order."""
    rows = list(_csv_rows(path))
    header = [c.strip() for c in rows[0][1]] if rows else []
    if header[:3] != ["index", "mid", "display_name"]:
        raise AnnotationError(f"{path}:1: expected header 'index,mid,display_name', got {header}")
    pairs = sorted((int(row[0]), row[1].strip()) for _, row in rows[1:])
    return [m for _, m in pairs]


# ---------------------------------------------------------------------- VGGSound
_VGG_CLIP = re.compile(r"^(?P<ytid>[A-Za-z0-9_-]{11})_(?P<start>\d+)(?:\.[A-Za-z0-9]+)?$")


def parse_vggsound(
    csv_path: PathLike,
    *,
    classes: PathLike | Sequence[str] | None = None,
    split: str | None = None,
    root: PathLike | None = None,
    path_pattern: str | None = None,
    ext: str | None = None,
    trimmed: bool = True,
    clip_seconds: float = 10.0,
    skip_bad: bool = False,
) -> Annotations:
    """`vggsound.csv`: `ytid,start_seconds,label,split` without header (CRLF, quoted labels with
    commas), or one of the authors' split lists (hche11/VGGSound `data/train.csv`, `test.csv`:
    `ytid_%06d.mp4,label`); the first row's column count tells which. Each clip lasts
    `clip_seconds` from its start. Classes: `classes` (the official 309-class list, `stat.csv` or
    `vggsounder_classes.csv`), else the sorted labels of all rows (so train and test share
    indices). `split` keeps the rows of that split ('train' or 'test'); a split list is one split
    already (a file name that starts with `train`/`test` must agree)."""
    csv_path = Path(csv_path)
    rows = _Rows(skip_bad)
    records = []
    width = 0
    for line, row in _csv_rows(csv_path, rows):
        width = width or (2 if len(row) == 2 else 4)
        if len(row) != width:
            shape = "ytid, start, label, split" if width == 4 else "ytid_start.mp4, label (a split list)"
            rows.bad(csv_path, line, f"expected {width} columns ({shape}), got {len(row)}")
            continue
        cells = [c.strip() for c in row]
        if width == 2:
            m = _VGG_CLIP.match(cells[0])
            if not m:
                rows.bad(csv_path, line, f"clip {cells[0]!r} is not `ytid_start.mp4` (11-character YouTube id)")
                continue
            named = re.match(r"(train|test)(?![A-Za-z])", csv_path.name)
            cells = [m.group("ytid"), m.group("start"), cells[1], named.group(1) if named else split or ""]
        records.append((line, cells))
    names = _resolve_classes(classes, (r[2] for _, r in records))
    notes: list[str] = []
    if width == 2:
        if split is not None and records and records[0][1][3] not in (split, ""):
            raise AnnotationError(f"{csv_path}: a split list of {records[0][1][3]!r} (by its name), "
                                  f"not of split {split!r}")
    else:
        present = Counter(r[3] for _, r in records)
        _check_split(csv_path, split, set(present))
        if split is None and len(present) > 1:
            notes.append("rows of all splits are mixed (" + ", ".join(f"{n} {k}" for k, n in sorted(present.items()))
                         + "): choose one with --split / dataset.*_split")
    index = _class_index(names)
    locator = _locator("vggsound", root, path_pattern, ext)
    items = []
    for line, (ytid, start_s, label, row_split) in records:
        if width == 4 and split is not None and row_split != split:
            continue
        try:
            start = _number(start_s)
        except ValueError:
            rows.bad(csv_path, line, f"start {start_s!r} is not a number")
            continue
        if start < 0:
            rows.bad(csv_path, line, f"negative start time {start_s} (clip {ytid}_{start_s})")
            continue
        if label not in index:
            rows.bad(csv_path, line, f"unknown label {label!r}")
            continue
        end = _number(str(start + clip_seconds))
        fields = {"ytid": ytid, "label": label, "label_": label.replace(" ", "_"), "split": row_split}
        path, found = locator.locate({**fields, **_time_fields(start, end)})
        seg = _segment(start, end, trimmed)
        items.append(
            Item(
                path,
                (index[label],),
                start=seg[0],
                end=seg[1],
                video_id=f"{ytid}_{int(start):06d}" if isinstance(start, int) else f"{ytid}_{start}",
                source=str(csv_path),
                line=line,
                found=found,
                extra={"split": row_split, "source_start": float(start), "source_end": float(end)},
            )
        )
    return Annotations(items, names, problems=rows.finish(), format="vggsound", sources=(str(csv_path),),
                       notes=notes)


# ---------------------------------------------------------------------- VGGSounder
_VGGSOUNDER_COLUMNS = ("video_id", "label", "modality", "background_music", "static_image", "voice_over")
VGGSOUNDER_SUBSETS: dict[str, frozenset[str]] = {
    "a": frozenset({"A", "AV"}),
    "v": frozenset({"V", "AV"}),
    "av": frozenset({"AV"}),
    "a_only": frozenset({"A"}),
    "v_only": frozenset({"V"}),
}
"""VGGSounder's modality subsets (its benchmark's `a`, `v`, `av`, `a only`, `v only`): the label
modality tags each keeps. Evaluated on a subset, a video's targets are its labels with those tags,
and videos without any are left out."""


def parse_vggsounder(
    csv_path: PathLike,
    *,
    classes: PathLike | Sequence[str] | None = None,
    root: PathLike | None = None,
    path_pattern: str | None = None,
    ext: str | None = None,
    trimmed: bool = True,
    clip_seconds: float = 10.0,
    skip_bad: bool = False,
) -> Annotations:
    """VGGSounder (Zverev et al., ICCV 2025), the multi-label re-annotation of the VGGSound test
    set: `video_id,label,modality,background_music,static_image,voice_over`, one row per (video,
    label), `video_id` = `ytid_%06d`. Multi-label; each item's `extra["modalities"]` holds the tag
    (A, V or AV) of each of its labels, in label order, and its meta flags are in `extra`. Classes:
    `classes` (`vggsounder_classes.csv`, the 309 VGGSound classes), else the sorted labels."""
    csv_path = Path(csv_path)
    rows = _Rows(skip_bad)
    it = _csv_rows(csv_path)
    first = next(it, None)
    header = [h.strip() for h in first[1]] if first else []
    if tuple(header[:6]) != _VGGSOUNDER_COLUMNS:
        raise AnnotationError(f"{csv_path}:1: expected header {','.join(_VGGSOUNDER_COLUMNS)}, got {header}")
    videos: dict[str, dict[str, Any]] = {}
    for line, row in it:
        if len(row) != len(header):
            rows.bad(csv_path, line, f"expected {len(header)} columns, got {len(row)}")
            continue
        video_id, label, modality, *flags = (c.strip() for c in row[:6])
        m = _VGG_CLIP.match(video_id)
        if not m:
            rows.bad(csv_path, line, f"video_id {video_id!r} is not `ytid_start` (11-character YouTube id)")
            continue
        if modality not in ("A", "V", "AV"):
            rows.bad(csv_path, line, f"modality {modality!r} is not A, V or AV")
            continue
        if any(f not in ("True", "False") for f in flags):
            rows.bad(csv_path, line, f"background_music/static_image/voice_over {flags} are not True/False")
            continue
        video = videos.setdefault(video_id, {"line": line, "match": m, "labels": {}, "flags": flags})
        if label in video["labels"]:
            rows.bad(csv_path, line, f"label {label!r} repeated for video {video_id}")
            continue
        video["labels"][label] = (line, modality)
    names = _resolve_classes(classes, (lab for v in videos.values() for lab in v["labels"]))
    index = _class_index(names)
    locator = _locator("vggsound", root, path_pattern, ext)
    items = []
    for video_id, video in videos.items():
        unknown = [(line, lab) for lab, (line, _) in video["labels"].items() if lab not in index]
        if unknown:
            for line, lab in unknown:
                rows.bad(csv_path, line, f"unknown label {lab!r}")
            continue
        ytid, start = video["match"].group("ytid"), int(video["match"].group("start"))
        end = _number(str(start + clip_seconds))
        path, found = locator.locate({"ytid": ytid, "split": "test", **_time_fields(start, end)})
        seg = _segment(start, end, trimmed)
        flags = dict(zip(_VGGSOUNDER_COLUMNS[3:], (f == "True" for f in video["flags"]), strict=True))
        items.append(
            Item(
                path,
                tuple(index[lab] for lab in video["labels"]),
                start=seg[0],
                end=seg[1],
                video_id=video_id,
                source=str(csv_path),
                line=video["line"],
                found=found,
                extra={"split": "test", "source_start": float(start), "source_end": float(end),
                       "modalities": tuple(mod for _, mod in video["labels"].values()), **flags},
            )
        )
    return Annotations(items, names, multi_label=True, problems=rows.finish(), format="vggsounder",
                       sources=(str(csv_path),))


def modality_subset_targets(annotations: Annotations, subset: str) -> tuple[list[int], list[tuple[int, ...]]]:
    """VGGSounder: (positions of the items that have a label in `subset`, their labels in it); see
    `VGGSOUNDER_SUBSETS`."""
    if subset not in VGGSOUNDER_SUBSETS:
        raise ValueError(f"unknown modality subset {subset!r}; known: {list(VGGSOUNDER_SUBSETS)}")
    keep = VGGSOUNDER_SUBSETS[subset]
    positions, labels = [], []
    for i, item in enumerate(annotations.items):
        tags = item.extra.get("modalities")
        if tags is None:
            raise ValueError(f"{item.source}:{item.line}: no modality tags (format 'vggsounder' has them)")
        chosen = tuple(k for k, tag in zip(item.labels, tags, strict=True) if tag in keep)
        if chosen:
            positions.append(i)
            labels.append(chosen)
    return positions, labels


def _resolve_classes(classes: PathLike | Sequence[str] | None, labels: Iterator[str] | Any) -> list[str]:
    if classes is None:
        return sorted(set(labels))
    if isinstance(classes, (str, os.PathLike)):
        return read_class_list(classes)
    return list(classes)


def _check_split(path: Path, split: str | None, present: set[str]) -> None:
    if split is not None and split not in present:
        raise AnnotationError(f"{path}: no rows of split {split!r}; splits present: {sorted(present)}")


# ---------------------------------------------------------------------- EPIC-KITCHENS-100
_EPIC_COLUMNS = ("narration_id", "participant_id", "video_id", "start_timestamp", "stop_timestamp",
                 "verb_class", "noun_class")


def parse_epic100(
    csv_path: PathLike,
    *,
    verb_classes: PathLike | None = None,
    noun_classes: PathLike | None = None,
    root: PathLike | None = None,
    path_pattern: str | None = None,
    ext: str | None = None,
    skip_bad: bool = False,
) -> Annotations:
    """EPIC-KITCHENS-100 `EPIC_100_train.csv` / `EPIC_100_validation.csv` (same 15 columns). Each row
    is a segment `[start_timestamp, stop_timestamp]` of a long video `video_id`; targets are the noun
    and the verb (labels `(noun, 300 + verb)`, see the module docstring). The class CSVs default to
    `EPIC_100_{verb,noun}_classes.csv` next to `csv_path`."""
    csv_path = Path(csv_path)
    verbs = read_class_list(verb_classes or csv_path.parent / "EPIC_100_verb_classes.csv")
    nouns = read_class_list(noun_classes or csv_path.parent / "EPIC_100_noun_classes.csv")
    locator = _locator("epic100", root, path_pattern, ext)
    rows = _Rows(skip_bad)
    it = _csv_rows(csv_path, rows)
    first = next(it, None)
    header = [h.strip() for h in first[1]] if first else []
    missing_cols = [c for c in _EPIC_COLUMNS if c not in header]
    if missing_cols:
        raise AnnotationError(f"{csv_path}:1: missing column(s) {missing_cols}; header is {header}")
    items = []
    for line, row in it:
        if len(row) != len(header):
            rows.bad(csv_path, line, f"expected {len(header)} columns, got {len(row)}")
            continue
        rec = dict(zip(header, (c.strip() for c in row), strict=True))
        try:
            start = parse_timestamp(rec["start_timestamp"])
            stop = parse_timestamp(rec["stop_timestamp"])
        except ValueError as e:
            rows.bad(csv_path, line, str(e))
            continue
        if stop <= start:
            rows.bad(csv_path, line, f"stop_timestamp {rec['stop_timestamp']} <= start {rec['start_timestamp']}")
            continue
        try:
            verb, noun = int(rec["verb_class"]), int(rec["noun_class"])
            all_nouns = tuple(ast.literal_eval(rec["all_noun_classes"])) if rec.get("all_noun_classes") else (noun,)
        except (ValueError, SyntaxError):
            rows.bad(csv_path, line, f"verb_class/noun_class {rec['verb_class']!r}/{rec['noun_class']!r} "
                                     "are not integers")
            continue
        if not (0 <= verb < len(verbs) and 0 <= noun < len(nouns)):
            rows.bad(csv_path, line, f"unknown label: verb_class {verb} (of {len(verbs)}), "
                                     f"noun_class {noun} (of {len(nouns)})")
            continue
        fields = {"participant": rec["participant_id"], "video_id": rec["video_id"],
                  "narration_id": rec["narration_id"]}
        path, found = locator.locate(fields)
        items.append(
            Item(
                path,
                (noun, len(nouns) + verb),
                start=start,
                end=stop,
                video_id=rec["narration_id"],
                source=str(csv_path),
                line=line,
                found=found,
                extra={
                    "video": rec["video_id"],
                    "participant": rec["participant_id"],
                    "verb": rec.get("verb", verbs[verb]),
                    "verb_class": verb,
                    "noun": rec.get("noun", nouns[noun]),
                    "noun_class": noun,
                    "all_noun_classes": all_nouns,
                    "narration": rec.get("narration", ""),
                },
            )
        )
    return Annotations(
        items,
        nouns + verbs,
        class_splits=(len(nouns), len(verbs)),
        split_names=EPIC_SPLIT_NAMES,
        problems=rows.finish(),
        format="epic100",
        sources=(str(csv_path),),
    )


# ---------------------------------------------------------------------- Kinetics
def parse_kinetics(
    csv_path: PathLike,
    *,
    classes: PathLike | Sequence[str] | None = None,
    split: str | None = None,
    root: PathLike | None = None,
    path_pattern: str | None = None,
    ext: str | None = None,
    trimmed: bool = True,
    skip_bad: bool = False,
) -> Annotations:
    """Kinetics CSVs with header `label,youtube_id,time_start,time_end,split[,is_cc]`. Classes:
    `classes`, else the sorted labels of all rows; `split` keeps rows of that split."""
    csv_path = Path(csv_path)
    rows = _Rows(skip_bad)
    it = _csv_rows(csv_path, rows)
    first = next(it, None)
    header = [h.strip() for h in first[1]] if first else []
    need = ("label", "youtube_id", "time_start", "time_end")
    if any(c not in header for c in need):
        raise AnnotationError(f"{csv_path}:1: expected columns {list(need)}, got header {header}")
    records = []
    for line, row in it:
        if len(row) != len(header):
            rows.bad(csv_path, line, f"expected {len(header)} columns, got {len(row)}")
            continue
        records.append((line, dict(zip(header, (c.strip() for c in row), strict=True))))
    names = _resolve_classes(classes, (r["label"] for _, r in records))
    if "split" in header:
        _check_split(csv_path, split, {r["split"] for _, r in records})
    elif split is not None:
        raise AnnotationError(f"{csv_path}: no 'split' column to select {split!r} from")
    index = _class_index(names)
    locator = _locator("kinetics", root, path_pattern, ext)
    items = []
    for line, rec in records:
        if split is not None and rec["split"] != split:
            continue
        try:
            start, end = _number(rec["time_start"]), _number(rec["time_end"])
        except ValueError:
            rows.bad(csv_path, line, f"time_start/time_end {rec['time_start']!r}/{rec['time_end']!r} "
                                     "are not numbers")
            continue
        if start < 0:
            rows.bad(csv_path, line, f"negative time_start {rec['time_start']}")
            continue
        if end <= start:
            rows.bad(csv_path, line, f"time_end {end} <= time_start {start}")
            continue
        label = rec["label"]
        if label not in index:
            rows.bad(csv_path, line, f"unknown label {label!r}")
            continue
        fields = {"ytid": rec["youtube_id"], "label": label, "label_": label.replace(" ", "_"),
                  "split": rec.get("split", ""), **_time_fields(start, end)}
        path, found = locator.locate(fields)
        seg = _segment(start, end, trimmed)
        items.append(
            Item(
                path,
                (index[label],),
                start=seg[0],
                end=seg[1],
                video_id=rec["youtube_id"],
                source=str(csv_path),
                line=line,
                found=found,
                extra={"split": rec.get("split", ""), "source_start": float(start), "source_end": float(end)},
            )
        )
    return Annotations(items, names, problems=rows.finish(), format="kinetics", sources=(str(csv_path),))


_KS_ID = re.compile(r"^(?P<ytid>[A-Za-z0-9_-]{11})_(?P<start>\d+)(?:_(?P<end>\d+))?$")


def parse_kinetics_sounds(
    txt_path: PathLike,
    *,
    classes: PathLike | Sequence[str] | None = None,
    root: PathLike | None = None,
    path_pattern: str | None = None,
    ext: str | None = None,
    skip_bad: bool = False,
) -> Annotations:
    """The Kinetics-Sounds lists of OGM-GE (`my_train.txt`, `my_test.txt`): `clip_id,duration,class`
    with `clip_id` = `ytid_start` or `ytid_{start:06d}_{end:06d}`; the files are trimmed clips named
    by `clip_id`. Class names from `classes` (e.g. the 31-class list), else the indices as names."""
    txt_path = Path(txt_path)
    rows = _Rows(skip_bad)
    records = []
    for line, row in _csv_rows(txt_path, rows):
        if len(row) != 3:
            rows.bad(txt_path, line, f"expected 3 columns (clip_id, duration, class_index), got {len(row)}")
            continue
        clip_id, dur_s, cls_s = (c.strip() for c in row)
        try:
            duration, cls = float(dur_s), int(cls_s)
        except ValueError:
            rows.bad(txt_path, line, f"duration/class {dur_s!r}/{cls_s!r} are not numbers")
            continue
        records.append((line, clip_id, duration, cls))
    if classes is not None:
        names = _resolve_classes(classes, ())
    else:
        names = [str(i) for i in range(max((r[3] for r in records), default=-1) + 1)]
    locator = _locator("kinetics-sounds", root, path_pattern, ext)
    items = []
    for line, clip_id, duration, cls in records:
        if not 0 <= cls < len(names):
            rows.bad(txt_path, line, f"unknown label: class index {cls} (of {len(names)})")
            continue
        if duration <= 0:
            rows.bad(txt_path, line, f"duration {duration} <= 0")
            continue
        m = _KS_ID.match(clip_id)
        fields: dict[str, Any] = {"clip_id": clip_id, "label": names[cls], "label_": names[cls].replace(" ", "_")}
        extra: dict[str, Any] = {}
        if m:
            start = int(m.group("start"))
            end = int(m.group("end")) if m.group("end") else _number(str(start + duration))
            fields.update(ytid=m.group("ytid"), **_time_fields(start, end))
            extra = {"ytid": m.group("ytid"), "source_start": float(start), "source_end": float(end)}
        path, found = locator.locate(fields)
        items.append(
            Item(path, (cls,), start=0.0, end=duration, video_id=clip_id, source=str(txt_path), line=line,
                 found=found, extra=extra)
        )
    return Annotations(
        items, names, problems=rows.finish(), format="kinetics-sounds", sources=(str(txt_path),)
    )


# ---------------------------------------------------------------------- Moments in Time
def parse_moments_in_time(
    csv_path: PathLike,
    *,
    classes: PathLike | Sequence[str] | None = None,
    root: PathLike | None = None,
    path_pattern: str | None = None,
    ext: str | None = None,
    skip_bad: bool = False,
) -> Annotations:
    """Moments in Time `trainingSet.csv` / `validationSet.csv`: `path,label,agreement,disagreement`
    without header, `path` relative to the split's video folder (`training/`, `validation/`:
    give it as `root`). Classes: `classes`, default `moments_categories.txt` next to the CSV
    (`name,index` lines, or one name per line)."""
    csv_path = Path(csv_path)
    if classes is None or isinstance(classes, (str, os.PathLike)):
        path = Path(classes) if classes is not None else csv_path.parent / "moments_categories.txt"
        names = _moments_categories(path) if _strip_gz(path.name).endswith(".txt") else read_class_list(path)
    else:
        names = list(classes)
    index = _class_index(names)
    locator = _locator("moments-in-time", root, path_pattern, ext)
    rows = _Rows(skip_bad)
    items = []
    for line, row in _csv_rows(csv_path):
        if len(row) != 4:
            rows.bad(csv_path, line, f"expected 4 columns (path, label, agreement, disagreement), got {len(row)}")
            continue
        rel, label, agree, disagree = (c.strip() for c in row)
        parts = Path(rel).parts
        if not rel or os.path.isabs(rel) or ".." in parts:
            rows.bad(csv_path, line, f"path {rel!r} is not inside the video folder")
            continue
        if label not in index:
            rows.bad(csv_path, line, f"unknown label {label!r}")
            continue
        try:
            agreement, disagreement = int(agree), int(disagree)
        except ValueError:
            rows.bad(csv_path, line, f"agreement/disagreement {agree!r}/{disagree!r} are not integers")
            continue
        path, found = locator.locate({"path": rel, "label": label, "label_": label.replace(" ", "_")})
        items.append(
            Item(path, (index[label],), video_id=os.path.splitext(rel)[0], source=str(csv_path), line=line,
                 found=found, extra={"agreement": agreement, "disagreement": disagreement})
        )
    return Annotations(items, names, problems=rows.finish(), format="moments-in-time", sources=(str(csv_path),))


def _moments_categories(path: Path) -> list[str]:
    """`moments_categories.txt`: `name,index` lines (index order checked), or plain names."""
    if not path.is_file():
        raise AnnotationError(f"{path}: no class list next to the annotations; give it with classes")
    indexed: list[tuple[int, str]] = []
    with open_text(path) as f:
        lines = [(n, text.strip()) for n, text in enumerate(f, start=1) if text.strip()]
    if not any("," in text for _, text in lines):
        return read_class_list(path)
    for n, text in lines:
        name, _, idx = text.rpartition(",")
        try:
            indexed.append((int(idx), name.strip()))
        except ValueError:
            raise AnnotationError(f"{path}:{n}: expected 'name,index', got {text!r}") from None
    indexed.sort()
    if [i for i, _ in indexed] != list(range(len(indexed))):
        raise AnnotationError(f"{path}: class indices are not 0..{len(indexed) - 1} without gaps")
    names = [name for _, name in indexed]
    duplicates = [n for n, c in Counter(names).items() if c > 1]
    if duplicates:
        raise AnnotationError(f"{path}: duplicate class names {duplicates[:5]}")
    return names


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
        why = f"all {len(ann.problems)} rows are bad" if ann.problems else "the file is empty or has only a header"
        raise AnnotationError(f"{where}: no items ({why})", ann.problems)
    pairs = find_duplicates(ann.items)
    if not pairs:
        return ann
    found = [
        Problem(rep.source, rep.line, f"clip {rep.video_id} [{rep.extra.get('source_start', rep.start)}-"
                                      f"{rep.extra.get('source_end', rep.end)} s] repeats {first.source}:{first.line}")
        for first, rep in pairs
    ]
    listed = "\n".join(f"  {p}" for p in found[:_MAX_LISTED]) + ("\n  ..." if len(found) > _MAX_LISTED else "")
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
    """Parse `files` in `format` (one of `FORMATS`); options a format does not take must be unset.
    Annotations without items are refused; a clip listed twice is refused, kept or dropped as
    `duplicates` says (one of `DUPLICATES`; never silently).

    `folder`: files = [the folder]; `csv`/`jsonl`: [manifest]; `audioset`: segment CSVs (+
    `classes` = class_labels_indices.csv); `vggsound`, `vggsounder`, `kinetics`, `kinetics-sounds`, `epic100`,
    `moments-in-time`: one annotation file."""
    if format not in FORMATS:
        raise AnnotationError(f"unknown annotation format {format!r}; known: {list(FORMATS)}")
    if duplicates not in DUPLICATES:
        raise AnnotationError(f"duplicates={duplicates!r}: expected one of {list(DUPLICATES)}")
    files = list(files)
    if not files:
        raise AnnotationError(f"format {format!r} needs an annotation file (or folder)")
    if format != "audioset" and len(files) > 1:
        raise AnnotationError(f"format {format!r} takes one annotation file, got {len(files)}")
    given = {"classes": classes, "verb_classes": verb_classes, "noun_classes": noun_classes, "root": root,
             "path_pattern": path_pattern, "split": split, "trimmed": trimmed}
    locate = {"root": root, "path_pattern": path_pattern, "ext": ext, "skip_bad": skip_bad}
    trim = {} if trimmed is None else {"trimmed": trimmed}
    parsers: dict[str, tuple[Callable[..., Annotations], dict[str, Any], tuple[str, ...]]] = {
        "folder": (parse_folder, {"ext": ext, "skip_bad": skip_bad}, ()),
        "csv": (parse_manifest, {"classes": classes, "root": root, "skip_bad": skip_bad}, ("classes", "root")),
        "jsonl": (parse_manifest, {"classes": classes, "root": root, "skip_bad": skip_bad}, ("classes", "root")),
        "audioset": (parse_audioset, {"class_labels": classes, **locate, **trim},
                     ("classes", "root", "path_pattern", "trimmed")),
        "vggsound": (parse_vggsound, {"classes": classes, "split": split, **locate, **trim},
                     ("classes", "root", "path_pattern", "split", "trimmed")),
        "vggsounder": (parse_vggsounder, {"classes": classes, **locate, **trim},
                       ("classes", "root", "path_pattern", "trimmed")),
        "kinetics": (parse_kinetics, {"classes": classes, "split": split, **locate, **trim},
                     ("classes", "root", "path_pattern", "split", "trimmed")),
        "kinetics-sounds": (parse_kinetics_sounds, {"classes": classes, **locate},
                            ("classes", "root", "path_pattern")),
        "epic100": (parse_epic100, {"verb_classes": verb_classes, "noun_classes": noun_classes, **locate},
                    ("verb_classes", "noun_classes", "root", "path_pattern")),
        "moments-in-time": (parse_moments_in_time, {"classes": classes, **locate}, ("classes", "root", "path_pattern")),
    }
    parser, kwargs, accepted = parsers[format]
    unused = [k for k, v in given.items() if v is not None and k not in accepted]
    if unused:
        raise AnnotationError(f"format {format!r} does not take {unused}")
    first = files if format == "audioset" else files[0]
    return _checked(parser(first, **kwargs), duplicates)
