"""Unattended recovery under torchrun (CPU, gloo): `--resume auto` lets the same command line
start a run or continue it, so `torchrun --max-restarts` restarts a job whose worker was killed
to the same weights as an uninterrupted run; the multi-node command line of docs/scaling.md
(two local "nodes" over c10d); FSDP's per-process checkpoint shards resume at another world size."""

import json
import os
import pickle
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from mbt.train.checkpoint import (
    SHARDED,
    CheckpointError,
    load_checkpoint,
    load_resume_checkpoint,
    read_shards,
    save_checkpoint,
    verify_shards,
    write_shards,
)
from mbt.train.distributed import Dist
from mbt.train.run_folder import load_run_weights

from .tiny_experiment import MBT, subprocess_env, tiny_config, write_config

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_args(config, run):
    return ["-m", "mbt.cli", "train", "--config", str(config), "--run-dir", str(run), "--resume", "auto",
            "--no-progress"]


@pytest.mark.slow
def test_torchrun_restart_after_a_killed_worker_matches_an_uninterrupted_two_node_run(tmp_path):
    # mixup and stochastic depth stay on: the restart must restore every process's random state
    cfg = tiny_config("train.epochs=5", "train.checkpoint_every=4", "model.stochastic_depth=0.2", "train.log_every=5")
    config = write_config(cfg, tmp_path / "cfg.yaml")

    # docs/scaling.md's multi-node command on two local "nodes": c10d rendezvous, no --node_rank
    port = _free_port()
    node = [*TORCHRUN, "--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d",
            f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=mbt-test", *_train_args(config, tmp_path / "nodes")]
    nodes = [subprocess.Popen(node, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    errors = [p.communicate(timeout=300)[1] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], errors[0][-2000:] + errors[1][-2000:]
    assert "global batch 8 = 2 processes x 1 accumulation x 4" in (tmp_path / "nodes/log.txt").read_text()

    # one node, 2 processes; rank 0 is SIGKILLed after step 10 of 20 (last checkpoint: step 8) and
    # torchrun restarts both with the same command line
    env = dict(subprocess_env(), MBT_TEST_KILL_AT_STEP="10")
    run = tmp_path / "restarted"
    job = subprocess.run([*TORCHRUN, "--standalone", "--nproc_per_node=2", "--max-restarts=1",
                          *_train_args(config, run)], env=env, capture_output=True, text=True, timeout=300)
    assert job.returncode == 0, job.stderr[-3000:]
    log = (run / "log.txt").read_text()
    assert log.count("training tiny") == 2 and f"resumed from {run}/checkpoints/latest.pt at step 8 of 20" in log
    for rank in (0, 1):  # each process's own log, both attempts
        assert "resumed from" in (run / f"logs/rank{rank}.txt").read_text()
        assert "global batch 8" in (tmp_path / f"nodes/logs/rank{rank}.txt").read_text()
    records = [(r["split"], r["step"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]
    # the first attempt's step 10 (after the checkpoint of step 8) is not listed twice
    assert records == [("train", 5), ("train", 10), ("train", 15), ("train", 20), ("val", 20), ("test", 20)]
    a, b = load_file(tmp_path / "nodes/final/model.safetensors"), load_file(run / "final/model.safetensors")
    assert a.keys() == b.keys() and a["head.weight"].abs().sum() > 0
    for k in a:
        assert torch.equal(a[k], b[k]), (k, (a[k] - b[k]).abs().max())


@pytest.mark.slow
def test_fsdp_shards_written_by_two_processes_resume_in_one(tmp_path):
    cfg = tiny_config("train.mixup_alpha=0", "model.stochastic_depth=0", "train.epochs=3", "train.checkpoint_every=4",
                      "train.fsdp=true", "train.max_grad_norm=1.0")
    config = write_config(cfg, tmp_path / "cfg.yaml")
    one = subprocess.run([*MBT, "train", "--config", str(config), "--run-dir", str(tmp_path / "one"),
                          "--no-progress"], env=subprocess_env(), capture_output=True, text=True, timeout=180)
    assert one.returncode == 0, one.stderr[-2000:]

    run = tmp_path / "two"
    env = dict(subprocess_env(), MBT_TEST_KILL_AT_STEP="6")
    killed = subprocess.run([*TORCHRUN, "--standalone", "--nproc_per_node=2", *_train_args(config, run)],
                            env=env, capture_output=True, text=True, timeout=240)
    assert killed.returncode != 0 and not (run / "final").exists()
    ck = load_checkpoint(run / "checkpoints/latest.pt")
    assert ck["step"] == 4 and "model" not in ck
    assert {"__0_0.distcp", "__1_0.distcp", ".metadata"} <= set(ck[SHARDED]["files"])  # one file per process
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.is_dir()) == ["step-00000004"]
    _, at_4 = load_run_weights(run, "latest", cfg.model)  # `mbt eval --weights latest` reads shards too

    alone = subprocess.run([sys.executable, *_train_args(config, run)], env=subprocess_env(),
                           capture_output=True, text=True, timeout=180)
    assert alone.returncode == 0, alone.stderr[-3000:]
    log = (run / "log.txt").read_text()
    assert "resuming with 1 processes instead of 2" in log and "at step 4 of 12" in log
    a, b = load_file(tmp_path / "one/final/model.safetensors"), load_file(run / "final/model.safetensors")
    assert any(not torch.equal(v, b[k]) for k, v in at_4.state_dict().items())  # it trained on from step 4
    for k in a:  # the weights and the momentum buffers continued: the one-process run's weights
        assert torch.allclose(a[k], b[k], atol=1e-5), (k, (a[k] - b[k]).abs().max())


class _RunsCode:
    def __reduce__(self):
        return os.system, ("echo pwned",)


def test_shard_files_are_checksummed_and_their_index_never_runs_code(tmp_path):
    alone = Dist(0, 1, 0, torch.device("cpu"))
    for step in (1, 2):
        entry = write_shards(tmp_path, f"step-{step}", {"model": {"w": torch.arange(6.0) * step}}, alone)
        save_checkpoint({"step": step, SHARDED: entry}, tmp_path / "latest.pt")
    out = {"model": {"w": torch.zeros(6)}}
    read_shards(tmp_path, entry, out)
    assert torch.equal(out["model"]["w"], torch.arange(6.0) * 2)

    shard = tmp_path / "step-2/__0_0.distcp"
    shard.write_bytes(shard.read_bytes()[:-1] + b"x")  # one byte of the latest shard changed
    with pytest.raises(CheckpointError, match=r"step-2/__0_0.distcp: sha256 mismatch"):
        verify_shards(tmp_path, entry)
    state, path = load_resume_checkpoint(tmp_path)  # the latest good checkpoint: previous.pt
    assert path.name == "previous.pt" and state["step"] == 1

    (tmp_path / "step-1/.metadata").write_bytes(pickle.dumps(_RunsCode()))
    with pytest.raises(CheckpointError, match=r"\.metadata: refused: refused posix\.system"):
        read_shards(tmp_path, state[SHARDED], out)
