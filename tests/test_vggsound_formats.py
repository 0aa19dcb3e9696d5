"""VGGSound as published: the authors' split lists, VGGSounder (multi-label, modality tags), and
the note when `vggsound.csv` mixes splits. Real files in tests/assets/annotations/vggsound:
`test_hche11.csv.gz` is hche11/VGGSound data/test.csv whole (gzipped); `vggsounder_head.csv.gz`
holds all rows of the first 2,500 videos of VGGSounder 1.0's vggsounder.csv (a video's rows are
not always adjacent there)."""

from __future__ import annotations

import csv
import gzip
import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from mbt.cli import main
from mbt.data.annotations import (
    VGGSOUNDER_SUBSETS,
    AnnotationError,
    load_annotations,
    modality_subset_targets,
    parse_vggsound,
    parse_vggsounder,
)

A = Path(__file__).parent / "assets" / "annotations" / "vggsound"
EXPECTED = json.loads((A.parent / "EXPECTED_annotations.json").read_text())["vggsound"]


def test_authors_test_list_reads_as_vggsound():
    """15,446 rows / 309 classes of hche11's test.csv (before: '15446 bad row(s) ... 4 columns')."""
    exp = EXPECTED["vggsound_test_list_hche11.csv"]
    ann = load_annotations("vggsound", [A / "test_hche11.csv.gz"], classes=A / "stat_hche11.csv")
    assert len(ann.items) == exp["num_rows"] == 15446 and ann.num_classes == 309
    assert len({it.labels[0] for it in ann.items}) == exp["num_unique_labels"] == 309
    for item, (clip, label) in zip(ann.items, exp["first3"], strict=False):
        assert item.video_id + ".mp4" == clip and ann.label_names(item) == [label]
        assert (item.start, item.end, item.extra["split"]) == (0.0, 10.0, "test")
    assert ann.items[0].extra["source_start"] == 300.0 and ann.items[0].path == "glLQrEijrKg_000300.mp4"
    assert ann.notes == [] and ann.problems == []
    # the label order without a class list is the sorted names, as for vggsound.csv
    assert parse_vggsound(A / "test_hche11.csv.gz").class_names == sorted(read_stat_names())


def read_stat_names() -> list[str]:
    with open(A / "stat_hche11.csv", newline="") as f:
        return [row[0] for row in csv.reader(f)]


def _write(path: Path, text: str) -> Path:
    path.write_bytes(text.replace("\n", "\r\n").encode())
    return path


