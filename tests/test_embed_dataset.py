"""Embeddings of whole datasets (`mbt embed --format`), resumed after an interruption, and
linear probes on them (`mbt probe`)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import mbt
from mbt.cli import main
from mbt.data.annotations import load_annotations
from mbt.demo.run import _demo_data, _demo_model
from mbt.embed_dataset import Embeddings, embed_dataset, load_embeddings
from mbt.probe import linear_probe

from .conftest import randomize
from .test_inference import _video

NAMES = ("a", "b", "c", "d", "e")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    randomize(mbt.MBT(_demo_model()), seed=1).save_pretrained(out, data_config=_demo_data())
    return out


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """Five generated clips (clip c has no audio track), labelled in a CSV manifest."""
    root = tmp_path_factory.mktemp("clips")
    rows = ["path,label"]
    for i, name in enumerate(NAMES):
        _video(root / f"{name}.mp4", seconds=2.0 + 0.5 * i, audio=name != "c")
        rows.append(f"{name}.mp4,{['dog', 'rain'][i % 2]}")
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    return root / "train.csv"


def _annotations(manifest):
    return load_annotations("csv", [manifest])


def test_embeddings_of_a_dataset_with_masks_and_fused_features(model_dir, manifest, tmp_path, one_thread):
    report = embed_dataset(model_dir, _annotations(manifest), tmp_path / "emb", chunk_size=2, progress=False)
    assert report["embedded"] == 5 and report["chunks_written"] == 3 and report["without"] == {
        "spectrogram": 1, "rgb": 0}
    emb = load_embeddings(tmp_path / "emb")
    t = emb.tensors
    assert [p.rsplit("/", 1)[1] for p in emb.paths] == [f"{n}.mp4" for n in NAMES]
    assert emb.class_names == ["dog", "rain"] and not emb.multi_label
    assert t["labels"].tolist() == [[1, 0], [0, 1], [1, 0], [0, 1], [1, 0]] and t["labels"].dtype == torch.uint8
    assert t["has_spectrogram"].tolist() == [True, True, False, True, True] and t["has_rgb"].all()
    # the silent video's audio row is NaN, as `mbt.embed` gives for a single file; nothing else is
    assert t["spectrogram"][2].isnan().all() and torch.isfinite(t["rgb"]).all() and torch.isfinite(t["fused"]).all()
    assert torch.isfinite(t["spectrogram"][[0, 1, 3, 4]]).all()
    single = mbt.embed([emb.paths[2], emb.paths[0]], model_dir)
    assert np.isnan(single["spectrogram"][0]).all() and not single["has_spectrogram"][0]
    assert np.isfinite(single["fused"]).all() and single["fused"].shape == single["rgb"].shape
    # the numbers are those of the per-file path (same clip), and the head turns `fused` into the logits
    predictor = mbt.Predictor(model_dir)
    one = predictor.embed(emb.paths[0], num_clips=1)
    torch.testing.assert_close(t["rgb"][0], torch.from_numpy(one["rgb"]), atol=1e-5, rtol=1e-5)
    batch = predictor.clips(emb.paths[0], 1)
    with torch.no_grad():
        logits = predictor.model({m: batch[m] for m in ("rgb", "spectrogram")}).logits[0]
        torch.testing.assert_close(predictor.model.head(t["fused"][0]), logits, atol=1e-5, rtol=1e-5)
        silent = predictor.clips(emb.paths[2], 1)  # no audio: the video towers alone, as predict does
        rgb_only = predictor.model({"rgb": silent["rgb"]}, output_embeddings=True)
        torch.testing.assert_close(t["fused"][2], rgb_only.embeddings["rgb"][0], atol=1e-5, rtol=1e-5)


class _Interrupt(Exception):
    pass


def test_an_interrupted_run_resumes_to_the_same_files(model_dir, manifest, tmp_path, one_thread):
    ann = _annotations(manifest)
    full = embed_dataset(model_dir, ann, tmp_path / "full", chunk_size=2, batch_size=2, progress=False)
    assert full["chunks_resumed"] == 0
    model = mbt.load_pretrained(model_dir)
    calls = 0
    forward = model.forward

    def failing(*args, **kwargs):  # the third batch never finishes: chunks 0 and 1 are on disk
        nonlocal calls
        calls += 1
        if calls == 4:  # batch 2 runs twice (with and without audio), batch 3 is the fourth call
            raise _Interrupt
        return forward(*args, **kwargs)

    model.forward = failing
    with pytest.raises(_Interrupt):
        embed_dataset(model, ann, tmp_path / "part", data=_demo_data(), chunk_size=2, batch_size=2, progress=False)
    assert sorted(p.name for p in (tmp_path / "part").glob("chunk-*.json")) == ["chunk-000000.json",
                                                                               "chunk-000001.json"]
    with pytest.raises(ValueError, match="unfinished, 1 of 3 chunks missing"):
        load_embeddings(tmp_path / "part")
    (tmp_path / "part" / "chunk-000002.safetensors.tmp").write_bytes(b"half a file")  # a write cut short
    model.forward = forward
    again = embed_dataset(model, ann, tmp_path / "part", data=_demo_data(), chunk_size=2, batch_size=2,
                          progress=False)
    assert again["chunks_resumed"] == 2 and again["chunks_written"] == 1
    for name in ("chunk-000000", "chunk-000001", "chunk-000002"):
        a, b = (load_file(tmp_path / run / f"{name}.safetensors") for run in ("full", "part"))
        assert a.keys() == b.keys()
        for k in a:  # bit for bit, NaN rows (missing modalities) included
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, equal_nan=True)
        assert (tmp_path / "full" / f"{name}.json").read_text() == (tmp_path / "part" / f"{name}.json").read_text()
    # a different model is refused, not mixed in
    other = randomize(mbt.load_pretrained(model_dir), seed=5)
    with pytest.raises(ValueError, match="other settings \\(model differ"):
        embed_dataset(other, ann, tmp_path / "part", data=_demo_data(), chunk_size=2, progress=False)


def test_unreadable_items_are_skipped_and_listed(model_dir, manifest, tmp_path, one_thread):
    bad = manifest.parent / "broken.mp4"
    bad.write_bytes(b"not a video")
    csv = manifest.parent / "with_bad.csv"
    csv.write_text(manifest.read_text() + "broken.mp4,dog\n")
    ann = load_annotations("csv", [csv])
    with pytest.raises(RuntimeError, match="broken.mp4"):
        embed_dataset(model_dir, ann, tmp_path / "e1", progress=False)
    report = embed_dataset(model_dir, ann, tmp_path / "e2", skip_bad=True, chunk_size=3, progress=False)
    assert report["embedded"] == 5 and [s["path"].rsplit("/", 1)[1] for s in report["skipped"]] == ["broken.mp4"]
    assert "broken.mp4" not in " ".join(load_embeddings(tmp_path / "e2").paths)
    alone = embed_dataset(model_dir, load_annotations("csv", [csv]), tmp_path / "e3", skip_bad=True, chunk_size=1,
                          progress=False)  # the last chunk holds nothing: a chunk of 0 rows
    assert alone["chunks_written"] == 6 and load_embeddings(tmp_path / "e3").tensors["fused"].shape == (5, 64)


def _separable(n: int, seed: int, multi_label: bool = False) -> Embeddings:
    """Gaussian clusters around 3 class centres in 16-d (multi-label: a class per centre present)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, 16, generator=torch.Generator().manual_seed(0)) * 4
    if multi_label:
        labels = (torch.rand(n, 3, generator=g) < 0.4).to(torch.uint8)
        x = labels.float() @ centres + torch.randn(n, 16, generator=g)
    else:
        k = torch.randint(0, 3, (n,), generator=g)
        labels = torch.nn.functional.one_hot(k, 3).to(torch.uint8)
        x = centres[k] + torch.randn(n, 16, generator=g)
    tensors = {"fused": x, "rgb": -x, "has_rgb": torch.arange(n) % 4 != 0, "labels": labels}
    return Embeddings(tensors, [str(i) for i in range(n)], [""] * n, ["x", "y", "z"], multi_label, (), (),
                      ("rgb",))


