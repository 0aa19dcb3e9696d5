"""Training checkpoints: written atomically, checksummed, loaded without running code.

A checkpoint is `checkpoints/latest.pt`: the new state is written to a temporary file in the
same folder, followed by a trailer (the sha256 of what precedes it and a magic tag), flushed to
disk, then the old `latest.pt` is renamed to `previous.pt` and the new file to `latest.pt`
(`os.replace` is atomic), so a crash or SIGKILL at any moment leaves a complete checkpoint. It
holds the model, optimizer and gradient-scaler states, the step (which fixes the learning rate
and the data position), the best validation score, the skipped-item counts, and the random
states of every process (python, numpy, torch, CUDA, and the mixup generator) as tensors and
plain containers, so a resumed run draws the same batches, augmentations, stochastic-depth
masks and mixup lambdas as an uninterrupted one.

Loading verifies the checksum before unpickling, then reads with `torch.load(weights_only=True)`:
a file that needs any other object is refused. `load_resume_checkpoint` falls back to
`previous.pt` when `latest.pt` is damaged.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import random
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from ..io import atomic_write
from ..models.pretrained import check_weights

LATEST, PREVIOUS = "latest.pt", "previous.pt"
_MAGIC = b"MBTCKPT1"  # trailer: sha256 digest (32 bytes) of the payload, then this tag
_TRAILER = 32 + len(_MAGIC)

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or used (damaged, unsafe, incomplete); the message names the file."""


def _is_disk_full(e: BaseException) -> bool:
    """An ENOSPC OSError, or torch's zip-writer RuntimeError ("file write failed") it causes."""
    while e is not None:
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        if isinstance(e, RuntimeError) and "write failed" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


class _Hashing:
    """A write-only file that hashes what passes through it (torch.save writes sequentially)."""

    def __init__(self, f: BinaryIO) -> None:
        self.f, self.sha = f, hashlib.sha256()

    def write(self, b: bytes) -> int:
        self.sha.update(b)
        return self.f.write(b)

    def flush(self) -> None:
        self.f.flush()


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Write `state` to `path` atomically (`mbt.io.atomic_write`) with a sha256 trailer hashed
    while writing; the old `path` becomes `previous.pt`."""
    path = Path(path)

    def write(f: BinaryIO) -> None:
        out = _Hashing(f)
        torch.save(state, out)
        f.write(out.sha.digest() + _MAGIC)

    try:
        atomic_write(path, write, backup=path.with_name(PREVIOUS))
    except (OSError, RuntimeError) as e:
        if not _is_disk_full(e):
            raise
        kept = path if path.exists() else path.with_name(PREVIOUS)
        raise CheckpointError(f"no space left on device while writing {path}; the previous checkpoint "
                              f"{kept} is kept") from e


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint written by `save_checkpoint`, checksum verified, loaded with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint to resume from")
    data = path.read_bytes()
    if len(data) < _TRAILER or data[-len(_MAGIC):] != _MAGIC:
        raise CheckpointError(f"{path}: no checksum trailer: truncated, or not a checkpoint written by this "
                              "version of mbt")
    payload, digest = data[:-_TRAILER], data[-_TRAILER:-len(_MAGIC)]
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(f"{path}: sha256 mismatch: the file is damaged")
    try:
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as e:  # e.g. an object weights_only refuses to build: never unpickle it
        raise CheckpointError(f"{path}: refused: it holds something other than tensors, numbers, strings "
                              f"and plain containers ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise CheckpointError(f"{path}: no 'model' entry: not a training checkpoint")
    weights = {k: v for k, v in state["model"].items() if isinstance(v, torch.Tensor)}
    try:
        check_weights(weights, weights, str(path))  # a NaN weight: the previous checkpoint is used instead
    except ValueError as e:
        raise CheckpointError(str(e)) from e
    return state


def load_resume_checkpoint(folder: str | os.PathLike, map_location: str | torch.device = "cpu"
                           ) -> tuple[dict[str, Any], Path]:
    """The state in `folder/latest.pt`, or in `folder/previous.pt` when latest is missing or damaged
    (said in the log); and the file it came from."""
    latest, previous = Path(folder) / LATEST, Path(folder) / PREVIOUS
    try:
        return load_checkpoint(latest, map_location), latest
    except (CheckpointError, FileNotFoundError) as e:
        if not previous.is_file():
            raise
        first = e
    log.warning("%s; falling back to the previous checkpoint %s", first, previous)
    try:
        return load_checkpoint(previous, map_location), previous
    except CheckpointError as e:
        raise CheckpointError(f"no usable checkpoint: {first}; {e}") from e


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete temporary files left by a checkpoint write that was killed; returns them."""
    folder = Path(folder)
    stale = sorted(folder.glob(".*.tmp")) if folder.is_dir() else []
    for p in stale:
        p.unlink()
    return stale


def rng_state(mixup_rng: np.random.Generator) -> dict[str, Any]:
    """This process's random states."""
    return {
        "python": random.getstate(),
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "mixup": mixup_rng.bit_generator.state,
    }


def _numpy_state() -> tuple:
    """numpy's global state with its key array as a list, so weights_only loading accepts it."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return (name, keys.tolist(), int(pos), int(has_gauss), float(cached))


def set_rng_state(state: dict[str, Any], mixup_rng: np.random.Generator) -> None:
    """Restore what `rng_state` captured (the CUDA states only when devices are present)."""
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    mixup_rng.bit_generator.state = state["mixup"]
