"""Using a saved model on video files: predict, embed, explain (Python and CLI)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import mbt
from mbt.cli import main
from mbt.data.config import DataConfig
from mbt.demo.run import _demo_data, _demo_model
from mbt.demo.synth import CLASSES, SynthConfig, _picture, _sound, write_clip

from .conftest import randomize


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    cfg = _demo_model().replace(label_names=CLASSES)
    randomize(mbt.MBT(cfg), seed=1).save_pretrained(out, data_config=_demo_data())
    return out


def _video(path, seconds=2.0, audio=True):
    cfg = SynthConfig(seconds=seconds)
    rng = np.random.default_rng(0)
    frames = _picture(rng, 0, cfg)
    sound = _sound(rng, 1, cfg)
    if audio:
        write_clip(path, frames, sound, cfg.fps, cfg.sample_rate)
    else:
        import av

        with av.open(str(path), "w") as c:
            s = c.add_stream("libx264", rate=cfg.fps)
            s.width = s.height = cfg.size
            s.pix_fmt = "yuv420p"
            for img in frames:
                c.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
            c.mux(s.encode())
    return str(path)


def test_predict_multi_clip_softmax(model_dir, tmp_path):
    short = _video(tmp_path / "short.mp4")
    long = _video(tmp_path / "long.mp4", seconds=7.0)
    predictor = mbt.Predictor(model_dir)
    a, b = predictor.predict(short, topk=3), predictor.predict(long, topk=3)
    assert a.num_clips == 1 and b.num_clips == 4  # 7 s covered by 2-s windows
    assert len(a.top) == 3 and a.top[0][1] >= a.top[1][1] >= a.top[2][1]
    assert abs(a.scores.sum() - 1) < 1e-5 and a.top[0][0] in CLASSES
    assert a.modalities == ("spectrogram", "rgb") and a.note == ""
    # the average of the clips' logits, as multi-clip evaluation does
    batch = predictor.clips(long)
    with torch.no_grad():
        logits = predictor.model({m: batch[m] for m in ("rgb", "spectrogram")}).logits.mean(0)
    np.testing.assert_allclose(b.scores, logits.softmax(-1).numpy(), atol=1e-6)


def test_video_without_sound_uses_the_video_towers(model_dir, tmp_path):
    silent = _video(tmp_path / "silent.mp4", audio=False)
    pred = mbt.predict(silent, model_dir)[0]
    assert pred.modalities == ("rgb",) and "no audio" in pred.note
    emb = mbt.embed([silent, _video(tmp_path / "loud.mp4")], model_dir)
    assert emb["rgb"].shape == (2, 64) and np.isnan(emb["spectrogram"][0]).all()
    assert np.isfinite(emb["spectrogram"][1]).all()


def test_multi_label_models_use_sigmoid(tmp_path):
    cfg = _demo_model().replace(multi_label=True)
    randomize(mbt.MBT(cfg), seed=2).save_pretrained(tmp_path / "m", data_config=_demo_data())
    pred = mbt.Predictor(tmp_path / "m").predict(_video(tmp_path / "v.mp4"))
    assert pred.scores.sum() > 1.0 and ((pred.scores > 0) & (pred.scores < 1)).all()


def test_explain_writes_readable_pictures(model_dir, tmp_path):
    paths = mbt.explain(_video(tmp_path / "v.mp4"), model_dir, tmp_path / "pics")
    assert sorted(p.name for p in paths) == ["audio_attention.png", "video_attention.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000


@pytest.mark.parametrize("changes", [{"fusion_layer": 4}, {"fusion": "vanilla"}, {"classifier": "gap"},
                                     {"temporal_encoding": "3d_conv", "tubelet_size": 2}])
def test_attention_maps_for_other_variants(changes):
    from mbt.visualize import patch_attention

    cfg = _demo_model().replace(**changes)
    model = randomize(mbt.MBT(cfg)).eval()
    x = {"rgb": torch.randn(1, 4, 3, 64, 64), "spectrogram": torch.randn(1, 200, 64)}
    heat, source = patch_attention(model, model(x, output_attentions=True))
    assert heat["rgb"].shape == (cfg.num_patches("rgb"),) and heat["spectrogram"].shape == (48,)
    assert ("bottleneck" in source) == (cfg.fusion == "bottleneck" and cfg.fusion_layer < 4)
    assert all((h >= 0).all() for h in heat.values())


def test_cli(model_dir, tmp_path, capsys):
    video = _video(tmp_path / "v.mp4")
    assert main(["predict", video, "--model", str(model_dir), "--json", "--topk", "2"]) == 0
    record = json.loads(capsys.readouterr().out.strip())
    assert len(record["top"]) == 2 and record["num_clips"] == 1
    assert main(["predict", str(tmp_path / "missing.mp4"), "--model", str(model_dir)]) == 1
    assert "no such file" in capsys.readouterr().err
    assert main(["embed", video, "--model", str(model_dir), "--out", str(tmp_path / "e.npz")]) == 0
    with np.load(tmp_path / "e.npz") as z:
        assert z["rgb"].shape == (1, 64) and list(z["paths"]) == [video]
    assert main(["explain", video, "--model", str(model_dir), "--out", str(tmp_path / "pics")]) == 0
    assert (tmp_path / "pics" / "video_attention.png").is_file()


def test_data_config_travels_with_the_model(model_dir):
    assert mbt.Predictor(model_dir).data == _demo_data()
    assert isinstance(mbt.Predictor(mbt.MBT(_demo_model())).data, DataConfig)


def test_cli_damaged_still_dateless_and_directory_inputs(model_dir, tmp_path, capsys):
    from .test_media_damage import _damaged_copy, write_live_webm

    damaged = _damaged_copy(tmp_path)
    assert main(["predict", str(damaged), "--model", str(model_dir), "--clips", "1"]) == 0
    assert f"warning: {damaged}: decoded with concealed damage" in capsys.readouterr().err
    no_duration = write_live_webm(tmp_path / "no_duration.webm")
    assert main(["predict", str(no_duration), "--model", str(model_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_clips"] >= 1
    assert main(["predict", str(tmp_path), "--model", str(model_dir)]) == 1
    assert "is a directory" in capsys.readouterr().err
