"""Crash safety: a SIGKILLed run resumes to exactly the weights of an uninterrupted run, and a
checkpoint write never leaves a corrupt latest checkpoint."""

import json
import signal
import subprocess
import time

import pytest
import torch
from safetensors.torch import load_file

from mbt.train.checkpoint import load_checkpoint, save_checkpoint

from .tiny_experiment import MBT, subprocess_env, tiny_config, write_config

STEPS = 100  # 25 epochs of 4 steps


def _config(tmp_path):
    # mixup, stochastic depth, label smoothing and a loader worker stay on: the resumed run
    # must restore every random state and the data position, not just the weights
    cfg = tiny_config("train.epochs=25", "train.checkpoint_every=4", "model.stochastic_depth=0.2",
                      "train.num_workers=1", "train.log_every=10")
    return write_config(cfg, tmp_path / "cfg.yaml")


def _train(*args):
    return subprocess.run([*MBT, "train", *args, "--no-progress"], env=subprocess_env(), capture_output=True,
                          text=True, timeout=180)


@pytest.mark.slow  # three training runs in subprocesses
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
    config = _config(tmp_path)
    done = _train("--config", str(config), "--run-dir", str(tmp_path / "full"))
    assert done.returncode == 0, done.stderr[-2000:]

    run = tmp_path / "killed"
    proc = subprocess.Popen([*MBT, "train", "--config", str(config), "--run-dir", str(run), "--no-progress"],
                            env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    latest = run / "checkpoints" / "latest.pt"
    deadline = time.monotonic() + 120
    while not latest.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    step = load_checkpoint(latest)["step"]
    assert 4 <= step < STEPS and not (run / "final").exists(), "the kill must land mid-run"
    (latest.parent / ".latest.pt.999.tmp").write_bytes(b"half a checkpoint")  # as if killed mid-write

    resumed = _train("--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed from {latest} at step {step} of {STEPS}" in (run / "log.txt").read_text()
    assert not (latest.parent / ".latest.pt.999.tmp").exists()
    a, b = load_file(tmp_path / "full/final/model.safetensors"), load_file(run / "final/model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    full, again = (json.loads((p / "results.json").read_text()) for p in (tmp_path / "full", run))
    assert full["test"] == again["test"]


def test_checkpoint_write_is_atomic(tmp_path):
    path = tmp_path / "latest.pt"
    save_checkpoint({"step": 1, "model": {}, "w": torch.ones(3)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom mid-write")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint({"step": 2, "model": {}, "w": torch.zeros(1000), "bad": Unpicklable()}, path)
    state = load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="latest.pt: no checksum trailer"):
        load_checkpoint(path)
