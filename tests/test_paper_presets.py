"""Presets for every row of the paper and the released config; the reproducible subsets they
use (validation held out of the training files, AudioSet-500K), and the Moments in Time format."""

import csv
import gzip
import json
import os
import random
import shutil

import pytest

from mbt.data.annotations import AnnotationError, load_annotations, parse_audioset, read_class_list
from mbt.data.subsets import balanced_subset, hold_out
from mbt.models.config import ConfigError
from mbt.models.flops import count_flops
from mbt.train.config import ExperimentConfig
from mbt.train.data import describe_weights_choice, load_split_annotations
from mbt.train.presets import AUDIOSET_500K_SIZE, preset

from .conftest import ASSETS

AUDIOSET = os.path.join(ASSETS, "annotations", "audioset")
HEAD = os.path.join(AUDIOSET, "unbalanced_train_segments_head966.csv")
MIT = os.path.join(ASSETS, "annotations", "moments_in_time")


def _gflops(name):
    r = count_flops(preset(name).model)
    return (r.embedding + r.encoder + r.head) / 1e9


def test_paper_and_released_audioset_mini():
    """The paper's 8 sampled frames (1,568 tokens) vs the released config's 32 frames of 2x16x16
    tubelets (3,136 tokens): GFLOPs within 1% of the official code's 218.5 and 493.1 (spec §7)."""
    paper, released = preset("audioset-mini"), preset("audioset-mini-released")
    assert paper.model.num_patches("rgb") == 1568 and paper.model.temporal_encoding == "temporal_sampling"
    assert released.model.num_patches("rgb") == 3136
    assert (released.model.temporal_encoding, released.model.tubelet_size, released.model.patch_size) == (
        "3d_conv", 2, (16, 16))
    assert (released.model.classifier, released.model.tubelet_init) == ("gap", "central_frame")
    assert (released.data.num_frames, released.data.frame_rate, released.data.clip_seconds) == (32, 12.5, 2.56)
    assert released.data.num_spectrogram_frames == 800 and released.data.time_mask_count == 0
    assert released.train == paper.train
    assert abs(_gflops("audioset-mini") / 218.5 - 1) < 0.01
    assert abs(_gflops("audioset-mini-released") / 493.1 - 1) < 0.01
    # the released config validates on the eval (test) set; the paper preset holds validation out
    assert released.dataset.val == released.dataset.test == ("eval_segments.csv",)
    assert "test split" in describe_weights_choice(released)
    assert paper.dataset.val == () and paper.dataset.val_fraction == 0.05
    assert "held out" in describe_weights_choice(paper) and "test" not in describe_weights_choice(paper).split(",")[0]


def test_every_paper_preset_chooses_weights_off_the_test_split():
    for name in ("audioset-mini", "audioset-500k", "vggsound", "epic-kitchens-100", "kinetics-400",
                 "kinetics-sounds", "moments-in-time"):
        cfg = preset(name)
        assert cfg.dataset.val_fraction > 0 and not cfg.dataset.val, name
    k400, mit = preset("kinetics-400"), preset("moments-in-time")
    assert (k400.model.num_classes, k400.dataset.format, k400.dataset.test) == (400, "kinetics", ("validate.csv",))
    assert (mit.model.num_classes, mit.dataset.format, mit.dataset.classes) == (
        339, "moments-in-time", "moments_categories.txt")


def test_kinetics_sounds_preset_names_a_real_class_list():
    cfg = preset("kinetics-sounds")
    names = read_class_list(cfg.dataset.classes)
    assert len(names) == cfg.model.num_classes == 31
    assert (names[0], names[8], names[30]) == ("blowing nose", "playing bagpipes", "tickling")
    cfg.dataset.annotations_dir = os.path.join(ASSETS, "annotations", "kinetics")
    cfg.dataset.test = ("kinetics_sounds_ogmge_my_test.txt",)
    test = load_split_annotations(cfg, "test")
    assert len(test.items) == 2597 and test.class_names == names
    assert test.label_names(test.items[0])[0] in names


