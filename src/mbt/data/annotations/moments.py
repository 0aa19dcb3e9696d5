"""Moments in Time: `trainingSet.csv`/`validationSet.csv` + `moments_categories.txt`."""

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
    in_index_order,
    open_text,
    read_class_list,
    strip_gz,
    unique_names,
)
from .locator import locator_for


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
        names = _moments_categories(path) if strip_gz(path.name).endswith(".txt") else read_class_list(path)
    else:
        names = list(classes)
    index = class_index(names)
    locator = locator_for("moments-in-time", root, path_pattern, ext)
    rows = BadRows(skip_bad)
    items = []
    for line, row in csv_rows(csv_path):
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
    return unique_names(path, in_index_order(path, indexed))