def test_linear_probe_reads_separable_classes():
    result = linear_probe(_separable(200, 1), _separable(100, 2))
    assert result["metric"] == "top1" and result["value"] >= 0.97 and result["num_test"] == 100
    shuffled = _separable(200, 1)
    shuffled.tensors["labels"] = shuffled.tensors["labels"][torch.randperm(200, generator=torch.Generator()
                                                                            .manual_seed(3))]
    assert linear_probe(shuffled, _separable(100, 2))["value"] < 0.6  # labels unrelated to the features: chance
    multi = linear_probe(_separable(200, 1, True), _separable(100, 2, True))
    assert multi["metric"] == "mAP" and multi["value"] >= 0.95
    rgb = linear_probe(_separable(200, 1), _separable(100, 2), feature="rgb")  # rows without rgb left out
    assert rgb["left_out"] == {"train": 50, "test": 25} and rgb["num_test"] == 75 and rgb["value"] >= 0.97
    w = rgb["weights"]
    x = _separable(100, 2).tensors["rgb"]
    logits = ((x - w["mean"]) / w["std"]) @ w["weight"].T + w["bias"]
    assert (logits.argmax(1) == _separable(100, 2).tensors["labels"].argmax(1)).float().mean() >= 0.97
    def two_heads(n, seed):  # EPIC-like: a noun head (the clusters) and a verb head (which side of a plane)
        emb = _separable(n, seed)
        verb = (emb.tensors["fused"][:, 0] > 0).long()
        verb_hot = torch.nn.functional.one_hot(verb, 2).to(torch.uint8)
        emb.tensors["labels"] = torch.cat([emb.tensors["labels"], verb_hot], 1)
        return replace(emb, class_names=["x", "y", "z", "v0", "v1"], class_splits=(3, 2), split_names=("noun", "verb"))

    heads = linear_probe(two_heads(300, 1), two_heads(100, 2))
    assert heads["metric"] == "action_top1" and heads["metrics"]["noun_top1"] >= 0.97 and heads["value"] >= 0.85
    with pytest.raises(ValueError, match="no embedding 'spectrogram'"):
        linear_probe(_separable(20, 1), _separable(20, 2), feature="spectrogram")
    other = replace(_separable(20, 2), class_names=["p", "q", "r"])
    with pytest.raises(ValueError, match="different class lists"):
        linear_probe(_separable(20, 1), other)


