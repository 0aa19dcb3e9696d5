"""The order of examples: one training sampler, seeded by (seed, epoch), and evaluation shards.

- `StepBatchSampler` gives the order of training examples for `build_loader` and the trainer:
  a pure function of (seed, epoch), cut into steps. Every process computes the same epoch
  order (a permutation, or class-balanced draws with replacement) and takes its share of each
  step's global batch:

      step s, micro-batch m, rank r  ->  order[s*B + m*(W*b) + r*b : ... + b]

  with B the global batch, W processes, b = B / (W * accumulation) examples per forward.
  So the examples of a step do not depend on the number of processes or accumulation
  steps (a 2-process run sees the same global batches as a 1-process run), and a resumed
  run restarts at any step without reading the skipped examples.
- `ShardSampler` shards evaluation `rank::world` without padding, so no example counts twice.

Class-balanced weights: item weight = sum over its labels of 1 / (items with that label), as AST
and CAV-MAE (long-tailed multi-label sets such as AudioSet).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from .annotations import Annotations


def class_balanced_weights(annotations: Annotations) -> torch.Tensor:
    """Per-item sampling weight: sum over the item's labels of 1 / (items carrying that label)."""
    counts = annotations.label_counts()
    weights = torch.tensor(
        [sum(1.0 / counts[k] for k in it.labels) for it in annotations.items], dtype=torch.float64
    )
    if not bool((weights > 0).all()):
        raise ValueError("class-balanced sampling needs every item to have a label")
    return weights


class ShardSampler(Sampler[int]):
    """Indices `rank::world` in order, without padding (evaluation sharding)."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, n, world))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """This process's micro-batches of `(epoch, index)` keys for one epoch, from `start_step`.

    Set `epoch` (or call `set_epoch`) and `start_step` before each pass; `weights` switches to
    draws with replacement proportional to them (class-balanced sampling). `drop_last=False`
    lets the last step be partial: the epoch then covers all `num_examples` (or as many draws),
    and a process whose share of the last step is empty gets no micro-batch for it.
    """

    def __init__(
        self,
        num_examples: int,
        batch_size: int,
        steps_per_epoch: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        grad_accum_steps: int = 1,
        seed: int = 0,
        weights: torch.Tensor | None = None,
        drop_last: bool = True,
    ) -> None:
        if batch_size % (world_size * grad_accum_steps):
            raise ValueError(f"batch size {batch_size} is not divisible by {world_size} x {grad_accum_steps}")
        if drop_last and steps_per_epoch * batch_size > num_examples and weights is None:
            raise ValueError(f"{steps_per_epoch} steps of {batch_size} need more than {num_examples} examples")
        self.num_examples, self.batch_size, self.steps_per_epoch = num_examples, batch_size, steps_per_epoch
        self.rank, self.world_size, self.grad_accum_steps = rank, world_size, grad_accum_steps
        self.micro = batch_size // (world_size * grad_accum_steps)
        self.seed = seed
        self.weights = weights
        self.epoch_size = steps_per_epoch * batch_size if drop_last else min(steps_per_epoch * batch_size,
                                                                             num_examples)
        self.epoch = 0
        self.start_step = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Indices of the epoch's `epoch_size` examples, in order."""
        rng = np.random.default_rng([self.seed, epoch])
        if self.weights is not None:
            p = np.asarray(self.weights, dtype=np.float64) / float(self.weights.sum())
            return rng.choice(len(p), size=self.epoch_size, replace=True, p=p)
        return rng.permutation(self.num_examples)[: self.epoch_size]

    def _slices(self) -> Iterator[tuple[int, int]]:
        b, per_micro = self.micro, self.micro * self.world_size
        for step in range(self.start_step, self.steps_per_epoch):
            for m in range(self.grad_accum_steps):
                lo = step * self.batch_size + m * per_micro + self.rank * b
                hi = min(lo + b, self.epoch_size)
                if hi > lo:
                    yield lo, hi

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = self.epoch_order(self.epoch)
        for lo, hi in self._slices():
            yield [(self.epoch, int(i)) for i in order[lo:hi]]

    def __len__(self) -> int:
        return sum(1 for _ in self._slices())
