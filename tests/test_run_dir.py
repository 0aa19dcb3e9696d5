"""Which weights of a run folder `mbt eval` uses (`mbt.train.run_folder`)."""

import json

import pytest
import torch

from mbt.models.config import ConfigError
from mbt.train.checkpoint import LATEST
from mbt.train.run_folder import resolve_weights, weights_chosen_on


def _model_folder(path, chosen_on=None):
    path.mkdir(parents=True)
    config = {"format": "mbt", "model": {}, **({"weights_chosen_on": chosen_on} if chosen_on else {})}
    (path / "config.json").write_text(json.dumps(config))


def test_best_when_the_run_kept_one_else_final(tmp_path):
    (tmp_path / "config.yaml").write_text("{}")
    _model_folder(tmp_path / "final")
    assert resolve_weights(tmp_path) == ("final", tmp_path / "final")
    assert weights_chosen_on(tmp_path) == "nothing: the final weights of the run"
    _model_folder(tmp_path / "best", chosen_on="val mAP")
    assert resolve_weights(tmp_path) == ("best", tmp_path / "best")
    assert resolve_weights(tmp_path, "final") == ("final", tmp_path / "final")
    assert weights_chosen_on(tmp_path) == "val mAP"


def test_latest_is_the_checkpoint_file_and_missing_weights_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no latest weights"):
        resolve_weights(tmp_path, "latest")
    with pytest.raises(FileNotFoundError, match="no final weights"):
        resolve_weights(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    torch.save({"model": {}}, tmp_path / "checkpoints" / LATEST)
    assert resolve_weights(tmp_path, "latest") == ("latest", tmp_path / "checkpoints" / LATEST)
    with pytest.raises(ConfigError, match="weights: expected one of"):
        resolve_weights(tmp_path, "newest")
