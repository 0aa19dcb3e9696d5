"""Export a saved model for serving: ONNX (onnxruntime, TensorRT...) or a `torch.export`
program (`.pt2`). Inputs are named after the modalities (`rgb` [B, T, 3, H, W], `spectrogram`
[B, T, F]), in the order of `config.modalities`; the output is `logits` [B, num_classes]; the
batch size is dynamic.

The model's CPU inference kernels (oneDNN calls, chunked bf16 attention, mbt.models.mbt) are
switched off while exporting (`torch.backends.mkldnn.flags(enabled=False)`), so the graph holds
the plain ops every runtime knows. ONNX goes through the exporter torch itself defaults to:
from torch 2.9 the `torch.export`-based one (it needs `onnxscript`: `pip install 'mbt[onnx]'`;
the TorchScript exporter is deprecated there, to be removed), before that the TorchScript one.
Both write the same graph inputs, output and dynamic batch, at opset 18.
"""

from __future__ import annotations

import os
import warnings

import torch
from torch import Tensor, nn

from ._lazy import callable_module
from .models.mbt import MBT

FORMATS = ("onnx", "pt2")
ONNX_OPSET = 18


class LogitsModule(nn.Module):
    """MBT with positional inputs (the modalities, in config order) and the logits as output."""

    def __init__(self, model: MBT) -> None:
        super().__init__()
        self.model = model
        self.modalities = tuple(model.config.modalities)

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.model(dict(zip(self.modalities, inputs, strict=True))).logits


def example_inputs(model: MBT, batch: int = 2) -> tuple[Tensor, ...]:
    """Zero inputs of the model's shapes, in the order `LogitsModule` takes them."""
    cfg = model.config
    shapes = {"rgb": (batch, cfg.num_frames, 3, *cfg.image_size), "spectrogram": (batch, *cfg.spectrogram_size)}
    return tuple(torch.zeros(shapes[m]) for m in cfg.modalities)


EXTENSIONS = {".onnx": "onnx", ".pt2": "pt2"}
"""The file extension of each export format."""


def export_format(out: str | os.PathLike, format: str | None = None) -> str:
    """The format to write `out` in: `format`, else the one its extension names. The extension
    must be that format's: a `.tflite` (or any other) file is refused rather than written as ONNX."""
    ext = os.path.splitext(os.fspath(out))[1].lower()
    known = ", ".join(f"{e} ({f})" for e, f in EXTENSIONS.items())
    if format is not None and format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; known: {list(FORMATS)}")
    if ext not in EXTENSIONS:
        raise ValueError(f"{os.fspath(out)}: mbt exports {known}, not {ext or 'a file without extension'}; "
                         "convert the ONNX file with that format's own tools")
    if format is not None and EXTENSIONS[ext] != format:
        raise ValueError(f"{os.fspath(out)}: a {ext} file is not {format}; name it *"
                         f"{next(e for e, f in EXTENSIONS.items() if f == format)} or drop the format")
    return EXTENSIONS[ext]


def export_model(model: MBT, out: str | os.PathLike, format: str | None = None, *,
                 allow_unverified: bool = False) -> str:
    """Write `model` (eval mode, CPU, float32) to `out` as ONNX or a `torch.export` program
    (`format`, else from the extension of `out`: .onnx, .pt2). A model loaded without a
    `weights_sha256` to verify its weights is refused unless `allow_unverified`."""
    format = export_format(out, format)
    if not model.weights_verified and not allow_unverified:
        raise ValueError(f"{out}: not exported: the model's weights were loaded without a weights_sha256 to verify "
                         "them (--allow-unverified exports them anyway)")
    out = os.fspath(out)
    module = LogitsModule(model.cpu().float()).eval()
    inputs = example_inputs(model)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the input shape checks, constant here
        warnings.filterwarnings("ignore", "TF32 acceleration on top of oneDNN")  # said by mkldnn.flags
        warnings.filterwarnings("ignore", "# The axis name: batch will not be used")  # one Dim for all inputs
        _export(module, inputs, out, format)
    return out


def _export(module: LogitsModule, inputs: tuple[Tensor, ...], out: str, format: str) -> None:
    names = list(module.modalities)
    batch = torch.export.Dim("batch", min=1, max=1024)
    dynamic_shapes = {"inputs": tuple({0: batch} for _ in names)}
    with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False):
        if format == "pt2":
            torch.export.save(torch.export.export(module, inputs, dynamic_shapes=dynamic_shapes), out)
        elif torch_default_onnx_exporter() == "dynamo":
            try:
                import onnxscript  # noqa: F401
            except ImportError:
                raise RuntimeError(f"ONNX export with torch {torch.__version__} needs onnxscript: "
                                   "pip install 'mbt[onnx]'") from None
            program = torch.onnx.export(module, inputs, input_names=names, output_names=["logits"], dynamo=True,
                                        dynamic_shapes=dynamic_shapes, opset_version=ONNX_OPSET, verbose=False)
            program.save(out)
        else:
            torch.onnx.export(module, inputs, out, input_names=names, output_names=["logits"],
                              dynamic_axes={n: {0: "batch"} for n in [*names, "logits"]}, opset_version=ONNX_OPSET)


def torch_default_onnx_exporter() -> str:
    """'dynamo' from torch 2.9 (its default, and the TorchScript exporter deprecated), else 'torchscript'."""
    major, minor = (int(x) for x in torch.__version__.split(".")[:2])
    return "dynamo" if (major, minor) >= (2, 9) else "torchscript"


def export_pretrained(model_dir: str | os.PathLike, out: str | os.PathLike, format: str | None = None, *,
                      allow_unverified: bool = False) -> str:
    """Export the model saved in `model_dir` (`save_pretrained`'s folder, a run folder or
    `hf-hub:org/name`); the format from the extension of `out` unless given. A folder without
    `weights_sha256` is refused unless `allow_unverified`."""
    from .weights import load_pretrained

    format = export_format(out, format)  # before loading: a wrong name costs nothing
    return export_model(load_pretrained(model_dir, require_checksum=not allow_unverified), out, format,
                        allow_unverified=allow_unverified)


callable_module(__name__, "mbt.api:export")  # mbt.export(model, out): the `mbt export` verb
