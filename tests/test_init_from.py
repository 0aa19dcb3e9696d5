"""`train.init_from` with mbt sources: a model folder, a run folder (best, final or its latest
checkpoint), another class count; and the refusals of missing or damaged sources."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from mbt.data.config import DataConfig
from mbt.models.mbt import MBT
from mbt.train.checkpoint import CheckpointError, load_checkpoint
from mbt.train.distributed import init_distributed
from mbt.train.init_from import InitError, init_from, load_mbt_state
from mbt.train.loop import Trainer, train
from mbt.train.run_folder import RunFolder

from .tiny_experiment import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")

SHORT = ("train.epochs=1", "dataset.synthetic_items=16")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished tiny run with 5 classes: best/, final/ and checkpoints/latest.pt."""
    folder = tmp_path_factory.mktemp("source") / "run"
    train(tiny_config(*SHORT), folder, progress=False)
    return folder


def _trainer(path, *overrides: str) -> Trainer:
    cfg = tiny_config(*SHORT, *overrides)
    return Trainer(cfg, RunFolder(path), init_distributed("cpu"), resume=False, progress=False)


def _encoder(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith("head.")}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_fine_tune_a_run_folder_on_another_label_set(run, tmp_path):
    """The issue's case: `train.init_from=<run>` with 3 classes instead of 5 trains; the towers start
    as the run's best weights, the head is re-initialised and the log says so."""
    best = load_file(run / "best" / "model.safetensors")
    start = _trainer(tmp_path / "start", "model.num_classes=3", f"train.init_from={run}").model.state_dict()
    _assert_same(_encoder(start), _encoder(best))
    assert start["head.weight"].shape == (3, 32) and not start["head.weight"].any()  # MBT's zero head
    assert best["head.weight"].any()

    results = train(tiny_config(*SHORT, "model.num_classes=3", f"train.init_from={run}", "data.frontend=kaldi_fbank"),
                    tmp_path / "ft", progress=False)
    assert results["steps"] == 2
    log = (tmp_path / "ft" / "log.txt").read_text()
    assert f"run folder {run} (best weights)" in log
    assert "'head': 're-initialised (5 classes in the source, 3 here)'" in log
    assert "data differs: {'frontend': ['log_mel', 'kaldi_fbank']}" in log and "model differs" not in log
    saved = json.loads((tmp_path / "ft" / "final" / "config.json").read_text())
    assert saved["model"]["num_classes"] == 3 and saved["data"]["frontend"] == "kaldi_fbank"


def test_an_mbt_model_folder_with_the_same_classes_loads_whole(run, tmp_path):
    final = load_file(run / "final" / "model.safetensors")
    model = _trainer(tmp_path, f"train.init_from={run / 'final'}").model
    _assert_same(model.state_dict(), final)
    assert "mbt model folder" in (tmp_path / "log.txt").read_text()


def test_a_run_without_saved_models_starts_from_its_latest_checkpoint(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "best")
    shutil.rmtree(copy / "final")
    model = MBT(tiny_config(*SHORT, "model.num_classes=4").model)
    report = init_from(model, copy)
    assert report["source"].startswith(f"run folder {copy} (checkpoint latest.pt, step ")
    assert report["head"] == "re-initialised (5 classes in the source, 4 here)"
    assert report["kept_as_initialised"] == "nothing" and report["unused_from_source"] == "nothing"
    saved = load_checkpoint(copy / "checkpoints" / "latest.pt")["model"]
    _assert_same(_encoder(model.state_dict()), _encoder(saved))


def test_the_head_is_reinitialised_when_the_class_names_differ(run):
    source = MBT.from_pretrained(str(run / "final"))
    renamed = source.config.replace(label_names=tuple(f"other{k}" for k in range(5)))
    model = MBT(renamed)
    report = load_mbt_state(model, source.state_dict(), source.config, "src")
    assert report["head"] == "re-initialised (the same number of classes with other names)"
    assert not model.head.weight.any()
    report = load_mbt_state(model, source.state_dict(), source.config, "src", source_data=DataConfig(),
                            data=dataclasses.replace(DataConfig(), spec_mean=-4.27))
    assert report["data_differs"] == {"spec_mean": [-2.37, -4.27]}


