"""Checkpoints: never unpickle code, detect damage, fall back to previous.pt, say when the disk is full."""

import errno
import hashlib
import io
import logging
import os
import random

import numpy as np
import pytest
import torch

from mbt.train import checkpoint
from mbt.train.checkpoint import (
    LATEST,
    PREVIOUS,
    CheckpointError,
    load_checkpoint,
    load_resume_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def _state(step):
    return {"step": step, "model": {"w": torch.full((2048,), float(step))}}


class _WritesMarker:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.save({"model": {}, "x": _WritesMarker(marker)}, buf)
    payload = buf.getvalue()  # a valid checksum: only weights_only loading stops it
    path = tmp_path / "latest.pt"
    path.write_bytes(payload + hashlib.sha256(payload).digest() + checkpoint._MAGIC)
    with pytest.raises(CheckpointError, match="latest.pt: refused"):
        load_checkpoint(path)
    assert not marker.exists()


def test_rng_states_round_trip_through_weights_only_loading(tmp_path):
    mix = np.random.default_rng(3)
    random.random(), np.random.rand(), torch.rand(1), mix.random()
    save_checkpoint({"model": {}, "rng": rng_state(mix)}, tmp_path / "latest.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item(), mix.random())
    set_rng_state(load_checkpoint(tmp_path / "latest.pt")["rng"], mix)
    assert (random.random(), np.random.rand(), torch.rand(1).item(), mix.random()) == expected


def test_damaged_latest_falls_back_to_previous(tmp_path, caplog):
    save_checkpoint(_state(1), tmp_path / "latest.pt")
    save_checkpoint(_state(2), tmp_path / "latest.pt")
    assert load_checkpoint(tmp_path / "previous.pt")["step"] == 1
    latest = tmp_path / "latest.pt"
    with open(latest, "r+b") as f:  # 4 KB overwritten inside the file
        f.seek(os.path.getsize(latest) // 2 - 2048)
        f.write(b"\xff" * 4096)
    with pytest.raises(CheckpointError, match="latest.pt: sha256 mismatch"):
        load_checkpoint(latest)
    with caplog.at_level(logging.WARNING):
        state, used = load_resume_checkpoint(tmp_path)
    assert state["step"] == 1 and used.name == "previous.pt"
    assert "latest.pt: sha256 mismatch" in caplog.text and "previous.pt" in caplog.text

    (tmp_path / "previous.pt").write_bytes((tmp_path / "previous.pt").read_bytes()[:-100])  # truncated
    with pytest.raises(CheckpointError, match="no usable checkpoint.*latest.pt.*previous.pt"):
        load_resume_checkpoint(tmp_path)


def test_checkpoint_without_model_entry_is_named(tmp_path):
    save_checkpoint({"step": 3}, tmp_path / "latest.pt")
    with pytest.raises(CheckpointError, match="latest.pt: no 'model' entry"):
        load_checkpoint(tmp_path / "latest.pt")


@pytest.mark.parametrize("failure", ["oserror", "zipwriter"])
def test_disk_full_keeps_the_previous_checkpoint(tmp_path, monkeypatch, failure):
    path = tmp_path / "latest.pt"
    save_checkpoint(_state(1), path)

    def full_disk(obj, f, *args, **kwargs):
        if failure == "oserror":
            raise OSError(errno.ENOSPC, "No space left on device")
        raise RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError) as e:
        save_checkpoint(_state(2), path)
    assert str(e.value) == f"no space left on device while writing {path}; the previous checkpoint {path} is kept"
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt"]


def test_a_run_resumes_from_previous_when_latest_is_damaged(tmp_path):
    """End to end through the trainer: 4 KB overwritten inside latest.pt; `--resume` falls back
    to previous.pt, says so in the run's log, and finishes with good checkpoints again."""
    from mbt.train.loop import train

    from .tiny_experiment import tiny_config

    cfg = tiny_config("train.checkpoint_every=2", "train.epochs=1")
    assert train(cfg, tmp_path, progress=False)["steps"] == 4
    latest, previous = tmp_path / "checkpoints" / LATEST, tmp_path / "checkpoints" / PREVIOUS
    assert load_checkpoint(latest)["step"] == 4 and load_checkpoint(previous)["step"] == 2
    data = bytearray(latest.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4096] = os.urandom(4096)
    latest.write_bytes(bytes(data))
    assert train(cfg, tmp_path, resume=True, progress=False)["steps"] == 4
    log = (tmp_path / "log.txt").read_text()
    assert f"falling back to the previous checkpoint {previous}" in log and str(latest) in log
    assert load_checkpoint(latest)["step"] == 4


def test_eval_of_a_checkpoint_without_model_entry_exits_1_naming_it(run_folder, capsys):
    from mbt.cli import main

    run = run_folder(damage=lambda state: state.pop("model"))
    assert main(["eval", str(run), "--weights", "latest", "--split", "test", "--no-progress"]) == 1
    assert "no 'model' entry" in capsys.readouterr().err


def test_eval_of_an_undamaged_built_run_folder_gets_past_the_weights(run_folder, capsys):
    """The control of the test above: the folder `run_folder` builds, undamaged, is one `mbt eval`
    evaluates (on the tiny experiment's synthetic test split)."""
    from mbt.cli import main

    run = run_folder()
    code = main(["eval", str(run), "--weights", "latest", "--split", "test", "--no-progress"])
    assert "no 'model' entry" not in capsys.readouterr().err and code == 0
