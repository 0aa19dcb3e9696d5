"""`train.fsdp`: two CPU processes (torchrun, gloo) with FSDP2-sharded weights train like
one process on the same global batches, write full-weight checkpoints and models, and
resume from their own checkpoint. (Equal by construction as for DDP: data order, averaged
gradient, clipping of the averaged gradient; mixup and stochastic depth are off.)"""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from mbt.models.config import ConfigError
from mbt.train.checkpoint import load_checkpoint
from mbt.train.config import TrainConfig
from mbt.train.run_folder import load_run_weights

from .tiny_experiment import MBT, subprocess_env, tiny_config, train_losses, write_config


def _torchrun(*args):
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "mbt.cli",
         "train", *map(str, args), "--no-progress"],
        env=subprocess_env(), capture_output=True, text=True, timeout=240,
    )


@pytest.mark.slow  # torchrun
def test_two_process_fsdp_matches_one_process_and_resumes(tmp_path):
    cfg = tiny_config("train.mixup_alpha=0", "model.stochastic_depth=0", "train.max_grad_norm=1.0",
                      "train.epochs=3", "train.eval_every=4", "train.grad_accum_steps=2")
    one_cfg = write_config(cfg, tmp_path / "one.yaml")
    one = subprocess.run([*MBT, "train", "--config", str(one_cfg), "--run-dir", str(tmp_path / "one"),
                          "--no-progress"], env=subprocess_env(), capture_output=True, text=True, timeout=180)
    assert one.returncode == 0, one.stderr[-2000:]
    fsdp_cfg = write_config(cfg.override(["train.fsdp=true"]), tmp_path / "fsdp.yaml")
    two = _torchrun("--config", fsdp_cfg, "--run-dir", tmp_path / "two")
    assert two.returncode == 0, two.stderr[-3000:]
    assert "global batch 8 = 2 processes x 2 accumulation x 2" in (tmp_path / "two/log.txt").read_text()

    a, b = load_file(tmp_path / "one/final/model.safetensors"), load_file(tmp_path / "two/final/model.safetensors")
    assert a["head.weight"].abs().sum() > 0  # it trained (the head starts at zero)
    assert a.keys() == b.keys()
    for k in a:  # whole (unsharded) tensors, equal to the one-process run
        assert a[k].shape == b[k].shape, k
        assert torch.allclose(a[k], b[k], atol=1e-5), (k, (a[k] - b[k]).abs().max())
    best = load_file(tmp_path / "two/best/model.safetensors")
    assert best.keys() == a.keys()

    ck = load_checkpoint(tmp_path / "two/checkpoints/latest.pt")
    assert ck["fsdp"] is True and ck["step"] == 12
    assert {"__0_0.distcp", "__1_0.distcp", ".metadata"} <= set(ck["sharded"]["files"])  # a file per process
    _, latest = load_run_weights(tmp_path / "two", "latest", cfg.model)
    for k, v in latest.state_dict().items():  # the shards hold the final weights
        assert torch.equal(v, b[k]), k
    r1, r2 = (json.loads((tmp_path / p / "results.json").read_text()) for p in ("one", "two"))
    for k in ("mAP", "AUC", "loss"):
        assert abs(r1["test"][k] - r2["test"][k]) < 1e-4, k
        assert abs(r1["val"][k] - r2["val"][k]) < 1e-4, k
    losses = [train_losses(tmp_path / p) for p in ("one", "two")]
    assert len(losses[0]) == 3 and all(abs(x - y) < 1e-4 for x, y in zip(*losses, strict=True))

    # resuming loads the sharded model and optimizer state from the full checkpoint
    again = _torchrun("--resume", tmp_path / "two")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from" in (tmp_path / "two/log.txt").read_text()
    r3 = json.loads((tmp_path / "two/results.json").read_text())
    assert abs(r3["test"]["mAP"] - r2["test"]["mAP"]) < 1e-6

    # the shards also load into one process's unsharded model
    alone = subprocess.run([*MBT, "train", "--resume", str(tmp_path / "two"), "--no-progress"],
                           env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert "resuming with 1 processes instead of 2" in (tmp_path / "two/log.txt").read_text()
    assert abs(json.loads((tmp_path / "two/results.json").read_text())["test"]["mAP"] - r2["test"]["mAP"]) < 1e-6


def test_fsdp_refuses_per_replica_clipping():
    with pytest.raises(ConfigError, match="clip_per_replica"):
        TrainConfig(fsdp=True, clip_per_replica=True)
