"""Non-finite values are found where they enter: decoded audio (float WAV with NaN or infinity),
model config statistics, weights, model outputs (predict, JSON), evaluation and the training loss."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import mbt
from mbt.cli import main
from mbt.data.annotations import Annotations, Item
from mbt.data.batch import ClipError, SkippedItem
from mbt.data.dataset import AVDataset
from mbt.data.decode import DecodeError, read_audio
from mbt.demo.run import _demo_data, _demo_model
from mbt.demo.synth import CLASSES
from mbt.train.evaluate import evaluate
from mbt.train.synthetic import SyntheticAVDataset

from .conftest import randomize, tamper_weights
from .tiny_experiment import tiny_config


def float_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> str:
    """A mono IEEE-float WAV (format 3), which can store NaN and infinity (the wave module writes PCM only)."""
    data = np.asarray(samples, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return str(path)


def _tone(seconds: float = 2.0, rate: int = 16000) -> np.ndarray:
    return (0.1 * np.sin(np.arange(int(seconds * rate)) / 10)).astype(np.float32)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    randomize(mbt.MBT(_demo_model().replace(label_names=CLASSES)), seed=1).save_pretrained(
        out, data_config=_demo_data())
    return out


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_audio_samples_are_a_decode_error_naming_the_file(tmp_path, bad):
    samples = _tone()
    samples[20000] = bad
    wav = float_wav(tmp_path / "bad.wav", samples)
    with pytest.raises(DecodeError, match=r"bad\.wav: 1 of 32000 decoded audio samples are NaN or infinite "
                                          r"\(first at 1\.250 s\)"):
        read_audio(wav, 0.0, 2.0)
    clean = float_wav(tmp_path / "clean.wav", _tone())
    assert np.isfinite(read_audio(clean, 0.0, 2.0)[0]).all()


def test_a_non_finite_clip_is_skipped_or_fails_like_damaged_media(tmp_path):
    samples = _tone()
    samples[::7] = np.nan
    wav = float_wav(tmp_path / "nan.wav", samples)
    ann = Annotations([Item(wav, (0,), video_id="nan")], ["a", "b"])
    cfg = _demo_data()
    with pytest.raises(ClipError, match=r"nan\.wav .*NaN or infinite"):
        AVDataset(ann, cfg, "val", modalities=("spectrogram",))[0]
    skipped = AVDataset(ann, cfg, "val", modalities=("spectrogram",), skip_bad=True)[0]
    assert isinstance(skipped, SkippedItem) and skipped.path == wav and "NaN or infinite" in skipped.reason


def test_predict_and_explain_refuse_nan_audio_and_json_stays_valid(model_dir, tmp_path, capsys):
    samples = _tone()
    samples[100:200] = np.nan
    wav = float_wav(tmp_path / "nan.wav", samples)
    good = float_wav(tmp_path / "good.wav", _tone())
    assert main(["predict", wav, good, "--model", str(model_dir), "--json"]) == 1
    out, err = capsys.readouterr()
    assert f"{wav}: error: " in err and "NaN or infinite" in err
    records = [json.loads(line) for line in out.splitlines()]  # strict JSON: no bare NaN
    assert [r["path"] for r in records] == [good]
    assert all(math.isfinite(t["probability"]) for t in records[0]["top"])
    assert main(["predict", wav, "--model", str(model_dir)]) == 1
    assert "nan%" not in capsys.readouterr().out
    with pytest.raises((DecodeError, ClipError), match="NaN or infinite"):
        mbt.Predictor(model_dir).explain(wav, tmp_path / "pics")


def test_predict_never_prints_a_nan_probability(tmp_path):
    model = mbt.MBT(_demo_model())
    with torch.no_grad():
        model.head.weight.fill_(float("nan"))  # a model whose outputs are NaN on any input
    wav = float_wav(tmp_path / "good.wav", _tone())
    predictor = mbt.Predictor(model, data=_demo_data())
    with pytest.raises(ValueError, match=r"good\.wav: the model's scores are NaN or infinite"):
        predictor.predict(wav)
    with pytest.raises(ValueError, match=r"good\.wav: the model's scores are NaN or infinite in \d+ of \d+ windows"):
        predictor.timeline(wav)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("spec_mean", float("nan"), r"spec_mean: must be a finite number"),
    ("spec_std", 0.0, r"spec_std: must be a finite number in \[1e-06"),
    ("spec_std", float("inf"), r"spec_std: must be a finite number"),
])
def test_non_finite_or_zero_statistics_in_a_saved_model_are_refused(model_dir, tmp_path, field, value, message):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["data"][field] = value
    (folder / "config.json").write_text(json.dumps(config))  # json writes NaN / Infinity as Python reads them
    with pytest.raises(ValueError, match=message):
        mbt.Predictor(folder)


class _Scores(torch.nn.Module):
    """Logits = the mean spectrogram value per class: NaN for a clip whose input is NaN."""

    def forward(self, inputs):
        x = inputs["spectrogram"].flatten(1).mean(1, keepdim=True)
        return type("Out", (), {"logits": torch.cat([x, -x, 0 * x], 1)})()


class _Files(torch.utils.data.Dataset):
    def __init__(self, values: list[float]):
        self.values, self.modalities, self.views, self.num_classes = values, ("spectrogram",), 1, 3

    def __len__(self):
        return len(self.values)

    def __getitem__(self, key):
        i = key[1] if isinstance(key, tuple) else key
        label = torch.zeros(3)
        label[1] = 1.0
        return {"spectrogram": torch.full((4, 2), self.values[i]), "label": label, "index": i,
                "video_id": f"v{i}", "path": f"/data/v{i}.wav", "has_audio": True}


def test_evaluation_reports_a_clip_without_a_finite_score_instead_of_counting_it(tmp_path):
    from mbt.train.distributed import init_distributed

    d = init_distributed("cpu")
    # v0 and v2 score class 1 (correct), v1 has NaN scores: before, argmax(NaN) = class 0, a wrong answer counted
    result = evaluate(_Scores(), _Files([-1.0, float("nan"), -2.0]), batch_size=2, dist=d, multi_label=False,
                      progress=False)
    assert result.non_finite == [("/data/v1.wav", "the model's scores are NaN or infinite")]
    assert result.video_ids == ["v0", "v2"] and np.isfinite(result.logits).all()
    assert result.metrics["top1"] == 1.0 and result.metrics["num_non_finite"] == 1


class _NaNSynthetic(SyntheticAVDataset):
    """The synthetic data set with file names, and NaN in the spectrogram of one file."""

    def __getitem__(self, key):
        out = super().__getitem__(key)
        index = key[1] if isinstance(key, tuple) else key
        out["path"] = f"/media/clip{index}.wav"
        if index == 3:
            out["spectrogram"] = torch.full_like(out["spectrogram"], float("nan"))
        return out


def test_a_non_finite_training_loss_names_the_files_of_its_batch(tmp_path):
    from mbt.train.loop import NonFiniteLossError, train

    cfg = tiny_config("train.epochs=1", "dataset.synthetic_items=16")
    data = _NaNSynthetic(cfg.model, cfg.data, "train", 16)
    with pytest.raises(NonFiniteLossError) as e:
        train(cfg, tmp_path / "run", progress=False, datasets={"train": data})
    assert "/media/clip3.wav" in str(e.value) and "content" in str(e.value)


def test_all_nan_weights_with_a_valid_checksum_are_refused_naming_the_key(model_dir, tmp_path):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(model_dir, folder)
    tamper_weights(folder, lambda s: s.update({"head.weight": torch.full_like(s["head.weight"], float("nan"))}))
    with pytest.raises(ValueError, match=r"model\.safetensors: head\.weight: \d+ of \d+ values are NaN or infinite"):
        mbt.MBT.from_pretrained(folder)


def test_a_nan_training_checkpoint_is_refused_and_the_previous_one_used(tmp_path):
    from mbt.train.checkpoint import CheckpointError, load_checkpoint, load_resume_checkpoint, save_checkpoint

    good = {"model": {"w": torch.ones(3)}, "step": 1}
    save_checkpoint(good, tmp_path / "latest.pt")
    save_checkpoint({"model": {"w": torch.tensor([1.0, float("nan"), 1.0])}, "step": 2}, tmp_path / "latest.pt")
    with pytest.raises(CheckpointError, match=r"latest\.pt: w: 1 of 3 values are NaN or infinite"):
        load_checkpoint(tmp_path / "latest.pt")
    state, path = load_resume_checkpoint(tmp_path)
    assert path.name == "previous.pt" and state["step"] == 1


def test_foreign_checkpoints_with_integer_or_nan_weights_are_refused_naming_the_key(tmp_path):
    """`train.init_from` and `mbt convert` read ViT, AST, CAV-MAE and AudioMAE files: an int8
    (quantised) tensor would be cast into a float parameter and a NaN copied in, both silently."""
    from mbt.weights.peers import PeerFormatError, read_peer
    from mbt.weights.vit import ViTFormatError, load_vit_state_dict

    assets = Path(__file__).parent / "assets" / "peer_init"
    source = torch.load(assets / "ast_orig_s10" / "ast_s10.pth", weights_only=True)
    key = "module.v.blocks.0.attn.qkv.weight"
    for damage, message in [(lambda t: t.to(torch.int8), "stored as torch.int8"),
                            (lambda t: t.index_fill(0, torch.tensor([3]), math.nan), "values are NaN or infinite")]:
        bad = dict(source, **{key: damage(source[key])})
        torch.save(bad, tmp_path / "ast.pth")
        with pytest.raises(PeerFormatError, match=rf"ast.pth: {key}: .*{message}"):
            read_peer(tmp_path / "ast.pth", num_heads=4, target_length=256)
        vit = {k.removeprefix("module.v."): v for k, v in bad.items() if k.startswith("module.v.")}
        save_file({k: v.contiguous() for k, v in vit.items()}, tmp_path / "vit.safetensors")
        with pytest.raises(ViTFormatError, match=rf"vit.safetensors: blocks.0.attn.qkv.weight: .*{message}"):
            load_vit_state_dict(tmp_path / "vit.safetensors")
    read_peer(assets / "ast_orig_s10" / "ast_s10.pth", num_heads=4, target_length=256)  # undamaged: read
