"""Optimizer and learning-rate schedule of the official recipe (spec §5)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from .config import TrainConfig


def learning_rate(step: int, base_lr: float, warmup_steps: float, total_steps: int) -> float:
    """Scenic's `constant * cosine_decay * linear_warmup` at the 0-based step `step`:

        lr = base * min(1, s / W) * 0.5 * (1 + cos(pi * ((max(0, s - W) / (P - int(W))) mod 1)))

    with W = `warmup_steps` (may be fractional) and P = `total_steps`. The lr is exactly 0
    at step 0, `base` at step W, and falls to 0 at the end of the cycle.
    """
    warmup = min(1.0, step / warmup_steps) if warmup_steps > 0 else 1.0
    progress = (max(0.0, step - warmup_steps) / (total_steps - int(warmup_steps))) % 1.0
    return base_lr * warmup * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class Schedule:
    """Step counts of a run and its learning rate at every step."""

    base_lr: float
    steps_per_epoch: int
    """`num_train_examples // batch_size`: the last partial batch is dropped (official)."""
    total_steps: int
    warmup_steps: float

    @classmethod
    def from_config(cls, cfg: TrainConfig, num_train_examples: int) -> Schedule:
        steps_per_epoch = num_train_examples // cfg.batch_size
        if steps_per_epoch < 1:
            raise ConfigError(
                f"train.batch_size: {cfg.batch_size} is larger than the training set "
                f"({num_train_examples} examples); no full batch fits in an epoch"
            )
        total = cfg.epochs * steps_per_epoch
        warmup = cfg.warmup_epochs * steps_per_epoch
        if total - int(warmup) < 1:
            raise ConfigError(
                f"train.warmup_epochs: {cfg.warmup_epochs} epochs of warmup leave no step for the decay "
                f"in {cfg.epochs} epochs"
            )
        return cls(cfg.lr, steps_per_epoch, total, warmup)

    def lr(self, step: int) -> float:
        return learning_rate(step, self.base_lr, self.warmup_steps, self.total_steps)


FUSED_DEVICES = ("cuda",)
"""Devices whose weights get the fused optimizer kernels: one launch per step, and (unlike
the foreach AdamW, which reads its step counters on the host) no host synchronisation."""


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum, no dampening) or AdamW; weight decay skips the parameters the model
    lists in `no_weight_decay()` (tokens, positions, norms, biases). The lr is set per
    step by the training loop. Fused kernels when the weights are on CUDA."""
    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if name in skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    # on GPUs one fused kernel updates every tensor (instead of a few launches per tensor)
    fused = bool(decay + no_decay) and all(p.device.type in FUSED_DEVICES for p in decay + no_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, dampening=0.0,
                               fused=fused or None)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=fused or None)
