"""Hugging Face Hub: a thin layer over the folder format (`pretrained.py`). Loading downloads the
repository's snapshot (`huggingface_hub.snapshot_download`, cached, honours `HF_HUB_OFFLINE`)
and reads it as a folder; pushing writes `save_pretrained`'s folder plus a model card into a
temporary folder and uploads it. Needs the `hub` extra (`pip install mbt[hub]`)."""

from __future__ import annotations

import json
import os
import tempfile
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

HUB_PREFIX = "hf-hub:"


def _hub() -> Any:
    try:
        import huggingface_hub
    except ImportError:
        raise ImportError("the Hugging Face Hub needs huggingface_hub: pip install 'mbt[hub]'") from None
    return huggingface_hub


def resolve_model_dir(name: str | os.PathLike) -> str:
    """A local folder for `name`: itself; for a training run folder (`config.yaml`, no
    `config.json`) its saved model, `best/` when the run kept one, else `final/` (as `mbt eval`
    picks); for `hf-hub:org/name[@revision]` the downloaded snapshot."""
    name = os.fspath(name)
    if not name.startswith(HUB_PREFIX):
        if os.path.isfile(os.path.join(name, "config.yaml")) and not os.path.isfile(os.path.join(name, "config.json")):
            for which in ("best", "final"):
                if os.path.isfile(os.path.join(name, which, "config.json")):
                    return os.path.join(name, which)
            raise FileNotFoundError(f"{name}: a run folder without a saved model yet (no best/ or final/); "
                                    "give a model folder, or wait for the run to finish")
        return name
    repo_id, _, revision = name[len(HUB_PREFIX) :].partition("@")
    return _hub().snapshot_download(repo_id, revision=revision or None)


PAPER_URL = "https://arxiv.org/abs/2107.00135"
"""Nagrani et al., "Attention Bottlenecks for Multimodal Fusion", NeurIPS 2021."""


def model_card(model: nn.Module, data_config: Any = None, metrics: dict[str, float] | None = None,
               repo_id: str | None = None) -> str:
    """README.md for the Hub: what the model is, its config, the data recipe and the metrics given;
    the loading snippet names `repo_id`."""
    from .. import __version__

    cfg = model.config
    lines = [
        "---",
        "library_name: mbt",
        "license: apache-2.0",
        "tags: [audio-visual, video-classification, multimodal-bottleneck-transformer]",
        "---",
        "",
        "# MBT: Multimodal Bottleneck Transformer",
        "",
        f"{cfg.fusion} fusion from layer {cfg.fusion_layer} of {cfg.num_layers}, modalities "
        f"{', '.join(cfg.modalities)}, {cfg.num_classes} classes: a Multimodal Bottleneck Transformer "
        f"([Nagrani et al., NeurIPS 2021]({PAPER_URL})) saved by the `mbt` PyTorch library, version {__version__} "
        "(`pip install 'mbt[hub]'`).",
        "",
        "```python",
        "import mbt",
        f"model = mbt.MBT.from_pretrained('hf-hub:{repo_id or 'ORG/NAME'}')",
        "```",
        "",
        "## Metrics",
        "",
        *([f"- {k}: {v}" for k, v in metrics.items()] if metrics else ["Not reported."]),
        "",
        "## Model config",
        "",
        "```json",
        json.dumps(cfg.to_dict(), indent=2, default=str),
        "```",
        "",
        "## Data recipe (input preprocessing)",
        "",
        *(["```json", json.dumps(data_config.to_dict(), indent=2, default=str), "```"] if data_config is not None
          else ["Not recorded (the defaults of `mbt.data.DataConfig`)."]),
        "",
    ]
    return "\n".join(lines)


def push_to_hub(
    model: nn.Module,
    repo_id: str,
    *,
    data_config: Any = None,
    metrics: dict[str, float] | None = None,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload MBT model",
    allow_unverified: bool = False,
) -> Any:
    """Upload `model` (the `save_pretrained` folder and a generated model card) to `repo_id`,
    creating the repository if needed; returns huggingface_hub's commit info. A model loaded
    from a folder without `weights_sha256` is refused unless `allow_unverified`: the upload would
    give its weights a fresh checksum."""
    if not getattr(model, "weights_verified", True) and not allow_unverified:
        raise ValueError(f"{repo_id}: the model's weights were loaded without a weights_sha256 to verify them; "
                         "pass allow_unverified=True to push them anyway")
    api = _hub().HfApi(token=token)
    with tempfile.TemporaryDirectory() as folder:
        from .pretrained import save_pretrained

        save_pretrained(model, folder, data_config)
        with open(os.path.join(folder, "README.md"), "w") as f:
            f.write(model_card(model, data_config, metrics, repo_id))
        api.create_repo(repo_id, private=private, exist_ok=True)
        return api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message)
