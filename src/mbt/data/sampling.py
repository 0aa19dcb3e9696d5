"""The order of examples: samplers seeded by (seed, epoch), and one class-balanced draw.

- `ShuffleSampler`, `ShardSampler` (evaluation, `rank::world` without padding) and
  `BalancedSampler` (class-balanced draws with replacement) feed `mbt.data.loader.build_loader`.
- `StepBatchSampler` is the trainer's: the order of training examples, a pure function of
  (seed, epoch), cut into steps. Every process computes the same epoch order (a permutation,
  or class-balanced draws with replacement) and takes its share of each step's global batch:

      step s, micro-batch m, rank r  ->  order[s*B + m*(W*b) + r*b : ... + b]

  with B the global batch, W processes, b = B / (W * accumulation) examples per forward.
  So the examples of a step do not depend on the number of processes or accumulation
  steps (a 2-process run sees the same global batches as a 1-process run), and a resumed
  run restarts at any step without reading the skipped examples.

Class-balanced weights: item weight = sum over its labels of 1 / (items with that label), as AST
and CAV-MAE (long-tailed multi-label sets such as AudioSet); `class_balanced_draws` draws from them.
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


def class_balanced_draws(weights: torch.Tensor, size: int, seed: int, epoch: int) -> np.ndarray:
    """`size` item indices drawn with replacement, P(item) ∝ `weights`, seeded by (seed, epoch):
    the one class-balanced draw of `BalancedSampler` and the trainer's `StepBatchSampler`."""
    p = np.asarray(weights, dtype=np.float64) / float(weights.sum())
    return np.random.default_rng([seed, epoch]).choice(len(p), size=size, replace=True, p=p)


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))


class ShuffleSampler(Sampler[int]):
    """A permutation of range(n) seeded by (seed, epoch)."""

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        return iter(torch.randperm(self.n, generator=_epoch_generator(self.seed, self.epoch)).tolist())

    def __len__(self) -> int:
        return self.n


class ShardSampler(Sampler[int]):
    """Indices `rank::world` in order, without padding (evaluation sharding)."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, n, world))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class BalancedSampler(Sampler[int]):
    """`num_samples` draws with replacement, P(item) ∝ weight, seeded by (seed, epoch); with
    `world > 1` every rank draws the same sequence and keeps its `rank::world` share."""

    def __init__(
        self, weights: torch.Tensor, num_samples: int, seed: int = 0, rank: int = 0, world: int = 1
    ) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.num_samples, self.seed, self.rank, self.world = num_samples, seed, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples // self.world

    def __iter__(self) -> Iterator[int]:
        draws = class_balanced_draws(self.weights, len(self) * self.world, self.seed, self.epoch)
        return iter(draws[self.rank :: self.world].tolist())


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """This process's micro-batches of `(epoch, index)` keys for one epoch, from `start_step`.

    Set `epoch` and `start_step` before each pass; `weights` switches to draws with
    replacement proportional to them (class-balanced sampling).
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
    ) -> None:
        if batch_size % (world_size * grad_accum_steps):
            raise ValueError(f"batch size {batch_size} is not divisible by {world_size} x {grad_accum_steps}")
        if steps_per_epoch * batch_size > num_examples and weights is None:
            raise ValueError(f"{steps_per_epoch} steps of {batch_size} need more than {num_examples} examples")
        self.num_examples, self.batch_size, self.steps_per_epoch = num_examples, batch_size, steps_per_epoch
        self.rank, self.world_size, self.grad_accum_steps = rank, world_size, grad_accum_steps
        self.micro = batch_size // (world_size * grad_accum_steps)
        self.seed = seed
        self.weights = weights
        self.epoch = 0
        self.start_step = 0

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Indices of the epoch's `steps_per_epoch * batch_size` examples, in order."""
        n = self.steps_per_epoch * self.batch_size
        if self.weights is not None:
            return class_balanced_draws(self.weights, n, self.seed, epoch)
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)[:n]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = self.epoch_order(self.epoch)
        b, per_micro = self.micro, self.micro * self.world_size
        for step in range(self.start_step, self.steps_per_epoch):
            for m in range(self.grad_accum_steps):
                lo = step * self.batch_size + m * per_micro + self.rank * b
                yield [(self.epoch, int(i)) for i in order[lo : lo + b]]

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.grad_accum_steps
