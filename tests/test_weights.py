"""mbt's own format and the Scenic mapping, over every option of the official module."""

from __future__ import annotations

import json
import os

import msgpack
import numpy as np
import pytest
import torch
import yaml

import mbt
from mbt.cli import main
from mbt.weights.scenic import ScenicFormatError, _unflatten as _nest, load_scenic_params, scenic_model_config

from .conftest import ASSETS, randomize, tiny_config, tiny_inputs

OPTIONS = [
    {},
    {"classifier": "gap"},
    {"classifier": "gmp", "representation_size": 12},
    {"classifier": "gsp"},
    {"fusion": "vanilla"},
    {"fusion": "vanilla", "share_encoder": True, "fusion_layer": 0},
    {"fusion": "bottleneck", "share_encoder": True},
    {"fusion_layer": 0, "num_bottlenecks": 2},
    {"fusion_layer": 4},
    {"test_with_bottlenecks": False},
    {"representation_size": 10},
    {"temporal_encoding": "temporal_sampling", "num_frames": 8, "n_sampled_frames": 3},
    {"modalities": ("rgb", "spectrogram")},
    {"modalities": ("rgb",)},
    {"modalities": ("spectrogram",)},
    {"modalities": ("spectrogram",), "classifier": "token"},
    {"tubelet_init": "average_frame"},
]


@pytest.mark.parametrize("changes", OPTIONS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
def test_save_pretrained_round_trip_is_bit_exact(tmp_path, changes):
    cfg = tiny_config(**changes, label_names=tuple(f"class {i}" for i in range(7)))
    model = randomize(mbt.MBT(cfg))
    model.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]
    loaded = mbt.MBT.from_pretrained(tmp_path)
    assert loaded.config == cfg
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    inputs = tiny_inputs(cfg)
    with torch.no_grad():
        assert torch.equal(model.eval()(inputs).logits, loaded(inputs).logits)


