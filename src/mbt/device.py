"""Facts about a torch device that the model and the trainer both decide by."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def host_sync_is_cheap(device: torch.device) -> bool:
    """Whether reading a tensor's value on the host (`.item()`, `nonzero()`) costs no more
    than the op: on the CPU. On an accelerator it waits for every queued kernel."""
    return device.type == "cpu"
