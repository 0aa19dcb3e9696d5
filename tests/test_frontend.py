"""The Kaldi fbank front end (AST / CAV-MAE / AudioMAE's features) against torchaudio's outputs,
its length and normalisation rule, and its use by a saved model's predictions."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import mbt
from mbt.data.config import DataConfig
from mbt.data.decode import read_audio
from mbt.data.features import KALDI_LOG_FLOOR, fit_frames, kaldi_fbank, log_mel, spectrogram
from mbt.demo.run import _demo_data, _demo_model
from mbt.demo.synth import SynthConfig, _picture, _sound, write_clip
from mbt.models.config import ConfigError
from mbt.train.presets import preset

from .conftest import randomize

REFERENCE = Path(__file__).parent / "assets" / "kaldi_fbank" / "fbank_reference.npz"
AST = {"spec_mean": -4.2677393, "spec_std": 9.1379948}
CAVMAE = {"spec_mean": -5.081, "spec_std": 4.4849}


@pytest.fixture(scope="module")
def ref():
    with np.load(REFERENCE) as f:
        data = dict(f)
    data["waveform"] = data.pop("waveform_int16").astype(np.float32) / 32768
    return data


def test_kaldi_fbank_equals_torchaudio_in_float64(ref):
    """torchaudio's own fbank run in float64 (frames 740-830, where the float32 file is
    noisiest): the same computation, to rounding."""
    ours = kaldi_fbank(torch.from_numpy(ref["waveform"]).double()).numpy()
    assert ours.dtype == np.float64 and ours.shape == (998, 128)  # snip_edges: 1 + (160000 - 400) // 160
    np.testing.assert_allclose(ours[740:830], ref["fbank_f64_frames_740_830"], rtol=0, atol=1e-6)


def test_kaldi_fbank_equals_the_peers_float32_reference(ref):
    """`torchaudio.compliance.kaldi.fbank` with AST's arguments, float32, computed elsewhere: within
    1e-3 everywhere but at bins whose energy is ~1e-7 (log -14.7, near the 1.19e-7 floor), where the
    file's own float32 rounding reaches 1.1e-3 (its float64 counterpart differs from it by as much)."""
    ours = kaldi_fbank(torch.from_numpy(ref["waveform"])).numpy()
    diff = np.abs(ours - ref["fbank_raw"])
    assert ours.dtype == np.float32 and ours.shape == ref["fbank_raw"].shape
    assert diff[ref["fbank_raw"] > -13.0].max() <= 1e-3
    assert diff.max() <= 2e-3 and (diff > 1e-3).sum() <= 2 and diff.mean() <= 1e-5


def test_kaldi_fbank_of_silence_sits_at_the_floor_and_batches():
    assert torch.equal(kaldi_fbank(torch.zeros(16000)), torch.full((98, 128), float(np.log(KALDI_LOG_FLOOR))))
    waves = torch.randn(2, 3, 4000)
    batched = kaldi_fbank(waves, num_mel_bins=40)
    assert batched.shape == (2, 3, 23, 40)
    torch.testing.assert_close(batched[1, 2], kaldi_fbank(waves[1, 2], num_mel_bins=40))
    assert kaldi_fbank(torch.zeros(399)).shape == (0, 128)  # shorter than one frame


@pytest.mark.parametrize(("name", "stats", "key"), [
    ("audioset-ast", AST, "fbank_ast_norm_frames_960_1024"),
    ("vggsound-cavmae", CAVMAE, "fbank_cavmae_norm_frames_960_1024"),
])
def test_pad_then_normalise_reproduces_the_peers_input(ref, name, stats, key):
    """10 s -> 998 frames, zero-padded to 1024, then normalised: the last 26 frames are the
    normalised zero (0.467 for AST), as the peers feed them; the presets carry the recipe."""
    data = preset(name).data
    assert (data.frontend, data.target_length, data.spec_mean, data.spec_std) == (
        "kaldi_fbank", 1024, stats["spec_mean"], stats["spec_std"])
    data = dataclasses.replace(data, audio_seconds=10.0)
    spec = spectrogram(ref["waveform"], data).numpy()
    assert spec.shape == (1024, 128)
    np.testing.assert_allclose(spec[960:], ref[key], rtol=0, atol=2.5e-4)
    np.testing.assert_allclose(spec[998:], -stats["spec_mean"] / stats["spec_std"], rtol=0, atol=1e-6)
    cut = spectrogram(ref["waveform"], dataclasses.replace(data, target_length=500)).numpy()
    np.testing.assert_array_equal(cut, spec[:500])


