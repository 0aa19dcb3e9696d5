"""Damaged copies of the real annotation files: every damage is reported with file and line
(issue 11 §4): empty and header-only files, negative start times, duplicated clips, an
unterminated quote, a non-UTF-8 byte."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from mbt.cli import main
from mbt.data.annotations import AnnotationError, load_annotations

A = Path(__file__).parent / "assets" / "annotations"
AUDIOSET_CLASSES = str(A / "audioset/class_labels_indices.csv")


def _lines(name: str, n: int) -> list[str]:
    """The first `n` lines of a real annotation file, line ends kept."""
    path = A / name
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return data.decode("utf-8").splitlines(keepends=True)[:n]


def _write(tmp_path: Path, name: str, lines: list[str]) -> str:
    path = tmp_path / name
    path.write_text("".join(lines), encoding="utf-8", newline="")
    return str(path)


def _load(fmt: str, path: str, **kwargs):
    if fmt == "audioset":
        kwargs.setdefault("classes", AUDIOSET_CLASSES)
    return load_annotations(fmt, [path], **kwargs)


@pytest.mark.parametrize("fmt", ["audioset", "vggsound"])
def test_empty_file_is_an_error_naming_it(tmp_path, capsys, fmt):
    path = _write(tmp_path, "empty.csv", [])
    with pytest.raises(AnnotationError, match=r"empty\.csv: no items \(the file is empty or has only a header\)"):
        _load(fmt, path)
    extra = ["--classes", AUDIOSET_CLASSES] if fmt == "audioset" else []
    assert main(["data", "summary", "--format", fmt, path, *extra]) == 1
    assert "empty.csv: no items" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("fmt", "name", "header_lines"),
    [("audioset", "audioset/eval_segments.csv.gz", 3), ("kinetics", "kinetics/k400_validate.csv.gz", 1)],
)
def test_header_only_file_is_an_error_naming_it(tmp_path, fmt, name, header_lines):
    path = _write(tmp_path, "header_only.csv", _lines(name, header_lines))
    with pytest.raises(AnnotationError, match=r"header_only\.csv: no items"):
        _load(fmt, path)


def test_all_rows_bad_with_skip_bad_is_an_error(tmp_path):
    lines = _lines("kinetics/k400_validate.csv.gz", 3)
    lines[1:] = [line.replace(",validate", ",validate,extra") for line in lines[1:]]
    path = _write(tmp_path, "k.csv", lines)
    with pytest.raises(AnnotationError, match=r"k\.csv: no items \(all 2 rows are bad\)"):
        _load("kinetics", path, skip_bad=True)


def _negate_start(fmt: str, line: str) -> str:
    cells = line.split(",")
    column = {"audioset": 1, "vggsound": 1, "kinetics": 2}[fmt]
    cells[column] = " -5.000" if fmt == "audioset" else "-5"
    return ",".join(cells)


@pytest.mark.parametrize(
    ("fmt", "name", "first_row"),
    [
        ("audioset", "audioset/eval_segments.csv.gz", 3),
        ("vggsound", "vggsound/vggsound_head.csv", 0),
        ("kinetics", "kinetics/k400_validate.csv.gz", 1),
    ],
)
def test_negative_start_is_rejected_with_file_and_line(tmp_path, fmt, name, first_row):
    lines = _lines(name, first_row + 10)
    lines[first_row + 4] = _negate_start(fmt, lines[first_row + 4])
    path = _write(tmp_path, "neg.csv", lines)
    with pytest.raises(AnnotationError, match=rf"neg\.csv:{first_row + 5}: negative (start time|time_start) -5"):
        _load(fmt, path)
    ann = _load(fmt, path, skip_bad=True)
    assert len(ann.items) == 9 and [p.line for p in ann.problems] == [first_row + 5]


def test_vggsound_negative_start_names_the_clip(tmp_path):
    lines = _lines("vggsound/vggsound_head.csv", 5)
    ytid = lines[2].split(",")[0]
    lines[2] = _negate_start("vggsound", lines[2])
    path = _write(tmp_path, "vgg.csv", lines)
    with pytest.raises(AnnotationError, match=rf"vgg\.csv:3: negative start time -5 \(clip {ytid}_-5\)"):
        _load("vggsound", path)


def test_negative_start_in_a_manifest_is_rejected(tmp_path):
    path = _write(tmp_path, "m.csv", ["path,label,start,end\n", "a.mp4,x,0,2\n", "b.mp4,y,-1,2\n"])
    with pytest.raises(AnnotationError, match=r"m\.csv:3: negative start time -1"):
        load_annotations("csv", [path])


@pytest.mark.parametrize(
    ("fmt", "name", "first_row"),
    [
        ("audioset", "audioset/eval_segments.csv.gz", 3),
        ("vggsound", "vggsound/vggsound_head.csv", 0),
        ("kinetics", "kinetics/k400_validate.csv.gz", 1),
        ("epic100", "epic_kitchens_100/EPIC_100_validation.csv.gz", 1),
        ("kinetics-sounds", "kinetics/kinetics_sounds_ogmge_my_test.txt", 0),
    ],
)
def test_duplicated_clips_are_reported_then_kept_or_dropped(tmp_path, fmt, name, first_row):
    lines = _lines(name, first_row + 10)
    lines.append(lines[first_row + 2])  # the third row again, as line first_row + 11
    folder = tmp_path / "d"
    folder.mkdir()
    path = _write(folder, "dup.csv", lines)
    kwargs = {}
    if fmt == "epic100":
        kwargs = {"verb_classes": str(A / "epic_kitchens_100/EPIC_100_verb_classes.csv"),
                  "noun_classes": str(A / "epic_kitchens_100/EPIC_100_noun_classes.csv")}
    where = rf"dup\.csv:{first_row + 11}: clip .* repeats .*dup\.csv:{first_row + 3}"
    with pytest.raises(AnnotationError, match=rf"1 duplicated clip\(s\):\n  .*{where}"):
        _load(fmt, path, **kwargs)
    with pytest.warns(UserWarning, match=rf"1 duplicated clip\(s\), kept:\n  .*{where}"):
        kept = _load(fmt, path, duplicates="keep", **kwargs)
    with pytest.warns(UserWarning, match=r"1 duplicated clip\(s\), dropped"):
        dropped = _load(fmt, path, duplicates="drop", **kwargs)
    assert len(kept.items) == 11 and len(dropped.items) == 10
    assert [(p.line, p.file) for p in kept.duplicates] == [(first_row + 11, path)]
    assert kept.summary()["num_duplicates"] == dropped.summary()["num_duplicates"] == 1


def test_duplicates_across_audioset_files_name_both(tmp_path):
    lines = _lines("audioset/eval_segments.csv.gz", 8)
    a = _write(tmp_path, "a.csv", lines)
    b = _write(tmp_path, "b.csv", lines[:3] + lines[6:7])
    with pytest.raises(AnnotationError, match=r"b\.csv:4: clip .* repeats .*a\.csv:7"):
        load_annotations("audioset", [a, b], classes=AUDIOSET_CLASSES)


def test_duplicates_option_in_the_cli(tmp_path, capsys):
    lines = _lines("kinetics/k400_validate.csv.gz", 6)
    path = _write(tmp_path, "k.csv", [*lines, lines[2]])
    assert main(["data", "summary", "--format", "kinetics", path]) == 1
    assert "k.csv:7: clip" in capsys.readouterr().err
    with pytest.warns(UserWarning):
        assert main(["data", "summary", "--format", "kinetics", path, "--duplicates", "drop"]) == 0
    out = capsys.readouterr().out
    assert "items: 5 " in out and "duplicated clips (drop): 1" in out and "k.csv:7: clip" in out


@pytest.mark.parametrize(
    ("fmt", "name", "first_row"),
    [("kinetics", "kinetics/k400_validate.csv.gz", 1), ("vggsound", "vggsound/vggsound_head.csv", 0)],
)
def test_unterminated_quote_costs_only_its_row(tmp_path, fmt, name, first_row):
    lines = _lines(name, first_row + 20)
    cells = lines[first_row + 4].split(",")
    cells[first_row + 1] = '"' + cells[first_row + 1]  # an opening quote never closed
    lines[first_row + 4] = ",".join(cells)
    path = _write(tmp_path, "q.csv", lines)
    bad_line = first_row + 5
    with pytest.raises(AnnotationError, match=rf"q\.csv:{bad_line}: unterminated quote"):
        _load(fmt, path)
    ann = _load(fmt, path, skip_bad=True)
    assert len(ann.items) == 19 and [p.line for p in ann.problems] == [bad_line]
    assert [it.line for it in ann.items][bad_line - first_row - 1 :] == list(range(bad_line + 1, first_row + 21))


def test_unterminated_quote_on_the_last_line(tmp_path):
    lines = _lines("vggsound/vggsound_head.csv", 6)
    lines[5] = lines[5].replace(",", ',"', 1)
    ann = _load("vggsound", _write(tmp_path, "v.csv", lines), skip_bad=True)
    assert len(ann.items) == 5 and [str(p).split(": ", 1)[1] for p in ann.problems] == [
        "unterminated quote (a quoted field runs over the end of the line)"
    ]


@pytest.mark.parametrize("line", [1, 9, 17])
def test_latin1_byte_is_reported_at_its_line(tmp_path, line):
    lines = _lines("kinetics/k400_validate.csv.gz", 20)
    raw = [text.encode("utf-8") for text in lines]
    raw[line - 1] = raw[line - 1].replace(b",", b"\xe9,", 1)  # 'é' in Latin-1
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"".join(raw))
    if line == 1:  # the header: nothing can be read without it
        with pytest.raises(AnnotationError, match=r"latin1\.csv:1: not UTF-8 text: byte 0xe9"):
            _load("kinetics", str(path), skip_bad=True)
        return
    with pytest.raises(AnnotationError, match=rf"latin1\.csv:{line}: not UTF-8 text: byte 0xe9 at column \d+"):
        _load("kinetics", str(path))
    ann = _load("kinetics", str(path), skip_bad=True)
    assert len(ann.items) == 18 and [p.line for p in ann.problems] == [line]
