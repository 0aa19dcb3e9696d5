"""`mbt train` / `mbt eval` end to end: config handling, and a real run on generated H.264 + AAC
videos (a folder dataset with a silent-less clip, a video without audio and a corrupt file)."""

import csv
import json

import numpy as np
import pytest
import yaml

from mbt.cli import main

from .synth_media import tone, write_media
from .tiny_experiment import tiny_config, write_config

pytestmark = pytest.mark.usefixtures("one_thread")


def test_presets_print_config_and_errors(capsys, tmp_path):
    assert main(["train", "--list-presets"]) == 0
    listed = capsys.readouterr().out
    for name in ("audioset-mini", "audioset-500k", "vggsound", "epic-kitchens-100", "kinetics-sounds"):
        assert name in listed
    assert main(["train", "--preset", "vggsound", "--set", "train.lr=0.1", "model.fusion_layer=4",
                 "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert (printed["train"]["lr"], printed["model"]["fusion_layer"], printed["model"]["num_classes"]) == (0.1, 4, 309)
    config = tmp_path / "c.yaml"
    config.write_text("train: {epochs: 7}\n")
    assert main(["train", "--preset", "vggsound", "--config", str(config), "--set", "train.lr=0.2",
                 "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert (printed["train"]["epochs"], printed["train"]["lr"]) == (7, 0.2)
    for args, message in [
        (["--preset", "vggsound", "--set", "train.warmup=1"], "train.warmup: unknown key"),
        (["--preset", "vggsound", "--set", "train.batch_size=big"], "train.batch_size: expected an integer"),
        (["--preset", "nope"], "unknown preset 'nope'"),
        (["--resume", str(tmp_path)], "not a run folder"),
    ]:
        assert main(["train", *args, "--print-config"]) == 1
        assert message in capsys.readouterr().err


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Two classes of 1 s clips: 'tone' (a 440 Hz tone) and 'quiet' (silence, one without any
    audio track); plus a folder with a corrupt file."""
    root = tmp_path_factory.mktemp("videos")
    for label, signal in (("tone", tone(440.0)), ("quiet", None)):
        (root / label).mkdir()
        for k in range(4):
            codec = None if (label == "quiet" and k == 0) else "aac"
            write_media(root / label / f"{label}{k}.mp4", num_frames=25, fps=25, size=(32, 24),
                        audio_codec=codec, signal=signal, sample_rate=16000)
    return root


def _video_config(root, *extra):
    return tiny_config("dataset.format=folder", f"dataset.train=[{root}]", f"dataset.val=[{root}]",
                       f"dataset.test=[{root}]", "train.batch_size=4", "train.epochs=2", "train.eval_every=2", *extra)


def test_train_and_eval_on_video_files(videos, tmp_path, capsys):
    config = write_config(_video_config(videos), tmp_path / "cfg.yaml")
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--run-dir", str(run), "--no-progress"]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["steps"] == 4
    assert results["test"]["num_examples"] == 8 and results["test"]["num_views"] == 16  # 2 clips per video
    assert set(results["test"]) >= {"top1", "mean_class_acc", "loss"}  # one label per video: softmax metrics
    assert "top5" not in results["test"]  # 2 classes: top-5 would always be 1
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["label_names"] == ["quiet", "tone"] and saved["model"]["multi_label"] is False
    capsys.readouterr()

    assert main(["eval", str(run), "--no-progress"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    report = json.loads((run / "eval/test-best/metrics.json").read_text())
    assert report["metrics"] == metrics and report["num_videos"] == 8
    rows = [json.loads(line) for line in (run / "eval/test-best/predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(r["num_views"] == 2 for r in rows)
    assert {r["labels"][0] for r in rows} == {"tone", "quiet"}
    assert all(abs(sum(p for _, p in r["top"]) - 1) < 1e-4 for r in rows)  # softmax over the 2 classes
    saved = np.load(run / "eval/test-best/predictions.npz")
    assert saved["logits"].shape == (8, 2)
    with open(run / "eval/test-best/per_class.csv", newline="") as f:
        per_class = list(csv.DictReader(f))
    assert [r["class"] for r in per_class] == ["quiet", "tone"] and sum(int(r["support"]) for r in per_class) == 8
    right = saved["logits"].argmax(1) == saved["labels"].argmax(1)
    assert metrics["mean_class_acc"] == pytest.approx(np.mean([float(r["accuracy"]) for r in per_class]))
    assert metrics["top1"] == pytest.approx(right.mean())
    assert (run / "eval/test-best/confusion.png").stat().st_size > 0
    assert (run / "eval/test-best/confusions.csv").read_text().startswith("true,predicted,count,fraction_of_true")

    # a saved model folder, evaluated on annotations given on the command line, one clip per video
    out = tmp_path / "eval-final"
    assert main(["eval", str(run / "final"), "--split", "val", "--data", str(videos), "--format", "folder",
                 "--out", str(out), "--num-workers", "0", "--no-progress", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["split"] == "val" and report["num_videos"] == 8 and report["metrics"]["num_views"] == 8
    # the wrong folder: its sub-folders are not the model's classes, and the error names them
    assert main(["eval", str(run / "final"), "--data", str(tmp_path), "--format", "folder"]) == 1
    assert "class folder 'run' is not in the class list (first: ['quiet', 'tone'])" in capsys.readouterr().err


def test_corrupt_files_stop_or_are_skipped_and_counted(videos, tmp_path, capsys):
    root = tmp_path / "mixed"
    for label in ("tone", "quiet"):
        (root / label).mkdir(parents=True)
        for f in (videos / label).iterdir():
            (root / label / f.name).symlink_to(f)
    (root / "tone" / "broken.mp4").write_bytes((videos / "tone" / "tone1.mp4").read_bytes()[:300])
    config = write_config(_video_config(root, "train.batch_size=3", "train.epochs=1"), tmp_path / "cfg.yaml")
    assert main(["train", "--config", str(config), "--run-dir", str(tmp_path / "strict"), "--no-progress"]) == 1
    assert "broken.mp4" in capsys.readouterr().err
    # from a data-loader worker: the library's one-line message, not the worker's traceback
    assert main(["train", "--config", str(config), "--run-dir", str(tmp_path / "workers"), "--no-progress",
                 "--set", "train.num_workers=1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mbt train: error: ") and "broken.mp4 (annotation " in err.splitlines()[0]
    assert "Traceback" not in err
    assert main(["train", "--config", str(config), "--run-dir", str(tmp_path / "skip"), "--no-progress",
                 "--set", "dataset.skip_bad=true"]) == 0
    results = json.loads((tmp_path / "skip/results.json").read_text())
    assert results["skipped"]["train_clips_unreadable"] == 1  # 9 videos, 3 steps of 3: each once
    assert results["test"]["num_skipped"] == 2 and results["test"]["num_examples"] == 8  # its 2 test views


def test_a_run_that_reads_no_training_clip_fails(videos, tmp_path, capsys):
    """skip_bad over a training set of nothing but corrupt files is an error, not a run that
    'succeeds' with zero steps taken."""
    root = tmp_path / "dead"
    for k, label in enumerate(("tone", "tone", "quiet", "quiet")):
        (root / label).mkdir(parents=True, exist_ok=True)
        (root / label / f"broken{k}.mp4").write_bytes((videos / label / f"{label}1.mp4").read_bytes()[:300])
    cfg = tiny_config("dataset.format=folder", f"dataset.train=[{root}]", "train.batch_size=4", "train.epochs=2",
                      "dataset.skip_bad=true")
    config = write_config(cfg, tmp_path / "cfg.yaml")
    assert main(["train", "--config", str(config), "--run-dir", str(tmp_path / "run"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "no training clip could be read in 2 steps" in err and "4 distinct training files unreadable" in err
    assert "2 step(s) without a readable clip not taken; first causes: " in err and "broken" in err
    assert not (tmp_path / "run/results.json").exists()
    assert "stopped: UnreadableDataError: no training clip could be read" in (tmp_path / "run/log.txt").read_text()


@pytest.mark.parametrize("chosen", ["rgb", "spectrogram"])
def test_eval_modalities_on_video_files_decodes_only_those(videos, tmp_path, capsys, monkeypatch, chosen):
    """`mbt eval MODEL --modalities rgb` on real mp4 files: the sound is never decoded (and
    `--modalities spectrogram`: no frames), the clips feed only that tower, and the scores are
    the model's on that modality alone."""
    import torch

    import mbt
    from mbt.data import dataset as dataset_module

    cfg = _video_config(videos).override(["model.num_classes=2", "model.multi_label=false",
                                          "model.label_names=[quiet, tone]"])
    torch.manual_seed(0)
    model_dir = tmp_path / "model"
    mbt.MBT(cfg.model).save_pretrained(model_dir, data_config=cfg.data)
    calls = {"frames": 0, "audio_seconds": 0.0, "audio_only": 0}
    read_clip, read_audio = dataset_module.read_clip, dataset_module.AVDataset._read_audio

    def counting_read_clip(path, times, **kw):
        calls["frames"] += len(times)
        calls["audio_seconds"] += kw["audio_seconds"]
        return read_clip(path, times, **kw)

    def counting_read_audio(self, path, start):
        calls["audio_only"] += 1
        return read_audio(self, path, start)

    monkeypatch.setattr(dataset_module, "read_clip", counting_read_clip)
    monkeypatch.setattr(dataset_module.AVDataset, "_read_audio", counting_read_audio)
    out = tmp_path / "eval"
    assert main(["eval", str(model_dir), "--data", str(videos), "--format", "folder", "--modalities", chosen,
                 "--num-workers", "0", "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["modalities"] == [chosen] and report["num_videos"] == 8
    if chosen == "rgb":
        assert calls["frames"] > 0 and calls["audio_seconds"] == 0 and calls["audio_only"] == 0
    else:
        assert calls["frames"] == 0 and calls["audio_only"] == 16  # 8 videos x 2 test clips
    # the logits are the model's on that modality alone
    from mbt.train.data import build_dataset

    model = mbt.MBT.from_pretrained(model_dir).eval()
    ds = build_dataset(cfg, "test", modalities=(chosen,))
    assert ds.modalities == (chosen,) and set(ds[0]) & {"rgb", "spectrogram"} == {chosen}
    rows = [json.loads(line)["video_id"] for line in (out / "predictions.jsonl").read_text().splitlines()]
    npz = np.load(out / "predictions.npz")
    first = ds.annotations.items[0].video_id
    with torch.no_grad():
        alone = torch.stack([model({chosen: ds[i][chosen][None]}).logits[0] for i in range(ds.views)]).mean(0)
    row = rows.index(first)
    np.testing.assert_allclose(npz["logits"][row], alone.double().numpy(), rtol=1e-4, atol=1e-5)