def test_missing_and_damaged_sources_are_refused_by_name(run, tmp_path):
    model = MBT(tiny_config().model)
    with pytest.raises(FileNotFoundError, match=r"nope/final: no such file or folder"):
        init_from(model, tmp_path / "nope" / "final")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InitError, match=r"empty: neither an mbt model folder"):
        init_from(model, tmp_path / "empty")

    damaged = tmp_path / "damaged"
    shutil.copytree(run / "final", damaged)
    data = bytearray((damaged / "model.safetensors").read_bytes())
    data[-100] ^= 0xFF
    (damaged / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"damaged/model\.safetensors: sha256 differs .* damaged or truncated"):
        init_from(model, damaged)

    foreign = tmp_path / "hf"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"model_type": "vit"}')
    with pytest.raises(ValueError, match=r"hf/config\.json: not an mbt config"):
        init_from(model, foreign)

    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    shutil.copy(run / "config.yaml", no_weights)
    with pytest.raises(InitError, match=r"no_weights: a run folder without weights \(no best/, final/ nor "
                                        r"checkpoints/latest\.pt\)"):
        init_from(model, no_weights)
    (no_weights / "checkpoints").mkdir()
    (no_weights / "checkpoints" / "latest.pt").write_bytes((run / "checkpoints" / "latest.pt").read_bytes()[:-50])
    with pytest.raises(CheckpointError, match=r"latest\.pt"):
        init_from(model, no_weights)


def test_a_source_of_another_architecture_is_refused_naming_the_tensor(run):
    narrow = MBT(tiny_config("model.hidden_size=16", "model.mlp_dim=32").model)
    with pytest.raises(InitError, match=r"final: bottleneck has shape \[1, 5, 32\], the model needs \[1, 5, 16\] "
                                        r"\(the configs differ in \['hidden_size', 'mlp_dim'\]\)"):
        init_from(narrow, run / "final")
    video_only = MBT(tiny_config("model.modalities=[rgb]", "model.num_classes=2").model)
    report = init_from(video_only, run / "final")  # one tower of a two-tower model
    assert report["unused_from_source"].startswith("bottleneck, embeddings.spectrogram (2 tensors)")
    assert report["model_differs"]["modalities"] == [["spectrogram", "rgb"], ["rgb"]]


def test_positions_follow_another_clip_length_and_frame_count(run):
    """A longer spectrogram and twice the frames: the position grids are resized (corners kept,
    prefix rows as they were), everything else loads as is."""
    source = MBT.from_pretrained(str(run / "final"))
    longer = source.config.replace(spectrogram_size=(48, 16), num_frames=4, n_sampled_frames=4)
    model = MBT(longer)
    report = init_from(model, run / "final")
    assert report["positions_resized"] == {"spectrogram": [[1, 4, 2], [1, 6, 2]], "rgb": [[2, 2, 2], [4, 2, 2]]}
    assert report["kept_as_initialised"] == "nothing" and report["head"] == "loaded"
    old, new = source.pos_embed["spectrogram"][0], model.pos_embed["spectrogram"][0]
    assert new.shape == (1 + 12, 32)
    torch.testing.assert_close(new[0], old[0])  # the cls position
    torch.testing.assert_close(new[1:3], old[1:3])  # first time row
    torch.testing.assert_close(new[-2:], old[-2:])  # last time row
    torch.testing.assert_close(new[3:5], (old[1:3] * 2 + old[3:5] * 3) / 5)  # new row 1 sits at old row 0.6
    old, new = source.pos_embed["rgb"][0], model.pos_embed["rgb"][0]
    torch.testing.assert_close(new[1:5], old[1:5])  # frame 0
    torch.testing.assert_close(new[-4:], old[-4:])  # last frame
    torch.testing.assert_close(new[5:9], (old[1:5] * 2 + old[5:9]) / 3)  # new frame 1 sits at old frame 1/3
