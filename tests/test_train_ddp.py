"""Two CPU processes (torchrun, gloo) train like one process on the same global batches.

What is equal by construction: the data order (every rank takes its share of the same
global batch), the averaged gradient (equal per-rank batches), clipping of the averaged
gradient (`clip_per_replica=False`), the evaluation (sharded without padding, logits
gathered). What is not: per-process mixup lambdas and stochastic-depth masks, which are
drawn per process as the official code draws them per device; they are off here.
"""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from .tiny_experiment import MBT, subprocess_env, tiny_config, train_losses, write_config

pytestmark = pytest.mark.slow  # torchrun


def test_two_process_ddp_matches_one_process(tmp_path):
    cfg = tiny_config("train.mixup_alpha=0", "model.stochastic_depth=0", "train.max_grad_norm=1.0",
                      "train.epochs=3", "train.eval_every=4")
    config = write_config(cfg, tmp_path / "cfg.yaml")
    one = subprocess.run([*MBT, "train", "--config", str(config), "--run-dir", str(tmp_path / "one"),
                          "--no-progress"], env=subprocess_env(), capture_output=True, text=True, timeout=180)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "mbt.cli",
         "train", "--config", str(config), "--run-dir", str(tmp_path / "two"), "--no-progress"],
        env=subprocess_env(), capture_output=True, text=True, timeout=180,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    log = (tmp_path / "two/log.txt").read_text()
    assert "global batch 8 = 2 processes x 1 accumulation x 4" in log
    a, b = load_file(tmp_path / "one/final/model.safetensors"), load_file(tmp_path / "two/final/model.safetensors")
    assert a["head.weight"].abs().sum() > 0  # it trained (the head starts at zero)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), (k, (a[k] - b[k]).abs().max())
    r1, r2 = (json.loads((tmp_path / p / "results.json").read_text()) for p in ("one", "two"))
    assert r2["test"]["num_examples"] == r1["test"]["num_examples"] == 32
    assert r2["test"]["num_views"] == 64
    for k in ("mAP", "AUC", "prec@1", "loss"):
        assert abs(r1["test"][k] - r2["test"][k]) < 1e-4, k
        assert abs(r1["val"][k] - r2["val"][k]) < 1e-4, k
    losses = [train_losses(tmp_path / p) for p in ("one", "two")]
    assert len(losses[0]) == 3 and all(abs(x - y) < 1e-4 for x, y in zip(*losses, strict=True))


def test_ddp_trains_when_stochastic_depth_drops_a_branch_for_a_whole_batch(tmp_path):
    """Droplayer skips the compute of dropped branches; a branch that every example of a
    process drops still gives its parameters (zero) gradients, as DDP's reducer requires."""
    cfg = tiny_config("model.stochastic_depth=0.9", "train.epochs=2", "train.eval_every=0")
    config = write_config(cfg, tmp_path / "cfg.yaml")
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "mbt.cli",
         "train", "--config", str(config), "--run-dir", str(tmp_path / "two"), "--no-progress"],
        env=subprocess_env(), capture_output=True, text=True, timeout=180,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert json.loads((tmp_path / "two/results.json").read_text())["steps"] == 8


def test_ddp_trains_with_modality_dropout(tmp_path):
    """A batch that leaves a tower out leaves its parameters unused: DDP is told to expect
    that, and every process draws the same modality to leave out."""
    cfg = tiny_config("train.modality_dropout=0.7", "train.epochs=2", "train.eval_every=0")
    config = write_config(cfg, tmp_path / "cfg.yaml")
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "mbt.cli",
         "train", "--config", str(config), "--run-dir", str(tmp_path / "two"), "--no-progress"],
        env=subprocess_env(), capture_output=True, text=True, timeout=180,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert json.loads((tmp_path / "two/results.json").read_text())["steps"] == 8
