"""mbt's own format, as Hugging Face's: a folder with `config.json` and `model.safetensors`.

`config.json` records `weights_sha256`, the sha256 of `model.safetensors`; loading verifies it,
so damaged or truncated weights are refused with the file named (folders saved before the
checksum existed still load, with a warning).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import warnings
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save_file

from ..models.config import MBTConfig
from ..models.mbt import MBT

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1


def save_pretrained(model: MBT, directory: str | os.PathLike, data_config: Any = None) -> None:
    """Write the model's config (and, if given, the `DataConfig` its inputs need) and
    weights. Files are written beside and renamed into place, so a crash never leaves a
    half-written model."""
    from .. import __version__

    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    weights_tmp = os.path.join(directory, WEIGHTS_NAME + ".tmp")
    save_file(state, weights_tmp, metadata={"format": "pt"})
    with open(weights_tmp, "rb") as f:
        sha256 = hashlib.sha256(f.read()).hexdigest()
    config = {
        "format": "mbt",
        "format_version": FORMAT_VERSION,
        "mbt_version": __version__,
        "model": model.config.to_dict(),
        "data": data_config.to_dict() if data_config is not None else None,
        "weights_sha256": sha256,
    }
    config_tmp = os.path.join(directory, CONFIG_NAME + ".tmp")
    with open(config_tmp, "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    os.replace(weights_tmp, os.path.join(directory, WEIGHTS_NAME))
    os.replace(config_tmp, os.path.join(directory, CONFIG_NAME))


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


def load_pretrained(directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> MBT:
    """The model saved in `directory`, weights bit-identical to those saved."""
    config = read_config(directory)
    model = MBT(MBTConfig.from_dict(config["model"]))
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


def load_data_config(directory: str | os.PathLike):
    """The `DataConfig` saved with a model, or the defaults if none was saved."""
    from ..data.config import DataConfig

    data = read_config(directory).get("data")
    return DataConfig.from_dict(data) if data else DataConfig()


def read_label_names(path: str | os.PathLike) -> list[str]:
    """Class names from a text file (one per line) or a CSV with a `display_name` or
    `name` column (AudioSet's class_labels_indices.csv, VGGSound's class list)."""
    path = os.fspath(path)
    with open(path, newline="") as f:
        if path.endswith(".csv"):
            rows = list(csv.DictReader(f))
            if not rows:
                raise ValueError(f"{path}: no rows")
            for column in ("display_name", "name", "label", "class"):
                if column in rows[0]:
                    return [row[column] for row in rows]
            raise ValueError(f"{path}: no display_name/name/label/class column in {list(rows[0])}")
        return [line.strip() for line in f if line.strip()]
