"""VGGSound (`vggsound.csv` or the authors' split lists) and VGGSounder's multi-label re-annotation of
its test set, with the modality subsets VGGSounder evaluates."""

from __future__ import annotations

import re
from collections import Counter
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
    rows = BadRows(skip_bad)
    records = []
    width = 0
    for line, row in csv_rows(csv_path, rows):
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
    names = resolve_classes(classes, (r[2] for _, r in records))
    notes: list[str] = []
    if width == 2:
        if split is not None and records and records[0][1][3] not in (split, ""):
            raise AnnotationError(f"{csv_path}: a split list of {records[0][1][3]!r} (by its name), "
                                  f"not of split {split!r}")
    else:
        present = Counter(r[3] for _, r in records)
        check_split(csv_path, split, set(present))
        if split is None and len(present) > 1:
            notes.append("rows of all splits are mixed (" + ", ".join(f"{n} {k}" for k, n in sorted(present.items()))
                         + "): choose one with --split / dataset.*_split")
    index = class_index(names)
    locator = locator_for("vggsound", root, path_pattern, ext)
    items = []
    for line, (ytid, start_s, label, row_split) in records:
        if width == 4 and split is not None and row_split != split:
            continue
        try:
            start = parse_seconds(start_s)
        except ValueError:
            rows.bad(csv_path, line, f"start {start_s!r} is not a number")
            continue
        if start < 0:
            rows.bad(csv_path, line, f"negative start time {start_s} (clip {ytid}_{start_s})")
            continue
        if label not in index:
            rows.bad(csv_path, line, f"unknown label {label!r}")
            continue
        end = parse_seconds(str(start + clip_seconds))
        fields = {"ytid": ytid, "label": label, "label_": label.replace(" ", "_"), "split": row_split}
        path, found = locator.locate({**fields, **time_fields(start, end)})
        seg = file_segment(start, end, trimmed)
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
    rows = BadRows(skip_bad)
    it = csv_rows(csv_path)
    first = next(it, None)
    header = [h.strip() for h in first[1]] if first else []
    if tuple(header[:6]) != _VGGSOUNDER_COLUMNS:
        raise AnnotationError(f"{csv_path}:1: expected header {','.join(_VGGSOUNDER_COLUMNS)}, got {header}")
    videos: dict[str, dict[str, Any]] = {}
    for line, row in full_rows(csv_path, rows, it, len(header)):
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
    names = resolve_classes(classes, (lab for v in videos.values() for lab in v["labels"]))
    index = class_index(names)
    locator = locator_for("vggsound", root, path_pattern, ext)
    items = []
    for video_id, video in videos.items():
        unknown = [(line, lab) for lab, (line, _) in video["labels"].items() if lab not in index]
        if unknown:
            for line, lab in unknown:
                rows.bad(csv_path, line, f"unknown label {lab!r}")
            continue
        ytid, start = video["match"].group("ytid"), int(video["match"].group("start"))
        end = parse_seconds(str(start + clip_seconds))
        path, found = locator.locate({"ytid": ytid, "split": "test", **time_fields(start, end)})
        seg = file_segment(start, end, trimmed)
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


