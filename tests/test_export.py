"""`mbt export`: the ONNX file in onnxruntime and the torch.export program give PyTorch's logits
at two batch sizes, with both modalities and with one."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import mbt
from mbt.cli import main
from mbt.export import ONNX_OPSET, export_model

from .conftest import randomize, tiny_config, tiny_inputs


def _reference(model: mbt.MBT, inputs: dict[str, torch.Tensor]) -> np.ndarray:
    with torch.no_grad():  # the CPU inference kernels, as a user's predictions run
        return model(inputs).logits.numpy()


@pytest.mark.parametrize("modalities", [("spectrogram", "rgb"), ("rgb",), ("spectrogram",)])
def test_onnx_matches_pytorch(tmp_path, modalities):
    model = randomize(mbt.MBT(tiny_config(modalities=modalities))).eval()
    folder = tmp_path / "model"
    model.save_pretrained(str(folder))
    out = tmp_path / "mbt.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # torch's default exporter, not a deprecated one
        assert main(["export", "--model", str(folder), "--format", "onnx", "--out", str(out)]) == 0
    assert onnx.load(str(out)).opset_import[0].version == ONNX_OPSET
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(modalities)
    assert [i.shape[0] for i in session.get_inputs()] == ["batch"] * len(modalities)
    assert [o.name for o in session.get_outputs()] == ["logits"]
    for batch in (1, 3):
        inputs = tiny_inputs(model.config, batch=batch, seed=batch)
        (got,) = session.run(["logits"], {k: v.numpy() for k, v in inputs.items()})
        assert got.shape == (batch, 7)
        np.testing.assert_allclose(got, _reference(model, inputs), atol=1e-4, rtol=0)


@pytest.mark.parametrize("modalities", [("spectrogram", "rgb"), ("spectrogram",)])
def test_pt2_matches_pytorch(tmp_path, modalities):
    model = randomize(mbt.MBT(tiny_config(modalities=modalities, fusion_layer=1))).eval()
    out = export_model(model, tmp_path / "mbt.pt2", "pt2")
    program = torch.export.load(out).module()
    for batch in (1, 3):
        inputs = tiny_inputs(model.config, batch=batch, seed=batch)
        with torch.no_grad():
            got = program(*(inputs[m] for m in modalities))
        np.testing.assert_allclose(got.numpy(), _reference(model, inputs), atol=1e-4, rtol=0)


def test_unknown_format_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown export format 'tflite'"):
        export_model(mbt.MBT(tiny_config()), tmp_path / "x", "tflite")


def test_onnx_export_of_the_options_for_pretrained_audio_encoders(tmp_path):
    """Overlapping spectrogram patches (a strided convolution), a distillation token, exact
    GELU, per-modality and head norms: the exported graph computes the same logits."""
    cfg = tiny_config(spectrogram_patch_stride=(5, 4), distillation_token=True, gelu="exact", layer_norm_eps=1e-5,
                      modality_norm=True, head_norm=True)
    model = randomize(mbt.MBT(cfg)).eval()
    session = ort.InferenceSession(export_model(model, tmp_path / "mbt.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        inputs = tiny_inputs(cfg, batch=batch, seed=batch)
        (got,) = session.run(["logits"], {k: v.numpy() for k, v in inputs.items()})
        np.testing.assert_allclose(got, _reference(model, inputs), atol=1e-4, rtol=0)


def test_format_follows_the_file_name_and_other_names_are_refused(tmp_path, capsys):
    """`mbt export --out x.tflite` used to write ONNX into x.tflite: now the format comes from the
    extension, and an extension mbt does not write (or one contradicting --format) is refused
    before the model is loaded, naming the file."""
    from mbt.export import export_format

    assert export_format("a/m.onnx") == "onnx" and export_format("m.PT2") == "pt2"
    assert export_format("m.pt2", "pt2") == "pt2"
    folder = tmp_path / "model"
    mbt.MBT(tiny_config()).save_pretrained(str(folder))
    for argv, message in [
        (["--out", str(tmp_path / "x.tflite")], "x.tflite: mbt exports .onnx (onnx), .pt2 (pt2), not .tflite"),
        (["--out", str(tmp_path / "x")], "not a file without extension"),
        (["--format", "onnx", "--out", str(tmp_path / "x.pt2")], "x.pt2: a .pt2 file is not onnx; name it *.onnx"),
    ]:
        assert main(["export", "--model", str(folder), *argv]) == 1
        assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("x*"))
    assert main(["export", "--model", str(folder), "--out", str(tmp_path / "m.pt2")]) == 0  # no --format
    program = torch.export.load(str(tmp_path / "m.pt2")).module()
    assert program is not None
