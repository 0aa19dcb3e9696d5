"""`train.init_from`: the weights a training run starts from, one dispatch for every kind of source.

- an mbt model folder (`save_pretrained`: a converted, released or trained MBT);
- a run folder (it has `config.yaml`): its `best` model, else `final`, else its latest verified
  training checkpoint (`previous.pt` when `latest.pt` is damaged);
- a published AST, CAV-MAE or AudioMAE checkpoint (a Hugging Face AST folder or a `.pth` /
  `.safetensors` file of a known layout: `mbt.weights.peers.init_from_peer`);
- anything else: an ImageNet ViT for both towers (`mbt.weights.vit.init_from_vit`: a timm name,
  or a `.safetensors` / `.pth` / `.npz` file).

An mbt source loads tensor by tensor into the model being trained. Every tensor the model has
must come from the source with the same shape, except: the classifier (`head.*`), re-initialised
when the label space differs (class count, heads or names); position embeddings, resized to
another token grid (clip length, frames, crop) by the ViT initialisation's rule; and parts the
source lacks outside the towers and their embeddings (bottleneck tokens, a head norm), kept as
initialised. The report says what was loaded, what was re-initialised or kept, and which model
and data settings differ from the source's, so a fine-tune on a new label set is one line in
the log.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.config import DataConfig, load_data_config
from ..models.config import MBTConfig
from ..models.mbt import MBT
from ..models.pretrained import CONFIG_NAME, read_config
from ..weights.vit import init_from_vit, resize_grid

ENCODER_PREFIXES = ("towers.", "embeddings.", "pos_embed.", "cls_tokens.", "dist_token")
"""State-dict keys of the towers and their inputs: a source must have every one the model has."""
HEAD_PREFIX = "head."
"""The classifier: its shape follows the label space."""
LABEL_FIELDS = ("num_classes", "class_splits", "split_names", "label_names")
"""Model fields of the label space: said in the report's 'head', not among the differences."""
DATA_FIELDS = ("frontend", "sample_rate", "num_mel_bins", "window_ms", "hop_ms", "target_length", "spec_mean",
               "spec_std", "image_size", "num_frames")
"""Recipe fields whose change alters what the loaded towers see: reported when they differ."""


class InitError(ValueError):
    """A `train.init_from` source that cannot initialise this model; the message names it and why."""


def init_from(model: MBT, source: str | os.PathLike, data: DataConfig | None = None) -> dict[str, Any]:
    """Initialise `model` (in place) from `source` and report what was done. `data`: the run's
    recipe, compared with the one saved with an mbt source."""
    text = os.fspath(source)
    path = Path(text)
    if (path / "config.yaml").is_file():
        return _from_run_folder(model, path, data)
    if _is_mbt_model_folder(path):
        return {"source": f"mbt model folder {path}", **_from_model_folder(model, path, data)}
    from ..weights.peers import init_from_peer, peer_source

    peer = peer_source(path, num_heads=model.config.num_heads)  # .pth files do not record the heads
    if peer is not None:
        return {"source": f"{peer.layout} checkpoint {path}", **init_from_peer(model, peer)}
    if path.is_dir():
        if (path / CONFIG_NAME).is_file():
            read_config(path)  # refuses a config.json that is not mbt's, naming it
        raise InitError(f"{path}: neither an mbt model folder (no {CONFIG_NAME}) nor a run folder (no config.yaml)")
    if not path.exists() and (os.sep in text or path.suffix):
        raise FileNotFoundError(f"{text}: no such file or folder (train.init_from takes an mbt model folder, a run "
                                "folder, an AST / CAV-MAE / AudioMAE checkpoint, a ViT checkpoint file or a timm "
                                "model name)")

    return {"source": f"ImageNet ViT {text}", **init_from_vit(model, text)}


def _is_mbt_model_folder(path: Path) -> bool:
    try:
        read_config(path)
    except (OSError, ValueError):
        return False
    return True


def _from_model_folder(model: MBT, folder: Path, data: DataConfig | None) -> dict[str, Any]:
    """A `save_pretrained` folder, its weights verified against their checksum."""
    source = MBT.from_pretrained(str(folder))
    saved = load_data_config(folder) if read_config(folder).get("data") else None
    return load_mbt_state(model, source.state_dict(), source.config, str(folder), saved, data)


def _from_run_folder(model: MBT, run: Path, data: DataConfig | None) -> dict[str, Any]:
    """The run's best, else final, model; else its newest verified training checkpoint."""
    for which in ("best", "final"):
        if (run / which / CONFIG_NAME).is_file():
            return {"source": f"run folder {run} ({which} weights)", **_from_model_folder(model, run / which, data)}
    from .checkpoint import LATEST, PREVIOUS, load_resume_checkpoint
    from .config import ExperimentConfig

    folder = run / "checkpoints"
    if not ((folder / LATEST).is_file() or (folder / PREVIOUS).is_file()):
        raise InitError(f"{run}: a run folder without weights (no best/, final/ nor checkpoints/{LATEST})")
    state, file = load_resume_checkpoint(folder)  # verified; previous.pt when latest.pt is damaged
    recipe = ExperimentConfig.load(run / "config.yaml")
    return {"source": f"run folder {run} (checkpoint {file.name}, step {state.get('step')})",
            **load_mbt_state(model, state["model"], recipe.model, str(file), recipe.data, data)}


