"""mbt's own format, as Hugging Face's: a folder with `config.json` and `model.safetensors`.

The model layer owns it (`MBT.save_pretrained` / `MBT.from_pretrained`); the data config
saved beside the model is an opaque section here, typed by `data.config.load_data_config`.
`config.json` records `weights_sha256`, the sha256 of `model.safetensors`; loading verifies it,
so damaged or truncated weights are refused with the file named (folders saved before the
checksum existed still load, with a warning).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
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
        config = json.load(f)
    if config.get("format") != "mbt" or "model" not in config:
        raise ValueError(f"{path}: not an mbt config (expected 'format': 'mbt' and a 'model' section)")
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {config['format_version']} is newer than this mbt supports")
    return config


def load_model(model_class: type[M], directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> M:
    """The model saved in `directory` (built as `model_class(config)`), weights
    bit-identical to those saved."""
    config = read_config(directory)
    model = model_class(MBTConfig.from_dict(config["model"]))
    weights = os.path.join(os.fspath(directory), WEIGHTS_NAME)
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"{directory}: no {WEIGHTS_NAME}")
    with open(weights, "rb") as f:
        data = f.read()
    expected = config.get("weights_sha256")
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
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{weights}: weights do not match the config (missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]})")
    return model.to(map_location).eval()
