"""A modality a file lacks: audio-only files, videos without sound (predict, embed, datasets)."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

import mbt
from mbt.cli import main
from mbt.data.annotations import Annotations, Item
from mbt.data.dataset import AVDataset
from mbt.demo.run import _demo_data, _demo_model
from mbt.demo.synth import CLASSES

from .conftest import randomize

# container -> audio codec
CONTAINERS = {"wav": "pcm_s16le", "mp3": "libmp3lame", "flac": "flac", "m4a": "aac", "ogg": "libopus"}


def _audio_file(path, codec, seconds=3.0, rate=48000):
    """A chirp in an audio-only container."""
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=rate)
        s.layout = "stereo"
        to_codec = av.AudioResampler(format=s.codec_context.format.name, layout="stereo", rate=rate)
        t = np.arange(round(seconds * rate)) / rate
        wav = (0.3 * np.sin(2 * np.pi * (300 + 400 * t) * t)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(np.repeat(wav[None], 2, axis=0), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = rate, 0, Fraction(1, rate)
        for f in to_codec.resample(frame) + to_codec.resample(None):
            c.mux(s.encode(f))
        c.mux(s.encode())
    return str(path)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    randomize(mbt.MBT(_demo_model().replace(label_names=CLASSES)), seed=1).save_pretrained(
        out, data_config=_demo_data())
    return out


@pytest.mark.parametrize("ext", list(CONTAINERS))
def test_audio_only_files_are_predicted_from_their_sound(model_dir, tmp_path, ext):
    path = _audio_file(tmp_path / f"sound.{ext}", CONTAINERS[ext])
    predictor = mbt.Predictor(model_dir)
    pred = predictor.predict(path, topk=3)
    assert pred.modalities == ("spectrogram",) and pred.note == "no video stream: predicted from the sound alone"
    assert pred.num_clips == 2  # 3 s covered by 2-s windows
    # the audio tower alone on the file's sound (not silence, not grey frames)
    ds = AVDataset(Annotations([Item(path, ())], list(CLASSES)), replace(predictor.data, num_test_clips=2), "test",
                   modalities=("spectrogram",))
    spec = torch.stack([ds[i]["spectrogram"] for i in range(2)])
    assert spec.std() > 0.5  # a chirp, not the constant log-mel of silence
    with torch.no_grad():
        expected = predictor.model({"spectrogram": spec}).logits.mean(0).softmax(-1)
    np.testing.assert_allclose(pred.scores, expected.numpy(), atol=1e-5)


def test_dataset_items_of_an_audio_only_file_say_what_is_missing(tmp_path):
    path = _audio_file(tmp_path / "a.wav", "pcm_s16le")
    item = AVDataset(Annotations([Item(path, (0,))], ["x"]), _demo_data(), "train")[0]
    assert item["has_audio"] and not item["has_rgb"]
    assert item["rgb"].shape == (4, 3, 64, 64) and not item["rgb"].any()  # mid-grey frames in a batch
    assert item["spectrogram"].std() > 0.5


def test_a_file_with_nothing_the_model_uses_is_an_error(tmp_path):
    cfg = _demo_model().replace(modalities=("rgb",), label_names=CLASSES)
    mbt.MBT(cfg).save_pretrained(tmp_path / "m", data_config=_demo_data())
    path = _audio_file(tmp_path / "a.flac", "flac")
    with pytest.raises(ValueError, match=r"a\.flac: no video stream: nothing this model \(rgb\) can use"):
        mbt.Predictor(tmp_path / "m").predict(path)


def test_embed_writes_a_mask_of_what_each_file_has(model_dir, tmp_path, capsys):
    from .test_timeline import _write

    silent = _write(tmp_path / "silent.mp4", [100] * 16, size=64, audio=False)
    sound = _audio_file(tmp_path / "s.wav", "pcm_s16le")
    both = _write(tmp_path / "both.mp4", [100] * 16, size=64)
    out = tmp_path / "e.npz"
    assert main(["embed", silent, sound, both, "--model", str(model_dir), "--out", str(out)]) == 0
    assert "1 file(s) without spectrogram; 1 file(s) without rgb" in capsys.readouterr().out
    z = np.load(out)
    assert z["has_rgb"].tolist() == [True, False, True] and z["has_spectrogram"].tolist() == [False, True, True]
    for m in ("rgb", "spectrogram"):
        assert z[m].shape == (3, 64)
        assert np.isfinite(z[m][z[f"has_{m}"]]).all() and np.isnan(z[m][~z[f"has_{m}"]]).all()


def test_cli_predict_says_which_modality_it_used(model_dir, tmp_path, capsys):
    path = _audio_file(tmp_path / "a.mp3", "libmp3lame")
    assert main(["predict", path, "--model", str(model_dir)]) == 0
    assert "[2 clip(s), spectrogram]  (no video stream: predicted from the sound alone)" in capsys.readouterr().out


def test_evaluation_runs_each_clip_through_the_towers_it_has():
    """A batch mixing clips with and without sound: each gets what `predict` gives its file."""
    from mbt.train.evaluate import forward_present

    from .conftest import tiny_config, tiny_inputs

    model = randomize(mbt.MBT(tiny_config()), seed=4).eval()
    x = tiny_inputs(model.config, batch=3)
    batch = {**x, "has_audio": torch.tensor([True, False, True]), "has_rgb": torch.tensor([True, True, False])}
    with torch.no_grad():
        got = forward_present(model, batch, model.config.modalities, torch.device("cpu"))
        both = model({m: v[:1] for m, v in x.items()}).logits
        video = model({"rgb": x["rgb"][1:2]}).logits
        sound = model({"spectrogram": x["spectrogram"][2:]}).logits
    torch.testing.assert_close(got, torch.cat([both, video, sound]))


def test_modality_dropout_config():
    from mbt.models.config import ConfigError

    from .tiny_experiment import tiny_config as experiment

    assert experiment("train.modality_dropout=0.5").train.modality_dropout == 0.5
    with pytest.raises(ConfigError, match="modality_dropout: must be a probability"):
        experiment("train.modality_dropout=1.5")
    with pytest.raises(ConfigError, match="modality_dropout: needs a model with two modalities"):
        experiment("train.modality_dropout=0.5", "model.modalities=[rgb]")


def test_modality_dropout_keeps_single_modality_accuracy(tmp_path, one_thread):
    """A model whose head pools the tokens of both towers learns to lean on their joint
    statistics: without modality dropout it loses most of its accuracy when one tower is
    missing; trained with `train.modality_dropout` it keeps it."""
    from mbt.train.distributed import Dist
    from mbt.train.evaluate import evaluate
    from mbt.train.loop import train
    from mbt.train.synthetic import SyntheticAVDataset

    from .tiny_experiment import tiny_config as experiment

    accuracy = {}
    for p in (0.0, 0.5):
        cfg = experiment("model.multi_label=false", "model.classifier=gap", "train.mixup_alpha=0", "train.epochs=12",
                         "dataset.synthetic_items=64", f"train.modality_dropout={p}")
        train(cfg, tmp_path / f"p{p}", progress=False)
        model = mbt.MBT.from_pretrained(tmp_path / f"p{p}" / "final")
        for mods in (("rgb", "spectrogram"), ("rgb",), ("spectrogram",)):
            ds = SyntheticAVDataset(cfg.model, cfg.data, "test", 64, seed=cfg.train.seed, modalities=mods)
            result = evaluate(model, ds, batch_size=16, dist=Dist(0, 1, 0, torch.device("cpu")), multi_label=False,
                              progress=False)
            accuracy[p, "+".join(mods)] = result.metrics["top1"]
    assert accuracy[0.5, "rgb+spectrogram"] >= 0.95 and accuracy[0.5, "rgb"] >= 0.95
    assert accuracy[0.5, "spectrogram"] >= 0.75  # the harder modality alone
    assert accuracy[0.0, "spectrogram"] <= 0.5  # what the option is for


def test_timeline_of_an_audio_only_file(model_dir, tmp_path):
    path = _audio_file(tmp_path / "a.m4a", "aac", seconds=5.0)
    tl = mbt.Predictor(model_dir).timeline(path, window=2.0, hop=1.0)
    assert tl.modalities == ("spectrogram",) and tl.note == "no video stream: predicted from the sound alone"
    assert len(tl.starts) == 4 and np.allclose(tl.scores.sum(1), 1.0, atol=1e-5)
    cfg = _demo_model().replace(modalities=("rgb",))
    mbt.MBT(cfg).save_pretrained(tmp_path / "video_only", data_config=_demo_data())
    with pytest.raises(ValueError, match=r"a\.m4a: no video stream: nothing this model"):
        mbt.Predictor(tmp_path / "video_only").timeline(path)


def test_eval_modalities_runs_only_the_chosen_towers(tmp_path, capsys):
    """`mbt eval RUN --modalities spectrogram`: an audio-only evaluation of an audio-visual
    model; the logits per video are the model's on the spectrograms alone, averaged over views."""
    import json

    from mbt.train.loop import train
    from mbt.train.synthetic import SyntheticAVDataset

    from .tiny_experiment import tiny_config as experiment

    cfg = experiment("train.epochs=2", "train.warmup_epochs=0", "dataset.synthetic_items=8")
    train(cfg, tmp_path / "run", progress=False)
    assert main(["eval", str(tmp_path / "run"), "--weights", "final", "--modalities", "spectrogram",
                 "--no-progress"]) == 0
    out = tmp_path / "run" / "eval" / "test-final-spectrogram"
    report = json.loads((out / "metrics.json").read_text())
    assert report["modalities"] == ["spectrogram"]
    got = np.load(out / "predictions.npz")["logits"]
    model = mbt.MBT.from_pretrained(tmp_path / "run" / "final").eval()
    ds = SyntheticAVDataset(cfg.model, cfg.data, "test", 8, seed=cfg.train.seed)
    with torch.no_grad():
        sound = torch.stack([model({"spectrogram": ds[i]["spectrogram"][None]}).logits[0] for i in range(len(ds))])
        both = model({m: torch.stack([ds[i][m] for i in range(ds.views)]) for m in cfg.model.modalities}).logits
    expected = sound.double().reshape(8, ds.views, -1).mean(1).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(got[0], both.double().mean(0).numpy(), atol=1e-4)  # not the audio-visual logits
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run"), "--weights", "final", "--modalities", "audio", "--no-progress"]) == 1
    assert "modalities ['audio']: choose among the model's" in capsys.readouterr().err


