"""Kinetics CSVs (`label,youtube_id,time_start,time_end,split`) and the OGM-GE Kinetics-Sounds lists."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .base import (
    AnnotationError,
    Annotations,
    BadRows,
    Item,
    PathLike,
    check_split,
    class_index,
    csv_rows,
    full_rows,
    parse_seconds,
    resolve_classes,
)
from .locator import file_segment, locator_for, time_fields


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
    rows = BadRows(skip_bad)
    it = csv_rows(csv_path, rows)
    first = next(it, None)
    header = [h.strip() for h in first[1]] if first else []
    need = ("label", "youtube_id", "time_start", "time_end")
    if any(c not in header for c in need):
        raise AnnotationError(f"{csv_path}:1: expected columns {list(need)}, got header {header}")
    records = []
    for line, row in full_rows(csv_path, rows, it, len(header)):
        records.append((line, dict(zip(header, (c.strip() for c in row), strict=True))))
    names = resolve_classes(classes, (r["label"] for _, r in records))
    if "split" in header:
        check_split(csv_path, split, {r["split"] for _, r in records})
    elif split is not None:
        raise AnnotationError(f"{csv_path}: no 'split' column to select {split!r} from")
    index = class_index(names)
    locator = locator_for("kinetics", root, path_pattern, ext)
    items = []
    for line, rec in records:
        if split is not None and rec["split"] != split:
            continue
        try:
            start, end = parse_seconds(rec["time_start"]), parse_seconds(rec["time_end"])
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
                  "split": rec.get("split", ""), **time_fields(start, end)}
        path, found = locator.locate(fields)
        seg = file_segment(start, end, trimmed)
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
    rows = BadRows(skip_bad)
    records = []
    for line, row in csv_rows(txt_path, rows):
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
        names = resolve_classes(classes, ())
    else:
        names = [str(i) for i in range(max((r[3] for r in records), default=-1) + 1)]
    locator = locator_for("kinetics-sounds", root, path_pattern, ext)
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
            end = int(m.group("end")) if m.group("end") else parse_seconds(str(start + duration))
            fields.update(ytid=m.group("ytid"), **time_fields(start, end))
            extra = {"ytid": m.group("ytid"), "source_start": float(start), "source_end": float(end)}
        path, found = locator.locate(fields)
        items.append(
            Item(path, (cls,), start=0.0, end=duration, video_id=clip_id, source=str(txt_path), line=line,
                 found=found, extra=extra)
        )
    return Annotations(
        items, names, problems=rows.finish(), format="kinetics-sounds", sources=(str(txt_path),)
    )


