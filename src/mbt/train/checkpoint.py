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

Sharded (FSDP) runs keep the model and optimizer tensors out of `latest.pt`: every process
writes its own shard through `torch.distributed.checkpoint` (DCP) into `checkpoints/step-<N>/`
(`write_shards`), then rank 0 commits `latest.pt` as above, holding everything else, the
optimizer's hyper-parameters and the sha256 of every shard file (`SHARDED`). A folder that
no committed checkpoint names is an interrupted write and is removed. DCP stores tensors by
parameter name and slice, so the shards load at any world size, also into one process's
unsharded model (`read_shards`). Its index (`.metadata`) is a pickle: it is read only after its
checksum matches and with an unpickler that builds DCP's own metadata classes and nothing else.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import pickle
import random
import shutil
import warnings
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from ..io import atomic_write
from ..models.pretrained import check_weights
from .distributed import Dist, all_gather_objects, barrier

LATEST, PREVIOUS = "latest.pt", "previous.pt"
SHARDED = "sharded"
"""Key of a checkpoint whose tensors are in a DCP folder: {'folder': name, 'files': {file: sha256}}."""
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
    if not isinstance(state, dict) or not (isinstance(state.get("model"), dict) or SHARDED in state):
        raise CheckpointError(f"{path}: no 'model' entry: not a training checkpoint")
    if "model" in state:  # sharded (FSDP) weights are checked by their files' sha256
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
        return _load_verified(latest, map_location), latest
    except (CheckpointError, FileNotFoundError) as e:
        if not previous.is_file():
            raise
        first = e
    log.warning("%s; falling back to the previous checkpoint %s", first, previous)
    try:
        return _load_verified(previous, map_location), previous
    except CheckpointError as e:
        raise CheckpointError(f"no usable checkpoint: {first}; {e}") from e


def _load_verified(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    """`load_checkpoint`, and for a sharded checkpoint the checksums of its shard files."""
    state = load_checkpoint(path, map_location)
    if SHARDED in state:
        verify_shards(path.parent, state[SHARDED])
    return state


def write_shards(folder: Path, name: str, tensors: dict[str, Any], d: Dist) -> dict[str, Any]:
    """Write `tensors` (a nest of tensors and DTensors; nothing else, so reading never unpickles)
    with DCP into `folder/name`, each process its own part; returns the `SHARDED` entry naming
    the folder and the sha256 of each file (hashed by the processes in turn). Collective."""
    import torch.distributed.checkpoint as dcp

    path = folder / name
    if d.is_main and path.exists():  # left by an interrupted write of the same step
        shutil.rmtree(path)
    barrier(d)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "torch.distributed is disabled")  # one process: as intended
        dcp.save(tensors, storage_writer=dcp.FileSystemWriter(path), no_dist=not d.enabled)
    barrier(d)
    files = sorted(p.name for p in path.iterdir())
    mine = {f: _sha256(path / f) for f in files[d.rank::d.world_size]}
    return {"folder": name, "files": {f: h for part in all_gather_objects(mine, d) for f, h in part.items()}}


def verify_shards(folder: Path, entry: dict[str, Any]) -> None:
    """Raise CheckpointError naming the first shard file of `entry` that is missing or damaged."""
    path = Path(folder) / entry["folder"]
    for name, digest in entry["files"].items():
        if not (path / name).is_file():
            raise CheckpointError(f"{path / name}: shard file missing")
        if _sha256(path / name) != digest:
            raise CheckpointError(f"{path / name}: sha256 mismatch: the shard file is damaged")


def read_shards(folder: Path, entry: dict[str, Any], tensors: dict[str, Any]) -> None:
    """Fill `tensors` (the same nest `write_shards` was given, at this run's sharding, or plain
    tensors in one process) in place from the shard folder `entry` names."""
    import torch.distributed.checkpoint as dcp

    reader = _safe_reader(Path(folder) / entry["folder"])
    reader.read_metadata()  # refused here, in our words, rather than inside DCP's collective
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "torch.distributed is disabled")  # one process: as intended
        dcp.load(tensors, storage_reader=reader, no_dist=not torch.distributed.is_initialized())


def load_model_weights(model: torch.nn.Module, state: dict[str, Any], folder: str | os.PathLike) -> None:
    """Load the weights of a training checkpoint `state` (read from `folder`) into an unsharded
    `model`: its 'model' entry, or its shard files."""
    if SHARDED in state:
        weights = {"model": model.state_dict()}
        read_shards(Path(folder), state[SHARDED], weights)
        model.load_state_dict(weights["model"])
    else:
        model.load_state_dict(state["model"])


def remove_shard_folders(folder: str | os.PathLike, keep: set[str]) -> list[Path]:
    """Delete the shard folders (`step-*`) of `folder` not in `keep` (those the committed
    checkpoints name); returns them."""
    folder = Path(folder)
    stale = sorted(p for p in folder.glob("step-*") if p.is_dir() and p.name not in keep) if folder.is_dir() else []
    for p in stale:
        shutil.rmtree(p)
    return stale


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


_DCP_METADATA_CLASSES = {
    "torch.distributed.checkpoint.metadata": {
        "Metadata", "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata", "TensorProperties",
        "StorageMeta", "MetadataIndex", "_MEM_FORMAT_ENCODING"},
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo", "SerializationFormat"},
    "torch.serialization": {"_get_layout"},
    "torch": {"Size"},
    "pathlib": {"PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath", "Path"},
    "collections": {"OrderedDict"},
}


class _MetadataUnpickler(pickle.Unpickler):
    """Builds DCP's metadata classes, torch dtypes and plain containers; refuses anything else."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if name in _DCP_METADATA_CLASSES.get(module, ()):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused {module}.{name}: not part of a DCP checkpoint index")


def _safe_reader(path: Path) -> Any:
    """DCP's file reader with the metadata read by `_MetadataUnpickler`."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

    class SafeReader(FileSystemReader):
        def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
            path = Path(self.path) / ".metadata"
            try:
                with open(path, "rb") as f:
                    metadata = _MetadataUnpickler(f).load()
            except (pickle.UnpicklingError, EOFError, AttributeError) as e:
                raise CheckpointError(f"{path}: refused: {e}") from e
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return SafeReader(path)


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