# Kinetics-Sounds as defined where the name comes from (Arandjelovic & Zisserman, "Look, Listen
# and Learn", arXiv 1705.08168, App. A1), on the pre-release Kinetics: 34 classes.
L3_KINETICS_SOUNDS = (
    "blowing nose", "bowling", "chopping wood", "ripping paper", "shuffling cards", "singing",
    "tapping pen", "typing", "blowing out", "dribbling ball", "laughing",
    "mowing the lawn by pushing lawnmower", "shoveling snow", "stomping", "tap dancing",
    "tapping guitar", "tickling", "fingerpicking", "patting", "playing accordion",
    "playing bagpipes", "playing bass guitar", "playing clarinet", "playing drums", "playing guitar",
    "playing harmonica", "playing keyboard", "playing organ", "playing piano", "playing saxophone",
    "playing trombone", "playing trumpet", "playing violin", "playing xylophone",
)


def test_kinetics_sounds_classes_are_the_published_definition_in_kinetics_400():
    """The shipped list is L3's definition resolved in the released Kinetics-400 (4 renamed
    classes, 3 that K400 does not have), and it is the class list behind the split files the
    field uses: every OGM-GE test id, joined with the real K400 test CSV, has the label of its
    index in the shipped list."""
    kinetics = os.path.join(ASSETS, "annotations", "kinetics")
    def rows(name):
        with gzip.open(os.path.join(kinetics, name), "rt", newline="") as f:
            return list(csv.DictReader(f))

    k400 = {r["label"] for r in rows("k400_validate.csv.gz")}
    assert len(k400) == 400
    with open(preset("kinetics-sounds").dataset.classes, newline="") as f:
        shipped = list(csv.DictReader(f))
    def in_k400(l3_name):
        """The K400 label an L3 name became: itself, else the one label starting with it, else
        the one label sharing its first word; None if K400 has none."""
        for match in (lambda lbl: lbl == l3_name, lambda lbl: lbl.startswith(l3_name),
                      lambda lbl: lbl.split()[0] == l3_name.split()[0]):
            found = [lbl for lbl in k400 if match(lbl)]
            if len(found) == 1:
                return found[0]
        return None

    resolved = {name: in_k400(name) for name in L3_KINETICS_SOUNDS}
    assert [name for name, label in resolved.items() if label is None] == ["typing", "fingerpicking", "patting"]
    derived = sorted((label, name) for name, label in resolved.items() if label)
    assert [(int(r["index"]), r["k400_label"], r["l3_name"]) for r in shipped] == [
        (i, label, name) for i, (label, name) in enumerate(derived)]
    assert {name: label for name, label in resolved.items() if label and label != name} == {
        "blowing out": "blowing out candles", "dribbling ball": "dribbling basketball",
        "mowing the lawn by pushing lawnmower": "mowing lawn", "stomping": "stomping grapes"}

    label_of = {r["youtube_id"]: r["label"] for r in rows("k400_test_kinetics_sounds_rows.csv.gz")}
    with open(os.path.join(kinetics, "kinetics_sounds_ogmge_my_test.txt")) as f:
        split = [line.strip().split(",") for line in f]
    assert len(split) == 2597
    seen: dict[int, set[str]] = {}
    for clip, _, index in split:
        youtube_id = clip.rsplit("_", 1)[0]
        if youtube_id in label_of:
            seen.setdefault(int(index), set()).add(label_of[youtube_id])
    assert len(label_of) == 2565
    assert seen == {int(r["index"]): {r["k400_label"]} for r in shipped}