def test_fit_frames_cuts_or_pads_the_time_axis():
    x = torch.arange(12.0).reshape(1, 4, 3)
    assert torch.equal(fit_frames(x, 2), x[:, :2])
    assert torch.equal(fit_frames(x, 6)[:, 4:], torch.zeros(1, 2, 3)) and torch.equal(fit_frames(x, 6)[:, :4], x)


def test_log_mel_stays_the_default_and_bad_values_are_named():
    data = DataConfig()
    assert data.frontend == "log_mel" and data.target_length is None
    wave = torch.randn(16000 * 8)
    torch.testing.assert_close(spectrogram(wave, data), log_mel(wave, data))
    with pytest.raises(ConfigError, match=r"data\.frontend: expected one of \['log_mel', 'kaldi_fbank'\], got 'mfcc'"):
        DataConfig(frontend="mfcc")
    with pytest.raises(ConfigError, match=r"data\.target_length"):
        DataConfig(target_length=0)


def test_sized_for_sets_the_target_length_when_one_is_used():
    model = _demo_model()
    assert _demo_data().sized_for(model).target_length is None
    sized = dataclasses.replace(_demo_data(), frontend="kaldi_fbank", target_length=50).sized_for(model)
    assert (sized.target_length, sized.audio_seconds, sized.num_spectrogram_frames) == (200, 2.0, 200)


# ---------------------------------------------------------------------- a saved model uses its front end
KALDI = dataclasses.replace(_demo_data(), frontend="kaldi_fbank", target_length=200, spec_mean=-6.0, spec_std=4.0)


def _video(path: Path) -> str:
    cfg = SynthConfig(seconds=2.0)
    rng = np.random.default_rng(0)
    write_clip(path, _picture(rng, 0, cfg), _sound(rng, 1, cfg), cfg.fps, cfg.sample_rate)
    return str(path)


def test_a_saved_models_front_end_feeds_predict_and_timeline(tmp_path):
    video = _video(tmp_path / "clip.mp4")
    model = randomize(mbt.MBT(_demo_model()), seed=3)
    model.save_pretrained(tmp_path / "kaldi", data_config=KALDI)
    model.save_pretrained(tmp_path / "logmel", data_config=_demo_data())
    saved = json.loads((tmp_path / "kaldi" / "config.json").read_text())["data"]
    assert (saved["frontend"], saved["target_length"]) == ("kaldi_fbank", 200)

    predictor = mbt.Predictor(tmp_path / "kaldi")
    assert predictor.data == KALDI
    spec = predictor.clips(video, num_clips=1)["spectrogram"][0]
    audio, _ = read_audio(video, 0.0, 2.0)  # the one clip of a 2-s file: its whole audio
    raw = kaldi_fbank(torch.from_numpy(audio), 16000, 64)
    assert raw.shape == (198, 64)  # 2 s, snip_edges; padded to 200 before normalising
    torch.testing.assert_close(spec, (fit_frames(raw, 200) + 6.0) / 4.0)
    assert torch.all(spec[198:] == 1.5)

    pred = predictor.predict(video, num_clips=1)
    other = mbt.Predictor(tmp_path / "logmel").predict(video, num_clips=1)
    assert np.abs(pred.scores - other.scores).max() > 1e-3  # the recipe, not the weights, differs
    tl = predictor.timeline(video, window=2.0, hop=2.0)
    np.testing.assert_allclose(tl.scores[0], pred.scores, rtol=0, atol=1e-5)


def test_a_recipe_whose_spectrogram_does_not_fit_the_model_is_refused(tmp_path):
    mbt.MBT(_demo_model()).save_pretrained(tmp_path / "m", data_config=dataclasses.replace(KALDI, target_length=150))
    with pytest.raises(ConfigError, match=r"model\.spectrogram_size=\[200, 64\] differs from the data's \[num_spec"
                                          r"trogram_frames, num_mel_bins\]=\[150, 64\] \(data\.target_length"):
        mbt.Predictor(tmp_path / "m")