@pytest.mark.parametrize("changes", OPTIONS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
def test_every_option_converts_to_and_from_scenic(changes):
    """`to_scenic` writes the official parameter tree (names and Flax layouts); reading it
    back with Scenic's config fields gives the same network and outputs."""
    cfg = tiny_config(**changes, dropout_rate=0.0, attention_dropout_rate=0.0)
    model = randomize(mbt.MBT(cfg)).eval()
    params = mbt.to_scenic(model)
    if cfg.num_modalities == 2 and not cfg.share_encoder:
        assert "Transformer/encoderblock_0_spectrogram/MultiHeadDotProductAttention_0/query/kernel" in params
    shapes = {"rgb": (cfg.num_frames, *cfg.image_size), "spectrogram": cfg.spectrogram_size}
    back = mbt.from_scenic(params, scenic_model_config(cfg), input_shapes=shapes)
    inputs = tiny_inputs(cfg)
    with torch.no_grad():
        torch.testing.assert_close(back(inputs).logits, model(inputs).logits, rtol=0, atol=1e-6)
    # without input shapes the geometry is inferred from the token counts alone
    inferred = mbt.from_scenic(params, scenic_model_config(cfg))
    assert sum(p.numel() for p in inferred.parameters()) == sum(p.numel() for p in model.parameters())


def _write_flax_checkpoint(path, tree) -> None:
    def pack(x):
        if isinstance(x, np.ndarray):
            payload = msgpack.packb((x.shape, x.dtype.name, x.tobytes("C")), use_bin_type=True)
            return msgpack.ExtType(1, payload)
        return x

    with open(path, "wb") as f:
        f.write(msgpack.packb(tree, default=pack, use_bin_type=True))


def test_checkpoint_layouts_and_bad_files(tmp_path):
    model = randomize(mbt.MBT(tiny_config()))
    flat = mbt.to_scenic(model)
    layouts = {
        "current": {"params": _nest(flat), "global_step": 7},
        "legacy": {"optimizer": {"target": _nest(flat), "state": {"step": np.array(7)}}},
        "pre_linen": {"optimizer": {"target": {"params": _nest(flat)}}},
    }
    for name, tree in layouts.items():
        path = tmp_path / f"checkpoint_{len(name)}"
        _write_flax_checkpoint(path, tree)
        restored = load_scenic_params(str(path))
        assert set(restored) == set(flat), name
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(ScenicFormatError, match="empty"):
        load_scenic_params(str(empty))
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\xc1\xc1 not msgpack")
    with pytest.raises(ScenicFormatError, match="not a flax msgpack"):
        load_scenic_params(str(garbage))
    with pytest.raises(FileNotFoundError):
        load_scenic_params(str(tmp_path / "nope"))


def test_conversion_errors_name_the_problem():
    model = mbt.MBT(tiny_config())
    params = mbt.to_scenic(model)
    config = scenic_model_config(model.config)
    missing = {k: v for k, v in params.items() if k != "bottleneck"}
    with pytest.raises(ScenicFormatError, match="bottleneck"):
        mbt.from_scenic(missing, config)
    with pytest.raises(ScenicFormatError, match="unknown Scenic config.model field"):
        mbt.from_scenic(params, {**config, "fusion_lyer": 2})
    with pytest.raises(ScenicFormatError, match="do(es)? not use"):
        mbt.from_scenic({**params, "extra/kernel": np.zeros(3)}, config)
    with pytest.raises(ScenicFormatError, match="factorized_encoder|spacetime"):
        mbt.from_scenic(params, {**config, "attention_config": {"type": "factorized_encoder"}})


def test_convert_cli_writes_a_loadable_model(tmp_path):
    d = os.path.join(ASSETS, "parity", "b_token_bottleneck")
    with open(os.path.join(d, "config.json")) as f:
        (tmp_path / "model.json").write_text(json.dumps(json.load(f)["mbt_kwargs"]))
    (tmp_path / "labels.txt").write_text("\n".join(f"c{i}" for i in range(7)))
    out = tmp_path / "converted"
    rc = main(["convert", "scenic", os.path.join(d, "scenic_checkpoint_legacy", "checkpoint_5000"),
               "--config", str(tmp_path / "model.json"), "--out", str(out), "--labels", str(tmp_path / "labels.txt")])
    assert rc == 0
    model = mbt.MBT.from_pretrained(out)
    assert model.config.label_names[3] == "c3"
    with np.load(os.path.join(d, "inputs.npz")) as z, np.load(os.path.join(d, "expected.npz")) as e:
        inputs = {"rgb": torch.from_numpy(z["rgb"]).permute(0, 1, 4, 2, 3),
                  "spectrogram": torch.from_numpy(z["spectrogram"]).permute(0, 3, 1, 2)}
        with torch.no_grad():
            np.testing.assert_allclose(model(inputs).logits.numpy(), e["logits"], atol=1e-4)


def test_convert_cli_reads_the_vggsound_class_list_as_training_does(tmp_path):
    d = os.path.join(ASSETS, "parity", "b_token_bottleneck")
    with open(os.path.join(d, "config.json")) as f:
        (tmp_path / "model.json").write_text(json.dumps(json.load(f)["mbt_kwargs"]))
    with open(os.path.join(ASSETS, "annotations", "vggsound", "stat_hche11.csv")) as f:
        (tmp_path / "stat.csv").write_text("".join(f.readlines()[:7]))  # headerless: name,count,group
    out = tmp_path / "converted"
    rc = main(["convert", "scenic", os.path.join(d, "scenic_checkpoint_legacy", "checkpoint_5000"),
               "--config", str(tmp_path / "model.json"), "--out", str(out), "--labels", str(tmp_path / "stat.csv")])
    assert rc == 0
    names = mbt.MBT.from_pretrained(out).config.label_names
    assert names[:3] == ("ambulance siren", "basketball bounce", "bird chirping, tweeting")


def test_not_a_model_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an mbt model folder"):
        mbt.MBT.from_pretrained(tmp_path)


def _fixture_scenic_config(tmp_path, dataset_configs=None):
    with open(os.path.join(ASSETS, "parity", "b_token_bottleneck", "config.json")) as f:
        model = json.load(f)["mbt_kwargs"]
    if dataset_configs is None:  # a YAML dump of config.model alone
        path = tmp_path / "scenic_model.yaml"
        path.write_text(yaml.safe_dump({"model": model}))
        return path
    path = tmp_path / "scenic_config.json"
    path.write_text(json.dumps({"model": model, "dataset_configs": dataset_configs}))
    return path


@pytest.mark.parametrize("with_dataset_configs", [True, False], ids=["dataset_configs", "model_only"])
def test_converted_checkpoint_predicts_on_a_real_video_without_flags(tmp_path, capsys, with_dataset_configs):
    """A converted official checkpoint is a complete model: its folder carries the data config
    (so `mbt predict` gives inputs of the model's token counts) and the front-end note."""
    dataset_configs = {"num_frames": 4, "stride": 2, "crop_size": 32, "min_resize": 36, "spec_shape": [20, 16],
                       "num_spec_frames": 2, "spec_mean": 1.102, "spec_stddev": 2.762, "zero_centering": True,
                       "num_test_clips": 2}
    config = _fixture_scenic_config(tmp_path, dataset_configs if with_dataset_configs else None)
    out = tmp_path / "converted"
    checkpoint = os.path.join(ASSETS, "parity", "b_token_bottleneck", "scenic_checkpoint", "checkpoint_5000")
    assert main(["convert", "scenic", checkpoint, "--config", str(config), "--out", str(out)]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert {"known", "ours", "consequence"} <= set(saved["frontend"])
    data = saved["data"]
    if with_dataset_configs:
        assert (data["num_frames"], data["frame_rate"], data["image_size"], data["min_resize"]) == (4, 12.5, 32, 36)
        assert (data["audio_seconds"], data["hop_ms"], data["num_mel_bins"]) == (2.0, 50.0, 16)
        assert (data["spec_mean"], data["spec_std"], data["num_test_clips"]) == (1.102, 2.762, 2)
    else:  # the released config's recipe, sized to the model's 4 x 32 x 32 frames and 40 x 16 spectrogram
        assert (data["num_frames"], data["frame_rate"], data["image_size"]) == (4, 12.5, 32)
        assert (data["audio_seconds"], data["hop_ms"], data["num_mel_bins"]) == (0.4, 10.0, 16)
        assert data["num_test_clips"] == 4
    capsys.readouterr()
    video = os.path.join(ASSETS, "media", "mmaction2_test_mpeg4_mp3.avi")
    assert main(["predict", video, "--model", str(out), "--json"]) == 0
    pred = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(pred["top"]) == 5 and pred["modalities"] == ["spectrogram", "rgb"]


def test_official_32_frame_layout_builds_the_released_data_config(tmp_path):
    """The released layout: 32 frames at stride 2 of 25 fps, 2x16x16 tubelets (16 x 4 tokens at
    32 px), 8 s x 128 bins of spectrogram, 4 test clips; the time mask stays off (ratio 0)."""
    from mbt.weights.scenic import RELEASED_DATASET_CONFIGS, data_config_from_scenic, scenic_input_shapes

    cfg = tiny_config(temporal_encoding="3d_conv", tubelet_size=2, patch_size=(16, 16), num_frames=32,
                      image_size=(32, 32), spectrogram_size=(800, 128))
    model = mbt.MBT(cfg)
    params = mbt.to_scenic(model)
    dataset_configs = {**RELEASED_DATASET_CONFIGS, "crop_size": 32, "min_resize": 36}
    shapes = scenic_input_shapes(scenic_model_config(cfg), dataset_configs)
    assert shapes == {"rgb": (32, 32, 32), "spectrogram": (800, 128)}
    converted = mbt.from_scenic(params, scenic_model_config(cfg), input_shapes=shapes)
    assert converted.config.num_patches("rgb") == 16 * 4
    data = data_config_from_scenic(converted.config, dataset_configs)
    assert (data.num_frames, data.frame_rate, data.clip_seconds) == (32, 12.5, 2.56)
    assert (data.num_spectrogram_frames, data.num_mel_bins, data.spec_mean, data.spec_std) == (800, 128, 1.102, 2.762)
    assert (data.num_test_clips, data.freq_mask_count, data.time_mask_count) == (4, 1, 0)
    with pytest.raises(ScenicFormatError, match="zero_centering"):
        data_config_from_scenic(converted.config, {**dataset_configs, "zero_centering": False})
    converted.save_pretrained(tmp_path / "m32", data_config=data)
    from mbt.inference import Predictor

    pred = Predictor(tmp_path / "m32").predict(os.path.join(ASSETS, "media", "mmaction2_test_mpeg4_mp3.avi"), 3)
    assert pred.num_clips >= 4 and len(pred.top) == 3


@pytest.mark.parametrize("damage", ["overwritten", "truncated"])
def test_damaged_weights_are_refused_with_the_file_named(tmp_path, damage):
    mbt.MBT(tiny_config()).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    if damage == "overwritten":
        data[len(data) // 2 : len(data) // 2 + 4096] = b"\x7f" * 4096  # still a well-formed safetensors file
    else:
        data = data[: len(data) // 2]
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"model\.safetensors: sha256 differs from the one in config\.json"):
        mbt.MBT.from_pretrained(tmp_path)


def test_weights_saved_without_a_checksum_load_with_a_warning(tmp_path):
    model = randomize(mbt.MBT(tiny_config()))
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["weights_sha256"]  # a folder written before the checksum existed
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.warns(UserWarning, match=r"model\.safetensors: no weights_sha256"):
        loaded = mbt.MBT.from_pretrained(tmp_path)
    pairs = zip(model.state_dict().values(), loaded.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])  # truncated, nothing to check it against
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"model\.safetensors: not a readable safetensors"):
        mbt.MBT.from_pretrained(tmp_path)


def test_predict_with_damaged_weights_exits_1_naming_the_file(tmp_path, capsys):
    from mbt.train.loop import train

    from .tiny_experiment import tiny_config as tiny_experiment

    train(tiny_experiment("train.epochs=1"), tmp_path / "run", progress=False)
    folder = tmp_path / "run" / "final"  # a trained model with its data config: predicts on the video
    video = os.path.join(ASSETS, "media", "mmaction2_test_mpeg4_mp3.avi")
    assert main(["predict", video, "--model", str(folder), "--json"]) == 0
    weights = folder / "model.safetensors"
    good = weights.read_bytes()
    mid = len(good) // 2
    weights.write_bytes(good[:mid] + b"\xff" * 4096 + good[mid + 4096:])
    capsys.readouterr()
    assert main(["predict", video, "--model", str(folder), "--json"]) == 1
    assert f"{weights}: sha256 differs from the one in config.json" in capsys.readouterr().err