def test_split_list_media_and_split_checks(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    (media / "glLQrEijrKg_000300.mp4").write_bytes(b"")
    lst = _write(tmp_path / "test.csv", 'glLQrEijrKg_000300.mp4,playing hammond organ\n'
                                        'LDoXsip0BEQ_000177.mp4,"bird chirping, tweeting"\n')
    ann = parse_vggsound(lst, classes=A / "stat_hche11.csv", root=media, split="test")
    assert [it.found for it in ann.items] == [True, False]
    assert ann.label_names(ann.items[1]) == ["bird chirping, tweeting"]
    with pytest.raises(AnnotationError, match=r"test\.csv: a split list of 'test'.*not of split 'train'"):
        parse_vggsound(lst, split="train")
    other = _write(tmp_path / "mine.csv", "glLQrEijrKg_000300.mp4,rapping\n")
    assert parse_vggsound(other, split="train").items[0].extra["split"] == "train"  # the file is that split
    bad = _write(tmp_path / "train.csv", "glLQrEijrKg_000300.mp4,rapping\nshort_1.mp4,rapping\n"
                                         "LDoXsip0BEQ_000177.mp4,rapping,extra\n")
    with pytest.raises(AnnotationError) as e:
        parse_vggsound(bad)
    assert "train.csv:2: clip 'short_1.mp4' is not `ytid_start.mp4`" in str(e.value)
    assert "train.csv:3: expected 2 columns (ytid_start.mp4, label (a split list)), got 3" in str(e.value)


def test_mixed_splits_are_said_in_the_summary(capsys):
    head = A / "vggsound_head.csv"
    ann = parse_vggsound(head)
    assert ann.notes == ["rows of all splits are mixed (38 test, 363 train): choose one with --split / "
                         "dataset.*_split"]
    assert parse_vggsound(head, split="train").notes == []
    assert main(["data", "summary", str(head), "--format", "vggsound"]) == 0
    assert "note: rows of all splits are mixed (38 test, 363 train)" in capsys.readouterr().out
    assert main(["data", "summary", str(head), "--format", "vggsound", "--split", "test", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["notes"] == []


def _sounder_rows() -> list[list[str]]:
    with gzip.open(A / "vggsounder_head.csv.gz", "rt", newline="") as f:
        return list(csv.reader(f))[1:]


def test_vggsounder_multi_label_with_modality_tags():
    rows = _sounder_rows()
    per_video: dict[str, dict[str, str]] = defaultdict(dict)
    for video, label, modality, *_ in rows:
        per_video[video][label] = modality
    ann = load_annotations("vggsounder", [A / "vggsounder_head.csv.gz"], classes=A / "vggsounder_classes.csv")
    assert ann.multi_label and ann.num_classes == 309 and ann.format == "vggsounder"
    assert len(ann.items) == len(per_video) == 2500
    assert ann.num_multi_label_items == sum(len(v) > 1 for v in per_video.values())
    assert sum(len(it.labels) for it in ann.items) == len(rows)
    first = EXPECTED["vggsounder.csv"]["first_video"]
    assert ann.items[0].video_id == first[0] and ann.label_names(ann.items[0]) == first[1]
    tags = Counter(t for it in ann.items for t in it.extra["modalities"])
    assert tags == Counter(r[2] for r in rows)
    for item in ann.items[:200]:
        assert dict(zip(ann.label_names(item), item.extra["modalities"], strict=True)) == per_video[item.video_id]
        assert item.extra["voice_over"] is (rows[item.line - 2][5] == "True")
    # the subsets: audible = A or AV labels, and so on; videos without any are left out
    published = {"a": {"A", "AV"}, "v": {"V", "AV"}, "av": {"AV"}, "a_only": {"A"}, "v_only": {"V"}}
    assert set(VGGSOUNDER_SUBSETS) == set(published)  # VGGSounder's benchmark: a, v, av, a only, v only
    for subset, keep in published.items():
        positions, labels = modality_subset_targets(ann, subset)
        want = {v: {lab for lab, m in labs.items() if m in keep} for v, labs in per_video.items()}
        got = {ann.items[p].video_id: {ann.class_names[k] for k in lab} for p, lab in zip(positions, labels,
                                                                                           strict=True)}
        assert got == {v: s for v, s in want.items() if s}
    assert len(modality_subset_targets(ann, "v_only")[0]) < len(modality_subset_targets(ann, "a")[0])


def test_vggsounder_damage_is_named(tmp_path):
    text = ("video_id,label,modality,background_music,static_image,voice_over\n"
            "--i-y1v8Hy8_000000,child singing,AV,False,False,True\n"
            "--i-y1v8Hy8_000000,female singing,X,False,False,True\n"
            "--i-y1v8Hy8_000000,child singing,A,False,False,True\n"
            "-0BIyqJj9ZU_000030,baby laughter,A,maybe,False,False\n"
            "-0BIyqJj9ZU_000030,no such class,A,False,False,False\n")
    path = tmp_path / "vggsounder.csv"
    path.write_text(text)
    with pytest.raises(AnnotationError) as e:
        parse_vggsounder(path, classes=A / "vggsounder_classes.csv")
    message = str(e.value)
    assert "vggsounder.csv:3: modality 'X' is not A, V or AV" in message
    assert "vggsounder.csv:4: label 'child singing' repeated for video --i-y1v8Hy8_000000" in message
    assert "vggsounder.csv:5: background_music/static_image/voice_over" in message
    assert "vggsounder.csv:6: unknown label 'no such class'" in message
    ann = parse_vggsounder(path, classes=A / "vggsounder_classes.csv", skip_bad=True)
    assert [it.video_id for it in ann.items] == ["--i-y1v8Hy8_000000"] and len(ann.problems) == 4
    with pytest.raises(AnnotationError, match="expected header"):
        parse_vggsounder(A / "vggsound_head.csv")
