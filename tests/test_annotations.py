"""Annotation parsers on the real files (numbers from EXPECTED_annotations.json), bad rows,
missing media, manifests, folders, and `mbt data summary`."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest

from mbt.cli import main
from mbt.data.annotations import (
    AnnotationError,
    load_annotations,
    parse_audioset,
    parse_epic100,
    parse_folder,
    parse_kinetics,
    parse_kinetics_sounds,
    parse_manifest,
    parse_timestamp,
    parse_vggsound,
    read_class_list,
)

A = Path(__file__).parent / "assets" / "annotations"
EXPECTED = json.loads((A / "EXPECTED_annotations.json").read_text())


def _md5(path: Path) -> str:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return hashlib.md5(data).hexdigest()


# ---------------------------------------------------------------------- AudioSet
def test_audioset_class_list():
    exp = EXPECTED["audioset"]["class_labels_indices.csv"]
    names = read_class_list(A / "audioset/class_labels_indices.csv")
    assert len(names) == exp["num_classes"] == 527
    assert names[:3] == [row[2] for row in exp["first3"]]
    assert names[-1] == exp["last"][2]
    assert sum("," in n for n in names) == exp["num_display_names_with_comma"]


@pytest.mark.parametrize(
    "name",
    ["eval_segments.csv", "balanced_train_segments.csv", "unbalanced_train_segments_head966.csv"],
)
def test_audioset_segments_reproduce_expected_numbers(name):
    exp = EXPECTED["audioset"][name]
    path = A / "audioset" / name
    path = path if path.exists() else path.with_name(name + ".gz")
    assert _md5(path) == exp["md5"]  # the pristine official file
    ann = parse_audioset(path, A / "audioset/class_labels_indices.csv")
    items = ann.items
    assert ann.multi_label and ann.num_classes == 527 and not ann.problems
    assert len(items) == exp["num_rows"]
    assert len({it.video_id for it in items}) == exp["num_unique_ytids"]
    assert ann.num_multi_label_items == exp["num_multilabel_rows"]
    assert sum(len(it.labels) == 1 for it in items) == exp["num_single_label_rows"]
    assert sum(len(it.labels) for it in items) == exp["total_positive_labels"]
    assert max(len(it.labels) for it in items) == exp["max_labels_per_row"]
    assert sum(c > 0 for c in ann.label_counts()) == exp["num_unique_mids"]
    durations = [it.end - it.start for it in items]
    assert sum(d < 10 for d in durations) == exp["num_rows_shorter_than_10s"]
    assert min(durations) == exp["min_duration_s"]
    for it, row in zip(items, exp["first3"], strict=False):
        assert it.video_id == row["ytid"]
        assert (it.extra["source_start"], it.extra["source_end"]) == (row["start"], row["end"])
        assert list(it.labels) == row["indices"]
        assert ann.label_names(it) == row["names"]
    counts = ann.label_counts()
    top = sorted(range(527), key=lambda k: -counts[k])[:3]
    assert [[ann.class_names[k], counts[k]] for k in top] == [[n, c] for _, n, c in exp["most_common_3"]]


def test_audioset_header_count_is_not_trusted(tmp_path):
    # The unbalanced head's header claims 2,041,789 rows; the parser counts what is there.
    ann = parse_audioset(A / "audioset/unbalanced_train_segments_head966.csv", A / "audioset/class_labels_indices.csv")
    assert len(ann.items) == 966
    # several segment files are concatenated
    both = parse_audioset(
        [A / "audioset/unbalanced_train_segments_head966.csv", A / "audioset/eval_segments.csv.gz"],
        A / "audioset/class_labels_indices.csv",
    )
    assert len(both.items) == 966 + EXPECTED["audioset"]["eval_segments.csv"]["num_rows"]


# ---------------------------------------------------------------------- VGGSound
def test_vggsound_head_reproduces_expected_numbers():
    exp = EXPECTED["vggsound"]["vggsound_head.csv"]
    path = A / "vggsound/vggsound_head.csv"
    assert _md5(path) == exp["md5"]
    ann = parse_vggsound(path)
    assert len(ann.items) == exp["num_rows"]
    assert ann.num_classes == exp["num_unique_labels"]
    assert Counter(it.extra["split"] for it in ann.items) == {"train": exp["num_train"], "test": exp["num_test"]}
    assert sum("," in n for n in ann.class_names) == exp["num_labels_with_comma"]
    assert [it.video_id for it in ann.items[:3]] == exp["clip_ids_first3"]
    assert [ann.label_names(it) for it in ann.items[:3]] == [[r[2]] for r in exp["first3"]]
    assert ann.items[0].extra["source_start"] == 1.0 and ann.items[0].extra["source_end"] == 11.0


def test_vggsound_official_class_list_and_split_filter():
    stat = read_class_list(A / "vggsound/stat_hche11.csv")
    sounder = read_class_list(A / "vggsound/vggsounder_classes.csv")
    assert len(stat) == 309 and stat == sounder  # same names, same (alphabetical) order
    assert stat[:3] == [r[0] for r in EXPECTED["vggsound"]["stat_hche11.csv"]["first3"]]
    test = parse_vggsound(A / "vggsound/vggsound_head.csv", classes=A / "vggsound/stat_hche11.csv", split="test")
    train = parse_vggsound(A / "vggsound/vggsound_head.csv", classes=A / "vggsound/stat_hche11.csv", split="train")
    assert test.num_classes == train.num_classes == 309
    assert (len(test.items), len(train.items)) == (38, 363)
    assert all(test.class_names[it.labels[0]] == "people marching" for it in test.items[:1])
    with pytest.raises(AnnotationError, match=r"no rows of split 'val'.*'test', 'train'"):
        parse_vggsound(A / "vggsound/vggsound_head.csv", split="val")


# ---------------------------------------------------------------------- EPIC-KITCHENS-100
def test_epic100_validation_reproduces_expected_numbers():
    exp = EXPECTED["epic_kitchens_100"]["EPIC_100_validation.csv"]
    path = A / "epic_kitchens_100/EPIC_100_validation.csv.gz"
    assert _md5(path) == exp["md5"]
    ann = parse_epic100(path)  # class CSVs found next to it
    items = ann.items
    assert len(items) == exp["num_rows"]
    assert len({it.extra["video"] for it in items}) == exp["num_videos"]
    assert len({it.extra["participant"] for it in items}) == exp["num_participants"]
    assert len({it.extra["verb_class"] for it in items}) == exp["num_unique_verb_class"]
    assert len({it.extra["noun_class"] for it in items}) == exp["num_unique_noun_class"]
    actions = {(it.extra["verb_class"], it.extra["noun_class"]) for it in items}
    assert len(actions) == exp["num_unique_actions_(verb,noun)"]
    assert sum(len(it.extra["all_noun_classes"]) > 1 for it in items) == exp["num_rows_with_multiple_nouns"]
    # label space: nouns then verbs, as ViViT's class_splits [300, 97]
    assert ann.class_splits == (300, 97) and ann.split_names == ("noun", "verb")
    assert ann.num_classes == 397 and not ann.multi_label
    assert ann.class_names[0] == "tap" and ann.class_names[300] == "take" and ann.class_names[-1] == "unfreeze"
    for it, row in zip(items, exp["first3"], strict=False):
        assert it.video_id == row["narration_id"] and it.extra["video"] == row["video_id"]
        assert it.labels == (int(row["noun_class"]), 300 + int(row["verb_class"]))
        assert it.start == parse_timestamp(row["start_timestamp"])
        assert it.end == parse_timestamp(row["stop_timestamp"])
    assert items[2].start == pytest.approx(49.15) and items[2].end == pytest.approx(50.95)
    assert ann.num_multi_label_items == 0  # one noun and one verb per item


def test_epic_class_lists():
    verbs = read_class_list(A / "epic_kitchens_100/EPIC_100_verb_classes.csv")
    nouns = read_class_list(A / "epic_kitchens_100/EPIC_100_noun_classes.csv")
    exp = EXPECTED["epic_kitchens_100"]
    assert (len(verbs), verbs[0], verbs[-1]) == (97, "take", exp["EPIC_100_verb_classes.csv"]["last"][1])
    assert (len(nouns), nouns[2], nouns[-1]) == (300, "plate", exp["EPIC_100_noun_classes.csv"]["last"][1])


def test_timestamps():
    assert parse_timestamp("01:02:03.50") == 3723.5
    assert parse_timestamp("00:00:01.89") == pytest.approx(1.89)
    for bad in ("1:2", "00:61:00.00", "aa:00:00.00", ""):
        with pytest.raises(ValueError, match="malformed timestamp"):
            parse_timestamp(bad)


# ---------------------------------------------------------------------- Kinetics
def test_kinetics400_validate_reproduces_expected_numbers():
    exp = EXPECTED["kinetics"]["k400_validate.csv"]
    ann = parse_kinetics(A / "kinetics/k400_validate.csv.gz", split="validate")
    assert len(ann.items) == exp["num_rows"] and ann.num_classes == exp["num_classes"]
    for it, row in zip(ann.items, exp["first3"], strict=False):
        assert ann.label_names(it) == [row[0]] and it.video_id == row[1]
        assert (it.extra["source_start"], it.extra["source_end"]) == (float(row[2]), float(row[3]))
        assert (it.start, it.end) == (0.0, 10.0)  # trimmed clip files by default
    untrimmed = parse_kinetics(A / "kinetics/k400_validate.csv.gz", trimmed=False)
    assert (untrimmed.items[0].start, untrimmed.items[0].end) == (1.0, 11.0)


@pytest.mark.parametrize("name", ["kinetics_sounds_ogmge_my_test.txt", "kinetics_sounds_ogmge_my_train.txt.gz"])
def test_kinetics_sounds_reproduces_expected_numbers(name):
    exp = EXPECTED["kinetics"][name.removesuffix(".gz")]
    ann = parse_kinetics_sounds(A / "kinetics" / name, classes=A / "kinetics/kinetics_sounds_31_classes_derived.csv")
    assert len(ann.items) == exp["num_rows"] and ann.num_classes == exp["num_classes"] == 31
    counts = ann.label_counts()
    assert [min(counts), max(counts)] == exp["per_class_min_max"]
    for it, row in zip(ann.items, exp["first3"], strict=False):
        assert it.video_id == row[0] and it.labels == (int(row[2]),) and it.end == float(row[1])


def test_kinetics_sounds_labels_agree_with_kinetics400():
    # The derived 31-class list was built by joining ids with K400: check the join on the test list.
    ks = parse_kinetics_sounds(
        A / "kinetics/kinetics_sounds_ogmge_my_test.txt", classes=A / "kinetics/kinetics_sounds_31_classes_derived.csv"
    )
    first = ks.items[0]
    assert first.extra["ytid"] == "-3Mwkq-7TV4" and first.extra["source_start"] == 2.0
    assert ks.label_names(first) == ["shoveling snow"]  # k400_test.csv: shoveling snow,-3Mwkq-7TV4,2,12
    names = parse_kinetics_sounds(A / "kinetics/kinetics_sounds_ogmge_my_test.txt")
    assert names.num_classes == 31 and names.class_names[:2] == ["0", "1"]


# ---------------------------------------------------------------------- bad rows
def _audioset_csv(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "segments.csv"
    header = [
        "# Segments csv created",
        "# num_ytids=999, num_segs=999",
        "# YTID, start_seconds, end_seconds, positive_labels",
    ]
    path.write_text("\n".join(header + lines) + "\n")
    return path


def test_bad_rows_are_reported_with_file_and_line(tmp_path):
    path = _audioset_csv(
        tmp_path,
        [
            'aaaaaaaaaaa, 0.000, 10.000, "/m/09x0r"',  # line 4: fine
            'bbbbbbbbbbb, 0.000, 10.000, "/m/nope,/m/09x0r"',  # 5: unknown label
            'ccccccccccc, zero, 10.000, "/m/09x0r"',  # 6: malformed number
            "ddddddddddd, 0.000, 10.000",  # 7: wrong column count
            'eeeeeeeeeee, 10.000, 5.000, "/m/09x0r"',  # 8: end before start
            'fffffffffff, 30.000, 40.000, "/m/09x0r,/m/04rlf"',  # 9: fine
        ],
    )
    classes = A / "audioset/class_labels_indices.csv"
    with pytest.raises(AnnotationError) as err:
        parse_audioset(path, classes)
    msg = str(err.value)
    assert "4 bad row(s)" in msg and "--skip-bad" in msg
    assert f"{path}:5: unknown label(s) ['/m/nope']" in msg
    assert f"{path}:6:" in msg and "not numbers" in msg
    assert f"{path}:7: expected 4 columns" in msg
    assert f"{path}:8: segment end" in msg
    assert [p.line for p in err.value.problems] == [5, 6, 7, 8]

    ann = parse_audioset(path, classes, skip_bad=True)
    assert [it.video_id for it in ann.items] == ["aaaaaaaaaaa", "fffffffffff"]
    assert [it.line for it in ann.items] == [4, 9]
    assert [p.line for p in ann.problems] == [5, 6, 7, 8]
    assert ann.summary()["num_problems"] == 4


def test_bad_rows_in_other_formats(tmp_path):
    vgg = tmp_path / "vggsound.csv"
    vgg.write_text('abcdefghijk,1,people marching,test\r\nabcdefghijl,x,people marching,train\r\n'
                   'abcdefghijm,5,"not a class, really",train\r\nabcdefghijn,5,train\r\n')
    with pytest.raises(AnnotationError) as err:
        parse_vggsound(vgg, classes=A / "vggsound/stat_hche11.csv")
    assert [(p.line, p.message.split(" ")[0]) for p in err.value.problems] == [
        (4, "expected"), (2, "start"), (3, "unknown")
    ]
    ann = parse_vggsound(vgg, classes=A / "vggsound/stat_hche11.csv", skip_bad=True)
    assert len(ann.items) == 1 and len(ann.problems) == 3

    epic_src = gzip.decompress((A / "epic_kitchens_100/EPIC_100_validation.csv.gz").read_bytes()).decode()
    epic_src = epic_src.splitlines()
    rows = epic_src[:4]
    rows[2] = rows[2].replace("00:00:01.56", "00:00:1,56")  # breaks the timestamp and the column count
    rows[3] = rows[3].replace("00:00:49.15", "00:00:4x.15")
    rows.append(epic_src[4].replace(",wash,2,", ",wash,200,"))  # verb class out of range
    epic = tmp_path / "EPIC_100_validation.csv"
    epic.write_text("\n".join(rows) + "\n")
    kwargs = {"verb_classes": A / "epic_kitchens_100/EPIC_100_verb_classes.csv",
              "noun_classes": A / "epic_kitchens_100/EPIC_100_noun_classes.csv"}
    with pytest.raises(AnnotationError) as err:
        parse_epic100(epic, **kwargs)
    problems = err.value.problems
    assert [p.line for p in problems] == [3, 4, 5]
    assert "expected 15 columns" in problems[0].message
    assert "malformed timestamp '00:00:4x.15'" in problems[1].message
    assert "verb_class 200 (of 97)" in problems[2].message
    assert len(parse_epic100(epic, skip_bad=True, **kwargs).items) == 1

    k = tmp_path / "k.csv"
    k.write_text("label,youtube_id,time_start,time_end,split\nabseiling,aaaaaaaaaaa,1,11,train\n"
                 "abseiling,bbbbbbbbbbb,1,x,train\n")
    with pytest.raises(AnnotationError, match=r"k\.csv:3: time_start/time_end"):
        parse_kinetics(k)
    ks = tmp_path / "ks.txt"
    ks.write_text("aaaaaaaaaaa_1,10,3\nbbbbbbbbbbb_2,10,31\n")
    with pytest.raises(AnnotationError, match=r"ks\.txt:2: unknown label: class index 31 \(of 31\)"):
        parse_kinetics_sounds(ks, classes=A / "kinetics/kinetics_sounds_31_classes_derived.csv")


def test_unreadable_annotation_files(tmp_path):
    with pytest.raises(AnnotationError, match=r"nope\.csv: no such annotation file"):
        parse_kinetics(tmp_path / "nope.csv")
    binary = tmp_path / "k.csv"
    binary.write_bytes(b"label,youtube_id,time_start,time_end,split\n\xff\xfe\x00garbage\n")
    with pytest.raises(AnnotationError, match=r"k\.csv:2: not UTF-8 text: byte 0xff at column 1"):
        parse_kinetics(binary)
    fake_gz = tmp_path / "segments.csv.gz"
    fake_gz.write_text("not gzip")
    with pytest.raises(AnnotationError, match=r"segments\.csv\.gz:1: not readable"):
        parse_audioset(fake_gz, A / "audioset/class_labels_indices.csv")


# ---------------------------------------------------------------------- locating media
def _touch(root: Path, *names: str) -> None:
    for name in names:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")


def test_missing_files_are_counted_and_listed(tmp_path):
    root = tmp_path / "media"
    # three eval clips stored under three of the common naming schemes, the rest missing
    _touch(root, "--4gqARaEJE_000000.mp4", "--BfvyPmVMo_20000_30000.mkv", "Y--U7joUcTCo.wav", "notes.txt")
    ann = parse_audioset(A / "audioset/eval_segments.csv.gz", A / "audioset/class_labels_indices.csv", root=root)
    assert [it.found for it in ann.items[:3]] == [True, True, True]
    assert [Path(it.path).name for it in ann.items[:3]] == [
        "--4gqARaEJE_000000.mp4", "--BfvyPmVMo_20000_30000.mkv", "Y--U7joUcTCo.wav"
    ]
    assert len(ann.missing) == 20371 - 3
    summary = ann.summary(first=2)
    assert summary["num_missing_files"] == 20368 and summary["files_checked"]
    # the 4th row (line 7, `--i-y1v8Hy8, 0.000, 9.000`) is named by the first scheme
    source = str(A / "audioset/eval_segments.csv.gz")
    assert summary["missing_first"][0] == f"{source}:7: {root / '--i-y1v8Hy8_000000.mp4'}"
    assert len(ann.without_missing().items) == 3

    # without a root nothing is checked
    unchecked = parse_audioset(A / "audioset/eval_segments.csv.gz", A / "audioset/class_labels_indices.csv")
    assert {it.found for it in unchecked.items} == {None} and not unchecked.missing


def test_path_pattern_and_extension(tmp_path):
    root = tmp_path / "k400"
    _touch(root, "val/javelin_throw/--07WQ2iBlw.webm", "val/javelin_throw/--07WQ2iBlw.mp4")
    ann = parse_kinetics(A / "kinetics/k400_validate.csv.gz", root=root, path_pattern="val/{label_}/{ytid}",
                         ext="webm")
    assert ann.items[0].found and ann.items[0].path.endswith("--07WQ2iBlw.webm")
    assert sum(it.found for it in ann.items) == 1
    default = parse_kinetics(A / "kinetics/k400_validate.csv.gz", root=root)
    assert not any(it.found for it in default.items)  # the default schemes do not look in val/
    with pytest.raises(AnnotationError, match=r"unknown field 'youtube'.*'ytid'"):
        parse_kinetics(A / "kinetics/k400_validate.csv.gz", root=root, path_pattern="{youtube}")

    epic_root = tmp_path / "epic"
    _touch(epic_root, "P01/videos/P01_11.MP4")
    epic = parse_epic100(A / "epic_kitchens_100/EPIC_100_validation.csv.gz", root=epic_root)
    found = [it for it in epic.items if it.found]
    assert found and {it.extra["video"] for it in found} == {"P01_11"}
    assert found[0].path.endswith("P01/videos/P01_11.MP4")
    assert len(epic.missing) == len(epic.items) - len(found)


# ---------------------------------------------------------------------- manifests and folders
def test_csv_manifest(tmp_path):
    _touch(tmp_path, "clips/a.mp4", "clips/b.mp4")
    path = tmp_path / "train.csv"
    path.write_text(
        "path,labels,start,end,video_id,speaker\n"
        "clips/a.mp4,dog;cat,1.5,4,a,x\n"
        'clips/b.mp4,"[""cat""]",,,b,y\n'
        "clips/c.mp4,bird,,,c,z\n"
    )
    ann = parse_manifest(path)
    assert ann.class_names == ["bird", "cat", "dog"] and ann.multi_label
    assert [it.labels for it in ann.items] == [(2, 1), (1,), (0,)]
    assert (ann.items[0].start, ann.items[0].end) == (1.5, 4.0) and ann.items[1].start is None
    assert ann.items[0].extra == {"speaker": "x"}
    assert [it.found for it in ann.items] == [True, True, False]
    assert ann.items[0].path == str(tmp_path / "clips/a.mp4")

    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\na.mp4,dog\nb.mp4,wolf\nc.mp4,dog,extra\n")
    with pytest.raises(AnnotationError) as err:
        parse_manifest(bad, classes=["cat", "dog"])
    assert [(p.line, p.message) for p in err.value.problems] == [
        (4, "expected 2 columns, got 3"), (3, "unknown label 'wolf'")
    ]
    with pytest.raises(AnnotationError, match="needs 'path' and 'label'"):
        (tmp_path / "nohdr.csv").write_text("a.mp4,dog\n")
        parse_manifest(tmp_path / "nohdr.csv")


def test_jsonl_manifest_gz_and_indices(tmp_path):
    lines = [
        {"path": "x.mp4", "labels": [0, 2]},
        {"path": "y.mp4", "label": 1, "start": 0, "end": 2},
        {"path": "z.mp4", "label": "2"},
    ]
    path = tmp_path / "m.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write("\n".join(json.dumps(rec) for rec in lines) + "\n\nnot json\n")
    with pytest.raises(AnnotationError, match=r"m\.jsonl\.gz:5: invalid JSON"):
        parse_manifest(path, root=tmp_path)
    ann = parse_manifest(path, root=tmp_path, skip_bad=True)
    assert ann.class_names == ["0", "1", "2"] and ann.format == "jsonl"
    assert [it.labels for it in ann.items] == [(0, 2), (1,), (2,)]
    assert len(ann.problems) == 1
    named = parse_manifest(path, classes=["a", "b", "c"], skip_bad=True)
    assert named.label_names(named.items[0]) == ["a", "c"]


def test_folder_dataset(tmp_path):
    _touch(tmp_path, "dog/1.mp4", "dog/sub/2.MKV", "cat/3.webm", "cat/readme.txt", "empty/.keep")
    ann = parse_folder(tmp_path)
    assert ann.class_names == ["cat", "dog", "empty"]
    assert [(it.video_id, it.labels) for it in ann.items] == [("cat/3", (0,)), ("dog/1", (1,)), ("dog/sub/2", (1,))]
    assert ann.label_counts() == [1, 2, 0]
    _touch(tmp_path, "stray.mp4")
    with pytest.raises(AnnotationError, match=r"stray\.mp4: media file outside any class folder"):
        parse_folder(tmp_path)
    assert len(parse_folder(tmp_path, skip_bad=True).problems) == 1


def test_folder_dataset_with_a_class_list(tmp_path):
    """A model's classes (or a list file): indices follow the list, a class may have no folder,
    and a folder that is not a class is a bad row naming it."""
    _touch(tmp_path, "dog/1.mp4", "cat/3.webm")
    ann = load_annotations("folder", [tmp_path], classes=["bird", "cat", "dog", "horse"])
    assert ann.class_names == ["bird", "cat", "dog", "horse"]
    assert [(it.video_id, it.labels) for it in ann.items] == [("cat/3", (1,)), ("dog/1", (2,))]
    (tmp_path / "classes.txt").write_text("dog\ncat\n")
    assert [it.labels for it in parse_folder(tmp_path, classes=tmp_path / "classes.txt").items] == [(1,), (0,)]
    _touch(tmp_path, "fox/4.mp4")
    with pytest.raises(AnnotationError, match=r"fox: class folder 'fox' is not in the class list"):
        parse_folder(tmp_path, classes=["cat", "dog"])
    kept = parse_folder(tmp_path, classes=["cat", "dog"], skip_bad=True)
    assert [it.video_id for it in kept.items] == ["cat/3", "dog/1"] and len(kept.problems) == 1
    _touch(tmp_path / "empty", "cat/readme.txt")
    with pytest.raises(AnnotationError, match=r"empty: no items \(no media files in its class folders\)"):
        load_annotations("folder", [tmp_path / "empty"], classes=["cat", "dog"])


def test_load_annotations_dispatch():
    ann = load_annotations("vggsound", [A / "vggsound/vggsound_head.csv"], split="train")
    assert len(ann.items) == 363
    with pytest.raises(AnnotationError, match="does not take"):
        load_annotations("kinetics-sounds", [A / "kinetics/kinetics_sounds_ogmge_my_test.txt"], split="train")
    with pytest.raises(AnnotationError, match="unknown annotation format"):
        load_annotations("youtube8m", ["x"])


# ---------------------------------------------------------------------- CLI
def test_cli_summary_audioset_json(capsys):
    rc = main(["data", "summary", "--format", "audioset", str(A / "audioset/balanced_train_segments.csv.gz"),
               "--classes", str(A / "audioset/class_labels_indices.csv"), "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    exp = EXPECTED["audioset"]["balanced_train_segments.csv"]
    assert out["num_classes"] == 527 and out["num_items"] == exp["num_rows"]
    assert out["num_multi_label_items"] == exp["num_multilabel_rows"]
    assert out["first_items"][0]["labels"] == exp["first3"][0]["names"]


def test_cli_summary_text_and_errors(capsys, tmp_path):
    rc = main(["data", "summary", "--format", "epic100", str(A / "epic_kitchens_100/EPIC_100_validation.csv.gz")])
    out = capsys.readouterr().out
    assert rc == 0 and "items: 9668" in out and "noun 300, verb 97" in out and "P01_11_0" in out
    rc = main(["data", "summary", "--format", "kinetics", str(A / "kinetics/k400_validate.csv.gz"), "--json"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["num_classes"] == 400
    rc = main(["data", "summary", "--format", "vggsound", str(A / "vggsound/vggsound_head.csv"),
               "--classes", str(A / "vggsound/stat_hche11.csv"), "--split", "test", "--json"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["num_items"] == 38

    bad = _audioset_csv(tmp_path, ['aaaaaaaaaaa, 0.000, 10.000, "/m/nope"', 'bbbbbbbbbbb, 0, 10, "/m/09x0r"'])
    classes = str(A / "audioset/class_labels_indices.csv")
    rc = main(["data", "summary", "--format", "audioset", str(bad), "--classes", classes])
    err = capsys.readouterr().err
    assert rc == 1 and f"{bad}:4: unknown label(s)" in err
    rc = main(["data", "summary", "--format", "audioset", str(bad), "--classes", classes, "--skip-bad", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["num_items"] == 1 and out["num_problems"] == 1
    assert out["problems_first"] == [f"{bad}:4: unknown label(s) ['/m/nope']"]
