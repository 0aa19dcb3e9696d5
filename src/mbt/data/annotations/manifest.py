"""Formats without a dataset behind them: a folder per class, a CSV or JSONL manifest."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ...io import not_a_file
from .base import (
    AnnotationError,
    Annotations,
    BadRows,
    Item,
    PathLike,
    class_index,
    csv_rows,
    full_rows,
    open_text,
    read_class_list,
    resolve_classes,
    strip_gz,
)
from .locator import ext_ok


def parse_folder(root: PathLike, *, classes: PathLike | Sequence[str] | None = None, ext: str | None = None,
                 skip_bad: bool = False) -> Annotations:
    """A folder with one sub-folder per class, media files inside (at any depth). Classes:
    `classes` (a file or a list; a sub-folder not in it is a bad row), else the sorted
    sub-folder names. Media files directly under `root` belong to no class: bad rows."""
    root = Path(root)
    if not root.is_dir():
        raise AnnotationError(f"{root} is not a folder")
    rows = BadRows(skip_bad)
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for p in sorted(root.iterdir()):
        if p.is_file() and ext_ok(p.name, ext):
            rows.bad(p, 0, "media file outside any class folder")
    if not folders:
        raise AnnotationError(f"{root}: no class sub-folders")
    names = resolve_classes(classes, folders)
    index = {name: k for k, name in enumerate(names)}
    for name in folders:
        if name not in index:
            rows.bad(root / name, 0, f"class folder {name!r} is not in the class list (first: {names[:3]})")
    items = []
    for name in folders:
        if name not in index:
            continue
        k = index[name]
        for dirpath, dirnames, filenames in os.walk(root / name, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fname in sorted(filenames):
                if fname.startswith(".") or not ext_ok(fname, ext):
                    continue
                path = Path(dirpath) / fname
                problem = not_a_file(path)  # a FIFO or device named like media: opening it would block
                if problem:
                    rows.bad(path, 0, problem)
                    continue
                rel = path.relative_to(root).as_posix()
                items.append(
                    Item(str(path), (k,), video_id=os.path.splitext(rel)[0], source=str(root), found=True)
                )
    return Annotations(items, names, problems=rows.finish(), format="folder", sources=(str(root),))


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
    rows = BadRows(skip_bad)
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
    index = class_index(class_names)
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
    fmt = "jsonl" if strip_gz(path.name).endswith((".jsonl", ".json")) else "csv"
    return Annotations(
        items, class_names, multi_label=multi_label, problems=rows.finish(), format=fmt, sources=(str(path),)
    )


def _manifest_records(path: Path, rows: BadRows) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, record with a 'labels' key) from a CSV or JSONL manifest."""
    if strip_gz(path.name).endswith((".jsonl", ".json")):
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
    it = csv_rows(path, rows)
    first = next(it, None)
    if first is None:
        raise AnnotationError(f"{path}: empty manifest")
    header = [h.strip().lower() for h in first[1]]
    label_col = "labels" if "labels" in header else "label" if "label" in header else None
    if "path" not in header or label_col is None:
        raise AnnotationError(f"{path}:{first[0]}: the header needs 'path' and 'label' or 'labels', got {header}")
    for line, row in full_rows(path, rows, it, len(header)):
        rec = dict(zip(header, row, strict=True))
        rec["labels"] = rec.pop(label_col)
        yield line, rec