def test_predict_with_chosen_modalities(model_dir, tmp_path, capsys):
    """`--modalities spectrogram` on a video with sound: the audio tower alone on its sound,
    as the same file without its frames would be predicted; a choice, so no note."""
    from .conftest import ASSETS

    video = str(Path(ASSETS) / "media" / "moviepy_example3_854x480_h264_mp3.mp4")
    predictor = mbt.Predictor(model_dir, modalities=["spectrogram"])
    pred = predictor.predict(video, topk=3)
    assert pred.modalities == ("spectrogram",) and pred.note == ""
    ds = AVDataset(Annotations([Item(video, ())], list(CLASSES)),
                   replace(predictor.data, num_test_clips=pred.num_clips), "test", modalities=("spectrogram",))
    spec = torch.stack([ds[i]["spectrogram"] for i in range(pred.num_clips)])
    with torch.no_grad():
        expected = predictor.model({"spectrogram": spec}).logits.mean(0).softmax(-1)
    np.testing.assert_allclose(pred.scores, expected.numpy(), atol=1e-5)
    assert not np.allclose(mbt.Predictor(model_dir).predict(video).scores, pred.scores, atol=1e-4)
    assert main(["predict", video, "--model", str(model_dir), "--modalities", "spectrogram"]) == 0
    assert "clip(s), spectrogram]" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"modalities \['audio'\]: choose among the model's"):
        mbt.Predictor(model_dir, modalities=["audio"])
    sound = _audio_file(tmp_path / "a.wav", "pcm_s16le")  # only rgb asked of a file with no frames
    assert main(["predict", sound, "--model", str(model_dir), "--modalities", "rgb"]) == 1
    assert f"{sound}: error:" in capsys.readouterr().err
