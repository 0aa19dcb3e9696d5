"""AudioSet: segment CSVs + `class_labels_indices.csv` (multi-label, 527 classes)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .base import (
    AnnotationError,
    Annotations,
    BadRows,
    Item,
    PathLike,
    class_index,
    csv_rows,
    parse_seconds,
    read_class_list,
)
from .locator import file_segment, locator_for, time_fields


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
    index = class_index(mids)
    locator = locator_for("audioset", root, path_pattern, ext)
    rows = BadRows(skip_bad)
    items = []
    for file in files:
        for line, row in csv_rows(file, rows, skipinitialspace=True):
            if row[0].lstrip().startswith("#"):
                continue
            if len(row) != 4:
                rows.bad(file, line, f"expected 4 columns (YTID, start, end, labels), got {len(row)}")
                continue
            ytid, start_s, end_s, mid_s = (c.strip() for c in row)
            try:
                start, end = parse_seconds(start_s), parse_seconds(end_s)
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
            path, found = locator.locate({"ytid": ytid, **time_fields(start, end)})
            seg = file_segment(start, end, trimmed)
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
    rows = list(csv_rows(path))
    header = [c.strip() for c in rows[0][1]] if rows else []
    if header[:3] != ["index", "mid", "display_name"]:
        raise AnnotationError(f"{path}:1: expected header 'index,mid,display_name', got {header}")
    pairs = sorted((int(row[0]), row[1].strip()) for _, row in rows[1:])
    return [m for _, m in pairs]


