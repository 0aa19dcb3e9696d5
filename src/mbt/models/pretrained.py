"""mbt's own format, as Hugging Face's: a folder with `config.json` and `model.safetensors`.

The model layer owns it (`MBT.save_pretrained` / `MBT.from_pretrained`); the data config
saved beside the model is an opaque section here, typed by `data.config.load_data_config`.
`config.json` records `weights_sha256`, the sha256 of `model.safetensors`; loading verifies it,
so damaged or truncated weights are refused with the file named (folders saved before the
checksum existed still load, with a warning, but `export` and Hub pushes refuse them unless
allowed). Weights of the wrong dtype (int8 into a float parameter) or not finite are refused
naming the key (`check_weights`); a malformed `config.json` field is an error naming the field.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save
from torch import nn

from ..io import atomic_write
from .config import MBTConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1

M = TypeVar("M", bound=nn.Module)


def save_pretrained(model: nn.Module, directory: str | os.PathLike, data_config: Any = None,
                    extra: dict[str, Any] | None = None) -> None:
    """Write the model's config (and, if given, the `DataConfig` its inputs need, and `extra`
    top-level notes such as a converted model's `frontend`) and weights. Files are written
    atomically (`mbt.io.atomic_write`), so a crash never leaves a half-written model."""
    from .. import __version__

    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    weights = save(state, metadata={"format": "pt"})
    sha256 = hashlib.sha256(weights).hexdigest()
    config = {
        "format": "mbt",
        "format_version": FORMAT_VERSION,
        "mbt_version": __version__,
        "model": model.config.to_dict(),
        "data": data_config.to_dict() if data_config is not None else None,
        **(extra or {}),
        "weights_sha256": sha256,
    }
    # weights first, then the config that vouches for them: a crash between the two leaves a
    # mismatch that loading reports, never a half-written file
    atomic_write(os.path.join(directory, WEIGHTS_NAME), weights)
    atomic_write(os.path.join(directory, CONFIG_NAME), (json.dumps(config, indent=2) + "\n").encode())


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The raw `config.json` of a saved model, checked to be one of ours."""
    path = os.path.join(os.fspath(directory), CONFIG_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{directory}: not an mbt model folder (no {CONFIG_NAME})")
    with open(path) as f:
        try:
            config = json.load(f)
        except ValueError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(config, dict) or config.get("format") != "mbt" or not isinstance(config.get("model"), dict):
        raise ValueError(f"{path}: not an mbt config (expected 'format': 'mbt' and a 'model' section)")
    version = config.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"{path}: format_version: expected an integer, got {str(version)[:40]!r}")
    if version > FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {version} is newer than this mbt supports")
    sha = config.get("weights_sha256")
    if sha is not None and not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
        raise ValueError(f"{path}: weights_sha256: expected 64 hexadecimal digits, got {str(sha)[:80]!r}")
    if not isinstance(config.get("data"), (dict, type(None))):
        raise ValueError(f"{path}: data: expected a mapping of DataConfig fields or null")
    return config


def load_model(model_class: type[M], directory: str | os.PathLike, map_location: str | torch.device = "cpu",
               *, require_checksum: bool = False) -> M:
    """The model saved in `directory` (built as `model_class(config)`), weights
    bit-identical to those saved (`check_weights`). A folder without `weights_sha256` loads with
    a warning, or is refused with `require_checksum`; the model's `weights_verified` says which."""
    config = read_config(directory)
    try:
        model_config = MBTConfig.from_dict(config["model"])
    except (ValueError, TypeError) as e:
        raise ValueError(f"{os.path.join(os.fspath(directory), CONFIG_NAME)}: model.{str(e)[:500]}") from e
    model = model_class(model_config)
    weights = os.path.join(os.fspath(directory), WEIGHTS_NAME)
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"{directory}: no {WEIGHTS_NAME}")
    with open(weights, "rb") as f:
        data = f.read()
    expected = config.get("weights_sha256")
    if expected is None and require_checksum:
        raise ValueError(f"{weights}: no weights_sha256 in {CONFIG_NAME}, so the weights cannot be verified; "
                         "save the model again (save_pretrained), or allow unverified weights explicitly "
                         "(--allow-unverified)")
    if expected is None:
        warnings.warn(f"{weights}: no weights_sha256 in {CONFIG_NAME} (saved by an older mbt): not verified",
                      stacklevel=2)
    elif hashlib.sha256(data).hexdigest() != expected:
        raise ValueError(f"{weights}: sha256 differs from the one in {CONFIG_NAME}: the file is damaged or "
                         "truncated")
    try:
        state = {k: v.to(map_location) for k, v in load(data).items()}
    except SafetensorError as e:  # its message does not name the file
        raise ValueError(f"{weights}: not a readable safetensors file ({type(e).__name__}: {e})") from e
    check_weights(state, model.state_dict(), weights)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{weights}: weights do not match the config (missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]})")
    model.weights_verified = expected is not None
    return model.to(map_location).eval()


def check_foreign_weights(state: Mapping[str, Any], source: str) -> None:
    """`ValueError` naming `source` and the key unless every weight tensor of a foreign file (a
    ViT, AST, CAV-MAE or AudioMAE checkpoint) is floating point and finite: their models hold no
    integer weights, so an int8 tensor is quantised (its scales are not in the file) and casting
    it would change every output; a NaN weight makes every output NaN."""
    for key, tensor in state.items():
        if not isinstance(tensor, torch.Tensor) or tensor.ndim == 0:
            continue  # counters and flags, not weights
        if not tensor.is_floating_point():
            raise ValueError(f"{source}: {key}: stored as {tensor.dtype}; weights must be floating point "
                             "(quantised weights need their scales)")
        if not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ValueError(f"{source}: {key}: {bad} of {tensor.numel()} values are NaN or infinite")


def check_weights(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], source: str) -> None:
    """`ValueError` naming `source` and the key unless every tensor of `state` that `expected` (the
    model's own state) also has is of a compatible dtype and finite. Compatible: floating point into
    floating point of any precision (the one cast `load_state_dict` does: a bf16 model loads into
    float32), else the same dtype; an int8 tensor is never cast into a float parameter (quantised
    weights need their scales). NaN or infinite weights would make every output NaN."""
    for key, tensor in state.items():
        target = expected.get(key)
        if target is None:
            continue
        if tensor.dtype != target.dtype and not (tensor.is_floating_point() and target.is_floating_point()):
            raise ValueError(f"{source}: {key}: stored as {tensor.dtype}, but the parameter is {target.dtype}; "
                             "only floating-point weights load into floating-point parameters")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ValueError(f"{source}: {key}: {bad} of {tensor.numel()} values are NaN or infinite")
