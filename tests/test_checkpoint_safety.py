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
