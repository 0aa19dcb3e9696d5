"""EPIC-KITCHENS-100: `EPIC_100_{train,validation}.csv` + verb/noun class CSVs (two label blocks)."""

from __future__ import annotations

import ast
from pathlib import Path

from .base import (
    AnnotationError,
    Annotations,
    BadRows,
    Item,
    PathLike,
    csv_rows,
    full_rows,
    parse_timestamp,
    read_class_list,
)
from .locator import locator_for

EPIC_SPLIT_NAMES = ("noun", "verb")
"""Order of EPIC's label blocks, as ViViT's Epic-Kitchens config (`class_splits=[300, 97]`)."""

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
    locator = locator_for("epic100", root, path_pattern, ext)
    rows = BadRows(skip_bad)
    it = csv_rows(csv_path, rows)
    first = next(it, None)
    header = [h.strip() for h in first[1]] if first else []
    missing_cols = [c for c in _EPIC_COLUMNS if c not in header]
    if missing_cols:
        raise AnnotationError(f"{csv_path}:1: missing column(s) {missing_cols}; header is {header}")
    items = []
    for line, row in full_rows(csv_path, rows, it, len(header)):
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


