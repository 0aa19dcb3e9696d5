"""Process-group setup from torchrun's environment, and the few collectives the trainer uses."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Dist:
    """This process's place in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> Dist:
    """Join the job torchrun describes (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`,
    `MASTER_PORT`), or run alone when `WORLD_SIZE` is unset or 1. NCCL on GPUs (one per
    local rank), gloo on CPU; multi-node works as torchrun sets it up."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("train.device='cuda' but no CUDA device is available")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        timeout = timedelta(minutes=30)  # long enough for a full evaluation pass on rank 0
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo",
            rank=rank,
            world_size=world,
            timeout=timeout,
            **_attempt_store(rank, world, timeout),
            **({"device_id": dev} if use_cuda else {}),
        )
    return Dist(rank, world, local_rank, dev)


def _attempt_store(rank: int, world: int, timeout: timedelta) -> dict[str, Any]:
    """Under torchrun, the job's store with keys of this attempt only (`TORCHELASTIC_RESTART_COUNT`):
    after `--max-restarts` restarts the workers, the store still holds the addresses the killed
    workers published, and gloo connects to those and fails. Empty outside torchrun (env://)."""
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if attempt is None:
        return {}
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"  # else rank 0 serves it
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                          is_master=not agent and rank == 0, timeout=timeout, multi_tenant=True)
    return {"store": dist.PrefixStore(f"mbt/attempt-{attempt}", store)}


def shutdown(d: Dist) -> None:
    """Leave the process group (a no-op when running alone)."""
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor, d: Dist) -> torch.Tensor:
    """Sum over processes (in place); unchanged when running alone."""
    if d.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_objects(obj: Any, d: Dist) -> list[Any]:
    """Every process's `obj`, in rank order."""
    if not d.enabled:
        return [obj]
    out: list[Any] = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, d: Dist) -> Any:
    """Rank 0's `obj` on every process."""
    if not d.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def broadcast_parameters(model: nn.Module, d: Dist) -> None:
    """Copy rank 0's weights and buffers to every process (what DDP does at construction;
    FSDP does not)."""
    if d.enabled:
        for t in [*model.parameters(), *model.buffers()]:
            dist.broadcast(t.data, src=0)


def fully_shard_blocks(model: nn.Module, blocks: list[nn.Module]) -> None:
    """FSDP2: each of `blocks` becomes one sharded unit (its weights all-gathered just
    before its forward and backward, its gradients reduce-scattered after), the remaining
    weights (embeddings, tokens, head) one unit at the root. Every process must call it."""
    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError:  # torch < 2.6
        from torch.distributed._composable.fsdp import fully_shard
    for block in blocks:
        fully_shard(block)
    fully_shard(model)


def full_state_dict(model: nn.Module, everywhere: bool = False) -> dict[str, torch.Tensor]:
    """The unsharded weights of an FSDP model: on rank 0 only, in CPU memory (for saving),
    or with `everywhere` on every process's device. Collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=not everywhere))


def host_group(d: Dist) -> Any:
    """The process group for small host-side values (counts): the default group when it is
    gloo, else a new gloo group, so reading a count never waits for an accelerator's queue of
    kernels. None when running alone. Collective (every process calls it)."""
    if not d.enabled or dist.get_backend() == "gloo":
        return None
    return dist.new_group(backend="gloo")


def all_reduce_ints(values: list[int], d: Dist, group: Any = None) -> list[int]:
    """Element-wise sums of `values` over processes (a host collective over `group`)."""
    if not d.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return t.tolist()
