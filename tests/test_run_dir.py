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


def test_predict_takes_a_run_folder(tmp_path, capsys):
    """`mbt predict --model RUN` (and every --model) finds the run's saved model: best/ when the
    run kept one, else final/; a run folder with neither is an error that says so."""
    import mbt
    from mbt.cli import main
    from mbt.data.config import DataConfig
    from mbt.models.hub import resolve_model_dir

    from .conftest import randomize, tiny_config
    from .synth_media import write_media

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("{}")
    with pytest.raises(FileNotFoundError, match="a run folder without a saved model yet"):
        resolve_model_dir(run)
    cfg = tiny_config(modalities=("rgb",), num_frames=2, image_size=(32, 32), label_names=tuple("abcdefg"))
    torch.manual_seed(0)
    data = DataConfig(num_frames=2, frame_rate=2.0, image_size=32, min_resize=32)
    randomize(mbt.MBT(cfg)).save_pretrained(run / "final", data_config=data)
    assert resolve_model_dir(run) == str(run / "final")
    video = write_media(tmp_path / "v.mp4", num_frames=25, fps=25, size=(32, 32), audio_codec=None)
    assert main(["predict", str(video), "--model", str(run), "--json"]) == 0
    from_run = json.loads(capsys.readouterr().out)
    assert main(["predict", str(video), "--model", str(run / "final"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == from_run
    torch.manual_seed(1)
    randomize(mbt.MBT(cfg)).save_pretrained(run / "best", data_config=data)
    assert resolve_model_dir(run) == str(run / "best")
    assert main(["predict", str(video), "--model", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) != from_run  # the other weights