def load_mbt_state(model: MBT, state: dict[str, Tensor], source_config: MBTConfig, where: str,
                   source_data: DataConfig | None = None, data: DataConfig | None = None) -> dict[str, Any]:
    """Load an MBT state dict made for `source_config` into `model` (rules in the module
    docstring); `where` names the source in errors."""
    cfg, target = model.config, model.state_dict()
    config_diff = _differences(source_config.to_dict(), cfg.to_dict(), skip=LABEL_FIELDS)
    same_labels, why = _same_label_space(source_config, cfg)
    missing = [k for k in target if k not in state and k.startswith(ENCODER_PREFIXES)]
    if missing:
        raise InitError(f"{where}: has no {_summary(missing)}, which the model needs"
                        + (f" (the configs differ in {sorted(config_diff)})" if config_diff else ""))
    chosen, fresh, positions = {}, [], {}
    for key, value in target.items():
        if key.startswith(HEAD_PREFIX) and not same_labels:
            continue
        if key not in state:
            fresh.append(key)
            continue
        resized = _resized_positions(key, state[key], value, source_config, cfg)
        if resized is not None:
            m = key.split(".", 1)[1]
            chosen[key] = resized
            positions[m] = [list(source_config.patch_grid(m)), list(cfg.patch_grid(m))]
            continue
        if state[key].shape != value.shape:
            raise InitError(f"{where}: {key} has shape {list(state[key].shape)}, the model needs {list(value.shape)}"
                            + (f" (the configs differ in {sorted(config_diff)})" if config_diff else ""))
        chosen[key] = state[key]
    model.load_state_dict(chosen, strict=False)
    report: dict[str, Any] = {
        "loaded": len(chosen),
        "head": "loaded" if same_labels else f"re-initialised ({why})",
        "kept_as_initialised": _summary(fresh) if fresh else "nothing",
        "unused_from_source": _summary([k for k in state if k not in target]) or "nothing",
    }
    if positions:
        report["positions_resized"] = positions  # {modality: [source grid, model grid]}
    if config_diff:
        report["model_differs"] = config_diff
    if source_data is not None and data is not None:
        data_diff = _differences(source_data.to_dict(), data.to_dict(), keep=DATA_FIELDS)
        if data_diff:
            report["data_differs"] = data_diff
    return report


def _resized_positions(key: str, source: Tensor, target: Tensor, source_config: MBTConfig,
                       cfg: MBTConfig) -> Tensor | None:
    """A modality's position embedding for another token grid (other clip length, frame count or
    crop), by mbt's ViT rule: prefix rows kept, the (time) x (height x width) grid resized
    linearly in time and bilinearly in space with aligned corners. None when `key` is no position
    table, already fits, or the prefix tokens or widths differ (then the shapes are refused)."""
    if not key.startswith("pos_embed.") or source.shape == target.shape:
        return None
    m = key.split(".", 1)[1]
    prefix = cfg.num_prefix_tokens(m)
    (t0, h0, w0), (t1, h1, w1) = source_config.patch_grid(m), cfg.patch_grid(m)
    if (m not in source_config.modalities or source_config.num_prefix_tokens(m) != prefix
            or source.shape[-1] != target.shape[-1] or source.shape[1] != prefix + t0 * h0 * w0
            or target.shape[1] != prefix + t1 * h1 * w1):
        return None
    d = source.shape[-1]
    grid = source[0, prefix:].reshape(t0, h0, w0, d)
    if t0 != t1:
        by_time = grid.reshape(t0, h0 * w0 * d).T.unsqueeze(0).float()  # [1, h*w*D, t]
        grid = F.interpolate(by_time, size=t1, mode="linear", align_corners=True)[0].T.reshape(t1, h0, w0, d)
    grid = torch.stack([resize_grid(frame, (h1, w1)) for frame in grid]).reshape(1, t1 * h1 * w1, d)
    return torch.cat([source[:, :prefix].float(), grid], dim=1).to(target.dtype)


def _same_label_space(source: MBTConfig, cfg: MBTConfig) -> tuple[bool, str]:
    if source.num_classes != cfg.num_classes:
        return False, f"{source.num_classes} classes in the source, {cfg.num_classes} here"
    if source.class_splits != cfg.class_splits:
        return False, f"heads {source.class_splits} in the source, {cfg.class_splits} here"
    if source.label_names and cfg.label_names and source.label_names != cfg.label_names:
        return False, "the same number of classes with other names"
    return True, ""


def _differences(source: dict[str, Any], here: dict[str, Any], skip: tuple[str, ...] = (),
                 keep: tuple[str, ...] | None = None) -> dict[str, list[Any]]:
    """{field: [source value, this run's value]} for the fields that differ."""
    names = keep if keep is not None else sorted(set(source) | set(here))
    return {k: [source.get(k), here.get(k)] for k in names if k not in skip and source.get(k) != here.get(k)}


def _summary(keys: list[str]) -> str:
    """State-dict keys grouped by their first two name parts: 'towers.rgb (24 tensors), head.weight'."""
    groups = Counter(".".join(k.split(".")[:2]) for k in keys)
    return ", ".join(f"{g} ({n} tensors)" if n > 1 else g for g, n in groups.items())
