"""How a training step runs on a device: its autocast precision and its `torch.compile` mode."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from ..errors import ConfigError


def resolve_amp(mode: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, whether to scale the loss) for `train.amp` on `device`."""
    if mode == "auto":
        mode = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "off"
    if mode == "off":
        return None, False
    if mode == "fp16":
        if device.type != "cuda":
            raise ConfigError("train.amp: 'fp16' needs a CUDA device; use 'bf16' or 'off' on CPU")
        return torch.float16, True
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("train.amp: this GPU does not support bf16; use 'fp16' or 'off'")
    return torch.bfloat16, False


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager[Any]:
    """Mixed-precision context for `dtype` on `device` (None: full precision)."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def resolve_compile(setting: bool | str, device: torch.device) -> str | None:
    """The `torch.compile` mode of `train.compile` on `device`, or None: eager."""
    if setting == "auto":
        return "default" if device.type == "cuda" else None
    if setting is True:
        return "default"
    return setting or None
