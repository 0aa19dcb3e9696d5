"""Evaluation a paper can cite: per-class tables checked against scikit-learn, mean-class
accuracy, top-5 only where it means something, confusions, VGGSounder modality subsets,
separate EPIC rankings in `mbt predict`, whole preset descriptions."""

from __future__ import annotations

import csv
import inspect
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

import mbt
from mbt.cli import main
from mbt.data.annotations import parse_vggsounder
from mbt.train.evaluate import EvalResult, modality_subset_metrics, write_eval_tables
from mbt.train.metrics import (
    classification_metrics,
    confusion_matrix,
    per_class_metrics,
    top_confusions,
)
from mbt.train.presets import PRESETS

A = Path(__file__).parent / "assets" / "annotations" / "vggsound"


def _single(n=300, c=12, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c - 1, n)  # the last class has no examples
    logits = rng.normal(size=(n, c)) + 2.0 * np.eye(c)[y]
    return logits, np.eye(c)[y], y


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_single_label_per_class_matches_sklearn():
    logits, labels, y = _single()
    pred = logits.argmax(1)
    names = [f"c{k}" for k in range(12)]
    rows = per_class_metrics(logits, labels, multi_label=False, class_names=names)
    assert [r["class"] for r in rows] == names
    recall = skm.recall_score(y, pred, labels=range(12), average=None, zero_division=np.nan)
    precision = skm.precision_score(y, pred, labels=range(12), average=None, zero_division=np.nan)
    np.testing.assert_allclose([r["accuracy"] for r in rows], recall, equal_nan=True)
    np.testing.assert_allclose([r["precision"] for r in rows], precision, equal_nan=True)
    assert [r["support"] for r in rows] == np.bincount(y, minlength=12).tolist()
    m = classification_metrics(logits, labels, multi_label=False)
    assert m["mean_class_acc"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["top1"] == pytest.approx(skm.accuracy_score(y, pred)) and "top5" in m


def test_multi_label_per_class_matches_sklearn():
    rng = np.random.default_rng(1)
    labels = (rng.random((200, 7)) < 0.3).astype(float)
    labels[:, 6] = 0  # no positives: AP and AUC undefined
    logits = rng.normal(size=(200, 7)) + labels
    rows = per_class_metrics(logits, labels, multi_label=True, class_names=list("abcdefg"))
    for k, row in enumerate(rows[:6]):
        assert row["AP"] == pytest.approx(skm.average_precision_score(labels[:, k], logits[:, k]))
        assert row["AUC"] == pytest.approx(skm.roc_auc_score(labels[:, k], logits[:, k]))
        assert row["support"] == int(labels[:, k].sum())
    assert np.isnan(rows[6]["AP"]) and np.isnan(rows[6]["AUC"]) and rows[6]["support"] == 0


def test_top5_only_with_more_than_five_classes():
    for c in (5, 2, 6):
        logits, labels, _ = _single(c=c)
        assert ("top5" in classification_metrics(logits, labels, multi_label=False)) is (c > 5)
    rng = np.random.default_rng(2)
    noun, verb = rng.integers(0, 8, 50), rng.integers(0, 3, 50)
    labels = np.concatenate([np.eye(8)[noun], np.eye(3)[verb]], 1)
    m = classification_metrics(rng.normal(size=(50, 11)), labels, multi_label=False, class_splits=(8, 3),
                               split_names=("noun", "verb"))
    assert "noun_top5" in m and "verb_top5" not in m and "action_top5" in m


def test_epic_per_class_verb_noun_and_action():
    rng = np.random.default_rng(3)
    noun, verb = rng.integers(0, 6, 120), rng.integers(0, 4, 120)
    labels = np.concatenate([np.eye(6)[noun], np.eye(4)[verb]], 1)
    logits = rng.normal(size=(120, 10)) + 1.5 * labels
    names = [f"n{k}" for k in range(6)] + [f"v{k}" for k in range(4)]
    rows = per_class_metrics(logits, labels, multi_label=False, class_names=names, class_splits=(6, 4),
                             split_names=("noun", "verb"))
    verbs = [r for r in rows if r["head"] == "verb"]
    pv = logits[:, 6:].argmax(1)
    np.testing.assert_allclose([r["accuracy"] for r in verbs], skm.recall_score(verb, pv, average=None))
    assert [r["class"] for r in verbs] == names[6:]
    actions = [r for r in rows if r["head"] == "action"]
    pairs = sorted(set(zip(noun.tolist(), verb.tolist(), strict=True)))
    assert [r["class"] for r in actions] == [f"n{a} / v{b}" for a, b in pairs]
    hit = (logits[:, :6].argmax(1) == noun) & (pv == verb)
    for r, (a, b) in zip(actions, pairs, strict=True):
        mask = (noun == a) & (verb == b)
        assert r["accuracy"] == pytest.approx(hit[mask].mean()) and r["support"] == mask.sum()
    m = classification_metrics(logits, labels, multi_label=False, class_splits=(6, 4), split_names=("noun", "verb"))
    assert m["verb_mean_class_acc"] == pytest.approx(skm.balanced_accuracy_score(verb, pv))
    assert m["action_mean_class_acc"] == pytest.approx(np.mean([r["accuracy"] for r in actions]))


def test_epic_outputs_are_written_per_head(tmp_path):
    """predictions.jsonl ranks each head within its own classes; each head gets its confusions."""
    from mbt.train.evaluate import write_predictions

    rng = np.random.default_rng(4)
    noun, verb = rng.integers(0, 6, 40), rng.integers(0, 4, 40)
    labels = np.concatenate([np.eye(6)[noun], np.eye(4)[verb]], 1)
    logits = rng.normal(size=(40, 10)) + 2.0 * labels
    names = [f"n{k}" for k in range(6)] + [f"v{k}" for k in range(4)]
    result = EvalResult({}, [f"vid{i}" for i in range(40)], logits, labels, np.ones(40, dtype=np.int64))
    heads = {"class_names": names, "multi_label": False, "class_splits": (6, 4), "split_names": ("noun", "verb")}
    write_predictions(result, tmp_path, topk=2, **heads)
    first = json.loads((tmp_path / "predictions.jsonl").read_text().splitlines()[0])
    assert [n for n, _ in first["top_noun"]] == [names[k] for k in np.argsort(-logits[0, :6])[:2]]
    assert [n for n, _ in first["top_verb"]] == [names[6 + k] for k in np.argsort(-logits[0, 6:])[:2]]
    assert "top" not in first
    paths = write_eval_tables(result, tmp_path, **heads)
    assert {k for k in paths if k.startswith("confusion")} == {
        "confusion_noun", "confusions_noun", "confusion_verb", "confusions_verb"}
    with open(tmp_path / "confusions_verb.csv", newline="") as f:
        assert {r["true"] for r in csv.DictReader(f)} <= set(names[6:])


def test_confusions_and_tables(tmp_path):
    logits, labels, y = _single(n=2000, c=320, seed=5)
    matrix = confusion_matrix(logits, labels)
    np.testing.assert_array_equal(matrix, skm.confusion_matrix(y, logits.argmax(1), labels=range(320)))
    top = top_confusions(matrix, [f"c{k}" for k in range(320)], n=10)
    off = matrix - np.diag(np.diag(matrix))
    assert [t["count"] for t in top] == sorted(off.ravel().tolist(), reverse=True)[:10]
    t = top[0]
    k = int(t["true"][1:])
    assert t["fraction_of_true"] == pytest.approx(t["count"] / matrix[k].sum())
    result = EvalResult({}, [str(i) for i in range(2000)], logits, labels, np.ones(2000, dtype=np.int64))
    names = [f"class {k}" for k in range(320)]
    paths = write_eval_tables(result, tmp_path, class_names=names, multi_label=False)
    with open(paths["per_class"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 320 and list(rows[0]) == ["class", "accuracy", "precision", "support"]
    assert [int(r["support"]) for r in rows] == np.bincount(y, minlength=320).tolist()
    with open(paths["confusions"], newline="") as f:
        listed = list(csv.DictReader(f))
    assert len(listed) == 100 and int(listed[0]["count"]) == top[0]["count"]
    from PIL import Image

    with Image.open(paths["confusion"]) as image:
        assert min(image.size) >= 3000  # about 10 pixels a class at 320 classes
    multi = write_eval_tables(result, tmp_path / "ml", class_names=names, multi_label=True)
    assert set(multi) == {"per_class"}


def test_vggsounder_modality_subset_metrics():
    ann = parse_vggsounder(A / "vggsounder_head.csv.gz", classes=A / "vggsounder_classes.csv")
    items = ann.items[:300]
    ann.items = items
    rng = np.random.default_rng(6)
    full = np.zeros((300, 309))
    for i, it in enumerate(items):
        full[i, list(it.labels)] = 1
    logits = rng.normal(size=(300, 309)) + 2 * full
    order = rng.permutation(300)  # the result's rows need not follow the annotation order
    result = EvalResult({}, [items[i].video_id for i in order], logits[order], full[order], np.ones(300))
    out = modality_subset_metrics(result, ann)
    assert set(out) == {"a", "v", "av", "a_only", "v_only"}
    rows = [i for i, it in enumerate(items) if "V" in it.extra["modalities"]]
    target = np.zeros((len(rows), 309))
    for r, i in enumerate(rows):
        target[r, [k for k, m in zip(items[i].labels, items[i].extra["modalities"], strict=True) if m == "V"]] = 1
    want = classification_metrics(logits[rows], target, multi_label=True)
    assert out["v_only"]["num_examples"] == len(rows) and out["v_only"]["mAP"] == pytest.approx(want["mAP"])
    assert out["a"]["num_examples"] > out["av"]["num_examples"] > out["v_only"]["num_examples"]


def test_list_presets_prints_whole_descriptions(capsys):
    assert main(["train", "--list-presets"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for name, fn in PRESETS.items():
        assert f"{name} {' '.join(inspect.getdoc(fn).split())}" in out


def test_predict_ranks_epic_heads_separately(tmp_path, capsys):
    from .test_inference import _video

    nouns, verbs = [f"noun{k}" for k in range(6)], [f"verb{k}" for k in range(4)]
    from mbt.demo.run import _demo_data, _demo_model

    from .conftest import randomize

    cfg = _demo_model().replace(num_classes=10, class_splits=(6, 4), split_names=("noun", "verb"),
                                label_names=tuple(nouns + verbs))
    randomize(mbt.MBT(cfg), seed=2).save_pretrained(tmp_path / "m", data_config=_demo_data())
    video = _video(tmp_path / "v.mp4")
    pred = mbt.Predictor(tmp_path / "m").predict(video, topk=3)
    p = pred.scores
    assert [n for n, _ in pred.heads["noun"]] == [nouns[k] for k in np.argsort(-p[:6])[:3]]
    assert [n for n, _ in pred.heads["verb"]] == [verbs[k] for k in np.argsort(-p[6:])[:3]]
    joint = np.outer(p[6:], p[:6])  # [verb, noun]
    best = np.argsort(-joint, axis=None)[:3]
    assert [n for n, _ in pred.top] == [f"{verbs[f // 6]} {nouns[f % 6]}" for f in best]
    np.testing.assert_allclose([q for _, q in pred.top], joint.ravel()[best], rtol=1e-5)
    assert main(["predict", video, "--model", str(tmp_path / "m"), "--topk", "2"]) == 0
    out = capsys.readouterr().out
    assert "  noun:" in out and "  verb:" in out and "actions (joint):" in out
    assert main(["predict", video, "--model", str(tmp_path / "m"), "--topk", "3", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert [r["label"] for r in record["heads"]["verb"]] == [n for n, _ in pred.heads["verb"]]
    assert [r["label"] for r in record["top"]] == [n for n, _ in pred.top]


def test_eval_cli_on_vggsounder_writes_subsets_and_per_class(tmp_path, capsys):
    from mbt.demo.run import _demo_data, _demo_model

    from .conftest import randomize
    from .test_inference import _video

    classes = A / "vggsounder_classes.csv"
    from mbt.data.annotations import read_class_list

    names = read_class_list(classes)
    cfg = _demo_model().replace(num_classes=309, multi_label=True, label_names=tuple(names))
    randomize(mbt.MBT(cfg), seed=3).save_pretrained(tmp_path / "m", data_config=_demo_data())
    (tmp_path / "media").mkdir()
    for vid in ("aaaaaaaaaaa_000010", "bbbbbbbbbbb_000000", "ccccccccccc_000030"):
        _video(tmp_path / "media" / f"{vid}.mp4")
    (tmp_path / "s.csv").write_text(
        "video_id,label,modality,background_music,static_image,voice_over\n"
        "aaaaaaaaaaa_000010,rapping,A,False,False,True\n"
        "bbbbbbbbbbb_000000,rapping,AV,True,False,False\n"
        "aaaaaaaaaaa_000010,playing piano,V,False,False,True\n"
        "ccccccccccc_000030,playing piano,AV,False,False,False\n")
    out = tmp_path / "out"
    assert main(["eval", str(tmp_path / "m"), "--data", str(tmp_path / "s.csv"), "--format", "vggsounder",
                 "--classes", str(classes), "--root", str(tmp_path / "media"), "--out", str(out),
                 "--no-progress", "--num-workers", "0"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    subsets = report["modality_subsets"]
    assert {k: v["num_examples"] for k, v in subsets.items()} == {"a": 3, "v": 3, "av": 2, "a_only": 1, "v_only": 1}
    with open(out / "per_class.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 309 and list(rows[0]) == ["class", "AP", "AUC", "support"]
    assert {r["class"]: int(r["support"]) for r in rows if int(r["support"])} == {"rapping": 2, "playing piano": 2}
    assert not (out / "confusion.png").exists()  # multi-label: no confusion matrix
    capsys.readouterr()
    # vggsound.csv read without a split: the evaluation says that train and test rows are mixed
    (tmp_path / "vggsound.csv").write_text("aaaaaaaaaaa,10,rapping,train\r\nbbbbbbbbbbb,0,playing piano,test\r\n")
    assert main(["eval", str(tmp_path / "m"), "--data", str(tmp_path / "vggsound.csv"), "--format", "vggsound",
                 "--classes", str(classes), "--root", str(tmp_path / "media"), "--out", str(out),
                 "--no-progress", "--num-workers", "0"]) == 0
    note = "rows of all splits are mixed (1 test, 1 train): choose one with --split / dataset.*_split"
    assert f"note: test annotations: {note}" in capsys.readouterr().err
    assert json.loads((out / "metrics.json").read_text())["annotation_notes"] == [note]


@pytest.mark.parametrize("classes", [2, 3, 12, 40])
def test_confusion_figure_title_fits_and_cells_show_numbers(classes):
    """The title of confusion.png is inside the picture at any class count (it was clipped for
    a few classes), and up to 30 classes each cell shows its percentage of the true class."""
    import matplotlib.pyplot as plt

    from mbt.train.evaluate import confusion_figure

    rng = np.random.default_rng(classes)
    matrix = rng.integers(0, 20, (classes, classes)) + np.eye(classes, dtype=int) * 50
    fig = confusion_figure(matrix, [f"class number {k}" for k in range(classes)])
    fig.canvas.draw()
    ax = fig.axes[0]
    box, frame = ax.title.get_window_extent(), fig.bbox
    assert box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y1 <= frame.y1
    cells = [t.get_text() for t in ax.texts]
    if classes <= 30:
        norm = matrix / matrix.sum(1, keepdims=True)
        order = np.lexsort((np.arange(classes), -np.diag(norm)))
        assert len(cells) == classes * classes
        assert cells[0] == f"{100 * norm[order[0], order[0]]:.0f}"  # the best class's accuracy, top left
    else:
        assert cells == []
    plt.close(fig)