def test_val_fraction_holds_out_a_stable_seeded_split():
    cfg = preset("audioset-mini")
    cfg.dataset.annotations_dir = AUDIOSET
    cfg.dataset.train = (os.path.basename(HEAD),)
    cfg.dataset.val_fraction = 0.1
    train, val = load_split_annotations(cfg, "train"), load_split_annotations(cfg, "val")
    train_ids, val_ids = {it.video_id for it in train.items}, {it.video_id for it in val.items}
    assert len(train_ids) + len(val_ids) == 966 and not train_ids & val_ids
    assert 60 <= len(val_ids) <= 135  # ~10% of 966
    assert load_split_annotations(cfg, "val").items == val.items  # reproducible
    # the same ids are held out whatever the row order and whichever other ids are present
    full = parse_audioset([HEAD], class_labels=os.path.join(AUDIOSET, "class_labels_indices.csv"))
    shuffled = full.items[::-1][:500]
    _, held = hold_out(type(full)(shuffled, full.class_names, multi_label=True), 0.1, 0)
    assert {it.video_id for it in held.items} == val_ids & {it.video_id for it in shuffled}
    cfg.dataset.split_seed = 1
    assert {it.video_id for it in load_split_annotations(cfg, "val").items} != val_ids
    with pytest.raises(ConfigError, match="give one of them"):
        preset("audioset-mini").override(["dataset.val=[eval_segments.csv]"])
    with pytest.raises(ConfigError, match="val_fraction"):
        preset("audioset-mini").override(["dataset.val_fraction=1.0"])


def test_audioset_500k_is_a_seeded_class_balanced_subset_of_the_unbalanced_set():
    """On the real head of unbalanced_train_segments.csv (966 rows, Music in 272 and Speech in 393):
    the subset keeps every clip of the classes under the cap and cuts the frequent ones."""
    cfg = preset("audioset-500k")
    assert cfg.dataset.train == ("unbalanced_train_segments.csv",) and cfg.dataset.balanced_subset == AUDIOSET_500K_SIZE
    full = parse_audioset([HEAD], class_labels=os.path.join(AUDIOSET, "class_labels_indices.csv"))
    subset, cap = balanced_subset(full, 300, seed=0)
    assert 300 <= len(subset.items) < 966
    before, after = full.label_counts(), subset.label_counts()
    assert max(after) < max(before)
    for k, n in enumerate(before):  # classes with at most `cap` clips are kept whole
        if n <= cap:
            assert after[k] == n
    assert [it.video_id for it in balanced_subset(full, 300, seed=0)[0].items] == [it.video_id for it in subset.items]
    reordered = type(full)(random.Random(3).sample(full.items, len(full.items)), full.class_names, multi_label=True)
    assert {it.video_id for it in balanced_subset(reordered, 300, seed=0)[0].items} == {
        it.video_id for it in subset.items}
    assert {it.video_id for it in balanced_subset(full, 300, seed=1)[0].items} != {it.video_id for it in subset.items}
    # through the preset: the val hold-out comes from the subset
    cfg.dataset.annotations_dir = AUDIOSET
    cfg.dataset.train = (os.path.basename(HEAD),)
    cfg.dataset.balanced_subset = 300
    train, val = load_split_annotations(cfg, "train"), load_split_annotations(cfg, "val")
    assert {it.video_id for it in train.items} | {it.video_id for it in val.items} == {
        it.video_id for it in subset.items}


