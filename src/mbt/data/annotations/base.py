"""The annotation data model (`Item`, `Annotations`, `Problem`, `AnnotationError`) and the row readers
every format shares: CSV rows that cost only their own line, numbers, timestamps, class lists."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import os
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

PathLike = str | os.PathLike

MAX_LISTED = 10  # problems named in an error message


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


def strip_gz(name: str) -> str:
    return name[:-3] if name.endswith(".gz") else name


def csv_rows(path: PathLike, rows: BadRows | None = None, **kwargs: Any) -> Iterator[tuple[int, list[str]]]:
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


def full_rows(path: PathLike, rows: BadRows, lines: Iterator[tuple[int, list[str]]], width: int
               ) -> Iterator[tuple[int, list[str]]]:
    """The rows of `lines` (from `csv_rows`) with `width` fields; any other is a bad row."""
    for line, row in lines:
        if len(row) != width:
            rows.bad(path, line, f"expected {width} columns, got {len(row)}")
            continue
        yield line, row


def parse_seconds(text: str) -> int | float:
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


class BadRows:
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
                + "\n".join(f"  {p}" for p in self.problems[:MAX_LISTED])
                + ("\n  ..." if len(self.problems) > MAX_LISTED else "")
                + "\n(fix them, or skip them with skip_bad=True / --skip-bad)",
                self.problems,
            )
        return self.problems


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
    if strip_gz(path.name).endswith(".txt"):
        with open_text(path) as f:
            names = [line.strip() for line in f if line.strip()]
    else:
        rows = list(csv_rows(path))
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
            names = in_index_order(path, indexed)
    if not unique_names(path, names):
        raise AnnotationError(f"{path}: empty class list")
    return names


def in_index_order(path: PathLike, indexed: list[tuple[int, str]]) -> list[str]:
    """The names of (index, name) pairs in index order; the indices must be 0..n-1 without gaps."""
    indexed.sort()
    if [i for i, _ in indexed] != list(range(len(indexed))):
        raise AnnotationError(f"{path}: class indices are not 0..{len(indexed) - 1} without gaps")
    return [n for _, n in indexed]


def unique_names(path: PathLike, names: list[str]) -> list[str]:
    """`names`, refused when one repeats."""
    duplicates = [n for n, c in Counter(names).items() if c > 1]
    if duplicates:
        raise AnnotationError(f"{path}: duplicate class names {duplicates[:5]}")
    return names


def class_index(names: Sequence[str]) -> dict[str, int]:
    return {n: i for i, n in enumerate(names)}


def resolve_classes(classes: PathLike | Sequence[str] | None, labels: Iterator[str] | Any) -> list[str]:
    if classes is None:
        return sorted(set(labels))
    if isinstance(classes, (str, os.PathLike)):
        return read_class_list(classes)
    return list(classes)


def check_split(path: Path, split: str | None, present: set[str]) -> None:
    if split is not None and split not in present:
        raise AnnotationError(f"{path}: no rows of split {split!r}; splits present: {sorted(present)}")


