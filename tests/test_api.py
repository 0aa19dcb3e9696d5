"""The Python API mirrors the command verb for verb, with the options' names: `mbt.train`,
`mbt.evaluate`, `mbt.predict`, `mbt.embed`, `mbt.explain`, `mbt.export`, `mbt.timeline`,
`mbt.probe` exist at the top level, take what their command takes under the same names, and
give what it gives."""

from __future__ import annotations

import argparse
import inspect
import json

import numpy as np
import pytest

import mbt
from mbt.cli import build_parser, main

from .tiny_experiment import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")

VERBS = {"train": "train", "eval": "evaluate", "predict": "predict", "embed": "embed", "explain": "explain",
         "export": "export", "probe": "probe"}
"""Command -> the function of the Python API."""
CLI_ONLY = {"func", "command", "json", "json_only", "no_progress", "print_config", "list_presets", "timeline"}
"""Options about printing or listing, which the functions replace by return values."""
def _dests(verb: str) -> set[str]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[verb]
    return {a.dest for a in sub._actions if not isinstance(a, argparse._HelpAction)}


@pytest.mark.parametrize("verb", VERBS)
def test_each_verb_takes_the_commands_options_by_name(verb):
    function = getattr(mbt, VERBS[verb])
    assert callable(function)
    if inspect.ismodule(function):  # mbt.train / mbt.export / mbt.probe: callable modules
        module, _, name = function.__verb__.partition(":")
        import importlib

        function = getattr(importlib.import_module(module), name)
    params = inspect.signature(function).parameters
    wanted = _dests(verb) - CLI_ONLY
    if verb == "embed":  # the annotation options go through **annotation_options
        wanted -= {"classes", "verb_classes", "noun_classes", "root", "path_pattern", "ext", "split", "untrimmed",
                   "skip_bad", "duplicates"}
    if verb == "predict":
        wanted -= {"window", "hop"}  # --timeline's: mbt.timeline's
    missing = sorted(wanted - set(params))
    assert not missing, f"mbt.{VERBS[verb]} lacks the options of `mbt {verb}`: {missing}"
    assert "progress" in params or "no_progress" not in _dests(verb) or verb == "predict"


def test_timeline_is_a_verb_with_the_commands_names():
    params = inspect.signature(mbt.api.timeline).parameters
    assert {"video", "model", "out", "window", "hop", "topk", "device", "modalities"} <= set(params)
    assert callable(mbt.timeline) and mbt.timeline.write_timeline  # the module, still a module


def test_the_api_runs_train_evaluate_predict_embed_export_probe(tmp_path, capsys):
    """One tiny run through the whole API, compared with what the command gives."""
    cfg = tiny_config("train.epochs=2", "train.warmup_epochs=0", "dataset.synthetic_items=8")
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps(cfg.to_dict()))
    results = mbt.train(config, run_dir=tmp_path / "run", set=["train.lr=0.05"], progress=False)
    assert results["steps"] == 2 and (tmp_path / "run" / "final" / "config.json").is_file()
    import yaml

    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["lr"] == 0.05
    report = mbt.evaluate(tmp_path / "run", weights="final", modalities="spectrogram", progress=False)
    assert report["modalities"] == ["spectrogram"] and report["num_videos"] == 8
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run"), "--weights", "final", "--modalities", "spectrogram",
                 "--out", str(tmp_path / "cli-eval"), "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out) == report["metrics"]  # the command prints the function's result
    onnx = mbt.export(tmp_path / "run", tmp_path / "m.pt2")
    assert onnx.endswith("m.pt2")
    with pytest.raises(ValueError, match="not .tflite"):
        mbt.export(tmp_path / "run", tmp_path / "m.tflite")


def test_predict_embed_probe_on_files(tmp_path):
    from .synth_media import tone, write_media

    cfg = tiny_config("model.num_classes=2", "model.multi_label=false", "model.label_names=[low, high]")
    from .conftest import randomize

    model = randomize(mbt.MBT(cfg.model))
    model.save_pretrained(tmp_path / "model", data_config=cfg.data)
    videos = []
    for k, label in enumerate(["low", "high", "low", "high"]):
        (tmp_path / "v" / label).mkdir(parents=True, exist_ok=True)
        videos.append(str(write_media(tmp_path / "v" / label / f"{k}.mp4", num_frames=12, fps=12, size=(16, 16),
                                      signal=tone(220.0 * (1 + k % 2)), sample_rate=16000,
                                      audio_codec=None if k == 3 else "aac")))
    preds = mbt.predict(videos, tmp_path / "model", topk=1, clips=1, modalities="rgb")
    assert [p.modalities for p in preds] == [("rgb",)] * 4 and all(p.num_clips == 1 for p in preds)
    arrays = mbt.embed(videos, tmp_path / "model", out=tmp_path / "e.npz")
    assert np.isnan(arrays["spectrogram"][3]).all() and np.isfinite(arrays["fused"]).all()
    assert set(np.load(tmp_path / "e.npz")) >= {"paths", "rgb", "spectrogram", "fused", "has_spectrogram"}
    report = mbt.embed([str(tmp_path / "v")], tmp_path / "model", out=tmp_path / "emb", format="folder")
    assert report["embedded"] == 4 and report["without"]["spectrogram"] == 1
    result = mbt.probe(tmp_path / "emb", tmp_path / "emb", feature="rgb", out=tmp_path / "probe.safetensors")
    assert result["num_train"] == 4 and (tmp_path / "probe.safetensors").is_file()
    tl = mbt.timeline(videos[0], tmp_path / "model", out=tmp_path / "tl", window=0.5)
    assert (tmp_path / "tl" / "timeline.csv").is_file() and len(tl.starts) >= 1
