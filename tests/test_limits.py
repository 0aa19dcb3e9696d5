"""Every size a config, a command line or a file sets is bounded (checked before anything is
allocated, the error naming the field and the limit); YAML alias bombs; malformed config.json
fields, int8 weights and unverified weights; FIFOs given as inputs."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import mbt
from mbt.cli import main
from mbt.data.annotations import AnnotationError, load_annotations
from mbt.data.config import DataConfig
from mbt.data.decode import DecodeError, read_clip
from mbt.data.loader import worker_count
from mbt.demo.run import _demo_data, _demo_model
from mbt.io import MAX_YAML_NODES, load_yaml
from mbt.models.config import ConfigError, MBTConfig
from mbt.train.config import ExperimentConfig

from .conftest import randomize, tamper_weights
from .test_nonfinite import _tone, float_wav


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    randomize(mbt.MBT(_demo_model()), seed=1).save_pretrained(out, data_config=_demo_data())
    return out


def _edit(model_dir: Path, tmp_path: Path, section: str | None, key: str, value) -> Path:
    folder = tmp_path / "m"
    shutil.copytree(model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (config[section] if section else config)[key] = value
    (folder / "config.json").write_text(json.dumps(config))
    return folder


# ---------------------------------------------------------------------- sizes
@pytest.mark.parametrize(("section", "key", "value", "message"), [
    ("model", "num_layers", 10**9, r"num_layers: must be an integer in \[1, 256\], got 1000000000"),
    ("model", "num_layers", 1e9, r"num_layers: expected an integer, got 1000000000\.0"),
    ("model", "hidden_size", 10**6, r"hidden_size: must be an integer in \[1, 16384\]"),
    ("model", "mlp_dim", 10**8, r"mlp_dim: must be an integer in \[1, 65536\]"),
    ("model", "num_heads", 10**4, r"num_heads: must be an integer in \[1, 256\]"),
    ("model", "num_bottlenecks", 10**7, r"num_bottlenecks: must be an integer in \[0, 1024\]"),
    ("model", "num_frames", 10**9, r"num_frames: must be an integer in \[1, 1024\]"),
    ("model", "image_size", [10**6, 10**6], r"image_size: must be an integer in \[1, 4096\]"),
    ("model", "spectrogram_size", [10**9, 128], r"spectrogram_size: must be an integer in \[1, 60000\]"),
    ("model", "representation_size", 10**8, r"representation_size: must be an integer in \[1, 16384\]"),
    ("data", "num_frames", 10**9, r"num_frames: must be an integer in \[1, 1024\]"),
    ("data", "audio_seconds", 1e9, r"audio_seconds: must be a finite number in \[0, 600\]"),
    ("data", "num_test_clips", 10**7, r"num_test_clips: must be an integer in \[1, 1024\]"),
    ("data", "image_size", 10**6, r"image_size: must be an integer in \[1, 4096\]"),
    ("format_version", None, "1", r"format_version: expected an integer, got '1'"),
    ("weights_sha256", None, 12, r"weights_sha256: expected 64 hexadecimal digits"),
    ("model", "dropout_rate", "high", r"dropout_rate: expected a number, got 'high'"),
])
def test_sizes_and_fields_of_a_saved_model_are_checked_before_anything_is_built(model_dir, tmp_path, section, key,
                                                                                 value, message):
    if key is None:
        section, key = None, section
    folder = _edit(model_dir, tmp_path, section, key, value)
    with pytest.raises(ValueError, match=message) as e:  # refused by the config, before a tensor is sized by it
        mbt.Predictor(folder)
    assert f"{folder / 'config.json'}: " in str(e.value)


@pytest.mark.parametrize(("override", "message"), [
    ("train.num_workers=100000", r"train\.num_workers: must be an integer in \[0, 256\], got 100000"),
    ("train.batch_size=1000000000", r"train\.batch_size: must be an integer in \[1, 65536\]"),
    ("train.eval_batch_size=0", r"train\.eval_batch_size: must be an integer in \[1, 65536\]"),
    ("model.num_layers=1000000000", r"model\.num_layers: must be an integer in \[1, 256\]"),
    ("data.audio_seconds=1000000000.0", r"data\.audio_seconds: must be a finite number in \[0, 600\]"),
    ("dataset.shuffle_buffer=1000000000", r"dataset\.shuffle_buffer: must be an integer in \[0, 1e\+06\]"),
])
def test_sizes_set_on_the_command_line_are_bounded(override, message):
    with pytest.raises(ConfigError, match=message):
        ExperimentConfig().override([override])


def test_workers_are_capped_to_the_machine_with_a_warning():
    cpus = len(os.sched_getaffinity(0))
    with pytest.warns(UserWarning, match=rf"num_workers=100000 is more than 4 per CPU of this machine \({cpus} CPUs\): "
                                         rf"using {4 * cpus}"):
        assert worker_count(100000) == 4 * cpus
    assert worker_count(4 * cpus) == 4 * cpus and worker_count(0) == 0
    with pytest.raises(ValueError, match="num_workers"):
        worker_count(-1)


def test_data_config_fields_are_bounded_where_they_are_defined():
    with pytest.raises(ConfigError, match=r"sample_rate: must be an integer in \[1000, 384000\]"):
        DataConfig(sample_rate=10**9)
    with pytest.raises(ConfigError, match=r"color_drop_prob: must be a finite number in \[0, 1\]"):
        DataConfig(color_drop_prob=2.0)
    with pytest.raises(ConfigError, match=r"patch tokens, more than the limit of 65536"):
        MBTConfig(image_size=(4096, 4096), patch_size=(4, 4), modalities=("rgb",))


def test_predict_clips_and_topk_are_bounded(model_dir, tmp_path, capsys):
    wav = float_wav(tmp_path / "a.wav", _tone())
    assert main(["predict", wav, "--model", str(model_dir), "--clips", "1000000"]) != 0
    assert "clips: must be an integer in [1, 256], got 1000000" in capsys.readouterr().err
    for k in ("-1", "0", "999"):
        assert main(["predict", wav, "--model", str(model_dir), "--topk", k]) != 0
        assert f"topk: must be an integer in [1, {_demo_model().num_classes}], got {k}" in capsys.readouterr().err
    assert main(["predict", wav, "--model", str(model_dir), "--topk", str(_demo_model().num_classes)]) == 0


# ---------------------------------------------------------------------- YAML
def _bomb(levels: int = 9) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    return "\n".join(lines)


@pytest.mark.parametrize("where", ["model:\n  extra:\n", "dataset:\n  train:\n"])
def test_a_yaml_alias_bomb_in_a_config_is_refused_quickly_naming_the_file(tmp_path, where):
    path = tmp_path / "bomb.yaml"
    path.write_text(where + "\n".join("    " + line for line in _bomb().splitlines()) + "\n")
    with pytest.raises(ConfigError, match=rf"bomb\.yaml: the YAML's aliases \(\*name\) expand it to more than "
                                          rf"{MAX_YAML_NODES} values") as e:  # counted on the nodes, never expanded
        ExperimentConfig.load(path)
    assert len(str(e.value)) < 500


def test_yaml_aliases_within_the_bound_still_work_and_recursion_is_refused(tmp_path):
    assert load_yaml("x: &v {k: 1}\ny: *v", "f.yaml") == {"x": {"k": 1}, "y": {"k": 1}}
    with pytest.raises(ValueError, match="f.yaml: a YAML alias refers to a node that contains it"):
        load_yaml("&a [*a]", "f.yaml")
    with pytest.raises(ValueError, match=r"model\.extra: the YAML's aliases"):
        ExperimentConfig().override(["model.extra={" + ", ".join(_bomb(7).splitlines()) + "}"])


def test_an_error_quoting_a_huge_value_stays_short(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("dataset:\n  root:\n" + "".join(f"    k{i}: {i}\n" for i in range(2000)))
    with pytest.raises(ConfigError, match=r"dataset\.root: expected a string, got \{'k0': 0") as e:
        ExperimentConfig.load(path)
    assert len(str(e.value)) < 700


# ---------------------------------------------------------------------- weights
def test_an_int8_tensor_is_not_cast_into_a_float_parameter(model_dir, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(model_dir, folder)
    tamper_weights(folder, lambda s: s.update({"head.weight": (s["head.weight"] * 100).to(torch.int8)}))
    with pytest.raises(ValueError, match=r"model\.safetensors: head\.weight: stored as torch\.int8, but the "
                                         r"parameter is torch\.float32"):
        mbt.MBT.from_pretrained(folder)


def test_half_precision_weights_still_load_into_float_parameters(model_dir, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(model_dir, folder)
    tamper_weights(folder, lambda s: s.update({k: v.to(torch.bfloat16) for k, v in s.items() if v.is_floating_point()}))
    model = mbt.MBT.from_pretrained(folder)
    assert model.head.weight.dtype == torch.float32


def test_weights_without_a_checksum_are_refused_by_export_and_hub_unless_allowed(model_dir, tmp_path, capsys):
    from mbt.export import export_model, export_pretrained
    from mbt.models.hub import push_to_hub

    folder = _edit(model_dir, tmp_path, None, "format", "mbt")
    config = json.loads((folder / "config.json").read_text())
    del config["weights_sha256"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"no weights_sha256 in config\.json.*--allow-unverified"):
        export_pretrained(folder, tmp_path / "m.onnx")
    assert main(["export", "--model", str(folder), "--out", str(tmp_path / "m.onnx")]) != 0
    assert "no weights_sha256" in capsys.readouterr().err and not (tmp_path / "m.onnx").exists()
    with pytest.warns(UserWarning, match="no weights_sha256"):
        model = mbt.MBT.from_pretrained(folder)  # loading alone still works, with a warning
    assert not model.weights_verified
    with pytest.raises(ValueError, match="not exported"):
        export_model(model, tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="allow_unverified=True"):
        push_to_hub(model, "org/name")
    assert mbt.MBT.from_pretrained(model_dir).weights_verified


# ---------------------------------------------------------------------- FIFOs
def test_a_fifo_is_not_a_regular_file_and_is_never_opened(model_dir, tmp_path, capsys):
    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)  # opening it for reading would block until something writes
    with pytest.raises(DecodeError, match=r"clip\.mp4: not a regular file \(a FIFO \(named pipe\)\)"):
        read_clip(fifo, [0.0], 0.0, 1.0)
    assert main(["predict", str(fifo), "--model", str(model_dir)]) == 1
    assert "not a regular file" in capsys.readouterr().err
    csv = tmp_path / "train.csv"
    os.mkfifo(csv)
    with pytest.raises(AnnotationError, match=r"train\.csv: not a regular file"):
        load_annotations("csv", [csv])
    config = tmp_path / "exp.yaml"
    os.mkfifo(config)
    with pytest.raises(ConfigError, match=r"exp\.yaml: not a regular file"):
        ExperimentConfig.load(config)
    assert np.isfinite(_tone()).all()


def test_a_fifo_in_a_class_folder_is_a_bad_row_not_an_item(tmp_path):
    """A folder data set: a FIFO named like media is a bad row naming it (counted with skip_bad),
    never an item whose decoding would block."""
    for name in ("dog", "rain"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "a.mp4").write_bytes(b"")  # regular (content is the decoder's business)
    os.mkfifo(tmp_path / "dog" / "pipe.mp4")
    with pytest.raises(AnnotationError, match=r"pipe\.mp4.*not a regular file \(a FIFO"):
        load_annotations("folder", [tmp_path])
    ann = load_annotations("folder", [tmp_path], skip_bad=True)
    assert sorted(Path(i.path).name for i in ann.items) == ["a.mp4", "a.mp4"]
    assert len(ann.problems) == 1 and "pipe.mp4" in str(ann.problems[0])


def test_timeline_windows_and_embedding_batches_are_bounded(model_dir, tmp_path):
    from mbt.data.annotations import Annotations, Item
    from mbt.embed_dataset import embed_dataset
    from mbt.timeline import window_starts

    with pytest.raises(ConfigError, match=r"window: must be a finite number in \[0\.001, 600\], got 1000000000\.0"):
        window_starts(10.0, 1e9, 1.0)
    with pytest.raises(ConfigError, match=r"hop: must be a finite number in \[0\.01, inf\], got 1e-09"):
        window_starts(3600.0, 2.0, 1e-9)  # 3.6e12 windows
    ann = Annotations([Item(float_wav(tmp_path / "a.wav", _tone()), (0,), video_id="a")], ["x"])
    with pytest.raises(ConfigError, match=r"batch_size: must be an integer in \[1, 65536\], got 1000000000"):
        embed_dataset(model_dir, ann, tmp_path / "emb", batch_size=10**9)