def test_moments_in_time_format(tmp_path):
    train = load_annotations("moments-in-time", [os.path.join(MIT, "trainingSet.csv")])
    assert len(train.items) == 8 and train.num_classes == 14 and not train.multi_label
    first = train.items[0]
    assert train.label_names(first) == ["adult+female+singing"]
    assert first.path == "adult+female+singing/flickr-0-0-3-3-5-8-4-1-3403358413_14.mp4"
    assert first.extra == {"agreement": 3, "disagreement": 0}
    val = load_annotations("moments-in-time", [os.path.join(MIT, "validationSet.csv")])
    assert val.class_names == train.class_names and [val.label_names(it)[0] for it in val.items] == [
        "adult+male+speaking", "applauding", "yawning"]
    # media located under the split's folder
    root = tmp_path / "training"
    (root / "yawning").mkdir(parents=True)
    (root / "yawning" / "giphy-3o7TKSjRrfIPjeiVyM_1.mp4").write_bytes(b"")
    located = load_annotations("moments-in-time", [os.path.join(MIT, "trainingSet.csv")], root=str(root))
    assert [it.found for it in located.items].count(True) == 1
    # damage: each bad row is named by file and line
    bad = tmp_path / "trainingSet.csv"
    with open(os.path.join(MIT, "trainingSet.csv"), newline="") as f:
        rows = list(csv.reader(f))
    rows[1][1] = "juggling"  # not a category
    rows[2][0] = "../../etc/passwd.mp4"  # outside the video folder
    rows[3] = rows[3][:3]
    rows[4][2] = "three"
    with open(bad, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    shutil.copy(os.path.join(MIT, "moments_categories.txt"), tmp_path)
    with pytest.raises(AnnotationError) as e:
        load_annotations("moments-in-time", [str(bad)])
    text = str(e.value)
    for line, what in ((2, "unknown label 'juggling'"), (3, "not inside the video folder"), (4, "expected 4 columns"),
                       (5, "not integers")):
        assert f"trainingSet.csv:{line}" in text and what in text
    skipped = load_annotations("moments-in-time", [str(bad)], skip_bad=True)
    assert len(skipped.items) == 4 and len(skipped.problems) == 4
    (tmp_path / "moments_categories.txt").write_text("aiming,0\nbarking,2\n")
    with pytest.raises(AnnotationError, match="without gaps"):
        load_annotations("moments-in-time", [str(bad)])


@pytest.mark.usefixtures("one_thread")
def test_results_and_eval_say_which_split_chose_the_weights(tmp_path, capsys):
    """A run with a held-out validation split records it with the best weights, in results.json
    and in `mbt eval`'s report."""
    from mbt.cli import main

    from .synth_media import tone, write_media
    from .tiny_experiment import tiny_config, write_config

    root = tmp_path / "videos"
    root.mkdir()
    rows = ["path,label"]
    for label, signal in (("tone", tone(440.0)), ("quiet", None)):
        for k in range(5):
            write_media(root / f"{label}{k}.mp4", num_frames=10, fps=25, size=(32, 24), signal=signal,
                        sample_rate=16000)
            rows.append(f"{label}{k}.mp4,{label}")
    manifest = root / "all.csv"
    manifest.write_text("\n".join(rows) + "\n")
    cfg = tiny_config("dataset.format=csv", f"dataset.train=[{manifest}]", f"dataset.test=[{manifest}]",
                      "dataset.val_fraction=0.3", "train.batch_size=4", "train.epochs=1", "train.eval_every=1")
    run = tmp_path / "run"
    assert main(["train", "--config", str(write_config(cfg, tmp_path / "c.yaml")), "--run-dir", str(run),
                 "--no-progress"]) == 0
    results = json.loads((run / "results.json").read_text())
    assert "held out" in results["weights_chosen_on"]
    assert "held out" in json.loads((run / "best" / "config.json").read_text())["weights_chosen_on"]
    assert 0 < results["val"]["num_examples"] < 10  # the hold-out, not all 10 videos
    capsys.readouterr()
    assert main(["eval", str(run), "--no-progress"]) == 0
    report = json.loads((run / "eval" / "test-best" / "metrics.json").read_text())
    assert "held out" in report["weights_chosen_on"]
    assert main(["eval", str(run), "--weights", "final", "--no-progress"]) == 0
    report = json.loads((run / "eval" / "test-final" / "metrics.json").read_text())
    assert report["weights_chosen_on"].startswith("nothing")
    assert isinstance(ExperimentConfig.load(run / "config.yaml").dataset.val_fraction, float)
