"""Hugging Face Hub, offline: `push_to_hub` uploads the save_pretrained folder and a model card
(the upload is captured), and `from_pretrained("hf-hub:...")` reads it back from a hub cache
laid out as huggingface_hub writes it, with HF_HUB_OFFLINE: never the network."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import huggingface_hub  # the test extra installs it: these tests never skip
import huggingface_hub.constants as hub_constants
import pytest
import torch

import mbt
from mbt.data.config import DataConfig

from .conftest import randomize, tiny_config, tiny_inputs

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """Uploads land in a hub cache folder; downloads read that cache offline."""
    cache = tmp_path / "hub-cache"
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    uploads = []

    def create_repo(self, repo_id, **kwargs):
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        repo = cache / f"models--{repo_id.replace('/', '--')}"
        shutil.copytree(folder_path, repo / "snapshots" / COMMIT)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(COMMIT)
        uploads.append((repo_id, sorted(p.name for p in Path(folder_path).iterdir()), kwargs))
        return "commit-info"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    return uploads


def test_push_then_load_from_the_hub(offline_hub):
    model = randomize(mbt.MBT(tiny_config())).eval()
    data = DataConfig()
    assert model.push_to_hub("org/tiny-mbt", data_config=data, metrics={"mAP": 0.443}) == "commit-info"
    (repo_id, files, _), = offline_hub
    assert repo_id == "org/tiny-mbt" and {"README.md", "config.json", "model.safetensors"} <= set(files)

    loaded = mbt.MBT.from_pretrained("hf-hub:org/tiny-mbt")
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    inputs = tiny_inputs(model.config)
    with torch.no_grad():
        assert torch.equal(loaded(inputs).logits, model(inputs).logits)
    assert mbt.data.config.load_data_config("hf-hub:org/tiny-mbt") == data


def test_model_card_has_config_data_recipe_and_metrics(offline_hub):
    model = mbt.MBT(tiny_config())
    model.push_to_hub("org/card", data_config=DataConfig(), metrics={"top-1": 0.5})
    cache = Path(hub_constants.HF_HUB_CACHE)
    card = next(cache.glob("models--org--card/snapshots/*/README.md")).read_text()
    assert card.startswith("---\nlibrary_name: mbt\nlicense: apache-2.0")
    assert "- top-1: 0.5" in card
    assert "from_pretrained('hf-hub:org/card')" in card and f"version {mbt.__version__}" in card
    links = re.findall(r"\]\((\S+?)\)", card)  # no placeholder links (a bare https://github.com/ was one)
    assert links == ["https://arxiv.org/abs/2107.00135"] and "<" not in card.split("## Model config")[0]
    config_json = card.split("## Model config\n\n```json\n")[1].split("```")[0]
    assert json.loads(config_json) == model.config.to_dict()
    assert json.dumps(DataConfig().to_dict(), indent=2, default=str) in card


def test_unknown_repo_offline_is_an_error(offline_hub):
    with pytest.raises(Exception, match="(?i)offline|cache|not found|cannot find"):
        mbt.MBT.from_pretrained("hf-hub:org/never-pushed")