def test_cli_embed_and_probe(model_dir, manifest, tmp_path, capsys, one_thread):
    out = tmp_path / "emb"
    args = ["embed", str(manifest), "--format", "csv", "--model", str(model_dir), "--out", str(out),
            "--no-progress", "--chunk-size", "3", "--mode", "val", "--num-workers", "1"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "5 of 5 items" in printed and "1 without spectrogram" in printed
    assert main([*args, "--json"]) == 0  # the finished folder: nothing to do
    report = json.loads(capsys.readouterr().out)
    assert report["chunks_resumed"] == 2 and report["chunks_written"] == 0
    assert main([*args, "--set", "data.num_test_clips=2"]) == 1  # another recipe: refused, not mixed in
    assert "other settings (data differ)" in capsys.readouterr().err
    assert main([*args, "--set", "data.num_test_clips=2", "--mode", "test", "--overwrite"]) == 0
    assert load_embeddings(out).tensors["num_views"].tolist() == [2] * 5
    capsys.readouterr()
    assert main(["probe", str(out), str(out), "--json", "--out", str(tmp_path / "probe.safetensors")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["metric"] == "top1" and result["num_test"] == 5 and "top1" in result["metrics"]
    assert load_file(tmp_path / "probe.safetensors")["weight"].shape == (2, 64)
    assert main(["probe", str(out), str(tmp_path / "nowhere")]) == 1
    assert "not an embeddings folder" in capsys.readouterr().err
    assert json.loads((out / "index.json").read_text())["complete"] is True
