"""Embeddings of a whole dataset, written in chunks so that an interrupted run resumes.

`embed_dataset` runs a saved model over every item of an annotation file (the views of
`mbt eval`: `num_test_clips` x `num_test_crops` per item in 'test' mode, the middle clip in
'val' mode, averaged per item) and writes, into one folder:

- `index.json`: what is embedded (the model's weight hash, the data recipe, the mode, the
  annotation files and their items' hash, the chunk size) and the label space (class names,
  multi-label, class splits); `"complete": true` once every chunk is written.
- `chunk-000000.safetensors`, ...: for `chunk_size` consecutive items, float32 `rgb` and
  `spectrogram` [n, D] (the pooled features the head sees, as `MBTOutput.embeddings`),
  float32 `fused` [n, D] (the feature the head turns into the prediction: the mean of the
  modality embeddings for the token head, the pooled joint sequence for pooling heads), bool
  `has_rgb` / `has_spectrogram` [n], uint8 `labels` [n, C] (multi-hot), int64 `item` [n]
  (position in the annotations) and int64 `num_views` [n].
- `chunk-000000.json`: the chunk's ids (`video_id`), paths, the number of items without
  each modality, and the items left out as unreadable (`skip_bad`), with the reason.

A missing modality (a video without an audio track) is not filled in: the model runs the
towers it has inputs for (as `mbt predict`), the missing modality's row is NaN with
`has_<modality>` False (as in `mbt.embed` of single files), and `fused` comes from what exists.

Resuming: each chunk is written beside its final name and renamed into place, the tensors
first and the `.json` last, so a chunk is done exactly when its `.json` exists. A rerun with
the same arguments skips done chunks; a rerun with a different model, recipe or item list
is refused (or starts over with `overwrite=True`). The views are deterministic, so a resumed
folder holds the same numbers as an uninterrupted run (bit for bit when `chunk_size` x views
is a multiple of `batch_size`, so that batches are cut alike; else up to float rounding).

Why safetensors rather than npz: it is the project's weight format, it cannot hold pickled
objects (npz can, and is only safe if every reader passes `allow_pickle=False`), and its
tensors are read lazily (`safe_open`) in torch, numpy or JAX. Strings (ids, paths, class
names) go into the JSON sidecars, which any tool reads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from .data.annotations import Annotations
from .data.config import DataConfig
from .data.dataset import MODALITIES, AVDataset
from .data.loader import build_loader
from .io import atomic_write
from .models.config import check_range
from .models.mbt import MBT
from .train.config import MAX_BATCH

INDEX = "index.json"
FORMAT_VERSION = 2


def _chunk_name(chunk: int, ext: str) -> str:
    return f"chunk-{chunk:06d}.{ext}"


def _sha256_state(model: MBT) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _sha256_items(annotations: Annotations) -> str:
    rows = [[it.path, it.start, it.end, list(it.labels), it.video_id] for it in annotations.items]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


class _Views(torch.utils.data.Dataset):
    """Some views of an `AVDataset`, renumbered 0..n-1; the loader's (epoch, index) keys pass through."""

    def __init__(self, dataset: AVDataset, indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        epoch, i = key if isinstance(key, tuple) else (0, key)
        return self.dataset[(epoch, self.indices[i])]


@torch.no_grad()
def embed_batch(model: MBT, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    """Per-modality and fused embeddings [B, D] of one loader batch, and `has_<modality>` [B].

    Rows are grouped by the modalities they have (`has_audio`, and `has_rgb` where the
    dataset gives it); each group runs the towers it has inputs for. A missing modality's
    row is zeros; a row with no modality at all is zeros everywhere."""
    cfg = model.config
    n = batch["batch_size"]
    width = cfg.representation_size or cfg.hidden_size
    present = {m: torch.ones(n, dtype=torch.bool) for m in cfg.modalities}
    if "spectrogram" in present:
        present["spectrogram"] = batch["has_audio"].bool()
    if "rgb" in present and "has_rgb" in batch:
        present["rgb"] = batch["has_rgb"].bool()
    out = {m: torch.zeros(n, width) for m in (*cfg.modalities, "fused")}
    patterns = torch.stack([present[m] for m in cfg.modalities], 1)
    for pattern in patterns.unique(dim=0):
        mods = [m for m, p in zip(cfg.modalities, pattern.tolist(), strict=True) if p]
        if not mods:
            continue
        rows = (patterns == pattern).all(1).nonzero().flatten()
        inputs = {m: batch[m][rows].to(device) for m in mods}
        result = model(inputs, output_embeddings=True, output_tokens=cfg.classifier != "token")
        for m in mods:
            out[m][rows] = result.embeddings[m].float().cpu()
        out["fused"][rows] = fused_embedding(model, result, mods).float().cpu()
    out.update({f"has_{m}": p for m, p in present.items()})
    return out


def fused_embedding(model: MBT, result: Any, modalities: Sequence[str]) -> torch.Tensor:
    """The one vector [B, D] the head turns into the logits, from a forward pass of `modalities`
    (run with `output_embeddings=True`, and `output_tokens=True` for a pooling head): the mean of
    the towers' embeddings for the token head (linear, so head(mean) = mean of the heads), else the
    pooled tokens of all towers."""
    cfg = model.config
    if cfg.classifier == "token":
        return torch.stack([result.embeddings[m] for m in modalities]).mean(0)
    seq = torch.cat([result.tokens[m] for m in modalities], dim=1)
    return model._pre_logits({"gap": seq.mean(1), "gmp": seq.amax(1), "gsp": seq.sum(1)}[cfg.classifier])


def embed_dataset(
    model: MBT | str | os.PathLike,
    annotations: Annotations,
    out: str | os.PathLike,
    *,
    data: DataConfig | None = None,
    mode: Literal["test", "val"] = "test",
    batch_size: int = 8,
    num_workers: int = 0,
    chunk_size: int = 1024,
    device: str = "cpu",
    skip_bad: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Embed every item of `annotations` into the folder `out` (module docstring), resuming
    a folder left unfinished by the same call. `model` is an `MBT` or a saved model folder
    (whose `DataConfig` is used unless `data` is given). Returns a report: items, chunks
    written and resumed, items without a modality, items skipped."""
    from tqdm.auto import tqdm

    from .data.config import load_data_config
    from .weights import load_pretrained

    if mode not in ("test", "val"):
        raise ValueError(f"mode must be 'test' or 'val', got {mode!r}")
    check_range(batch_size, "batch_size", 1, MAX_BATCH)
    check_range(chunk_size, "chunk_size", 1, 1 << 24)
    recipe_given = data is not None or not isinstance(model, MBT)
    if not isinstance(model, MBT):
        data = data or load_data_config(model)
        model = load_pretrained(model, map_location=device)
    data = data or DataConfig()
    dev = torch.device(device)
    model = model.to(dev).eval()
    cfg = model.config
    if recipe_given:  # the recipe meant for this model: shapes must fit
        data.check_fits(cfg)
    dataset = AVDataset(annotations, data, mode, modalities=cfg.modalities, skip_bad=skip_bad)
    annotations = dataset.annotations  # without missing files (skip_bad), which `dropped` lists
    items, views = dataset.items, dataset.views
    num_chunks = -(-len(items) // chunk_size)
    settings = {
        "format_version": FORMAT_VERSION,
        "model": _sha256_state(model),
        "data": data.to_dict(),
        "mode": mode,
        "items": _sha256_items(annotations),
        "num_items": len(items),
        "chunk_size": chunk_size,
    }
    settings = json.loads(json.dumps(settings))  # as read back (tuples become lists)
    folder = Path(out)
    done = _prepare_folder(folder, settings, num_chunks, overwrite)
    index = {
        **settings,
        "modalities": list(cfg.modalities),
        "embedding_size": cfg.representation_size or cfg.hidden_size,
        "num_chunks": num_chunks,
        "annotations": list(annotations.sources),
        "class_names": list(annotations.class_names),
        "multi_label": annotations.multi_label,
        "class_splits": list(annotations.class_splits),
        "split_names": list(annotations.split_names),
        "missing_files_left_out": [p for p, _ in dataset.dropped],
        "complete": False,
    }
    atomic_write(folder / INDEX, json.dumps(index, indent=1).encode())

    pending = [c for c in range(num_chunks) if c not in done]
    indices = [v for c in pending for v in range(c * chunk_size * views, min((c + 1) * chunk_size, len(items)) * views)]
    loader = build_loader(_Views(dataset, indices), batch_size, train=False, num_workers=num_workers)
    sums: dict[int, dict[str, Any]] = {}  # item -> summed embeddings, views, masks
    ends, total = {}, 0  # chunk -> views of `indices` up to its end
    for c in pending:
        total += (min((c + 1) * chunk_size, len(items)) - c * chunk_size) * views
        ends[c] = total
    written: list[int] = []
    queue = list(pending)
    bar = tqdm(total=len(indices), desc="embed", unit="view", disable=not progress, dynamic_ncols=True)
    passed = 0
    try:
        for batch in loader:
            emb = embed_batch(model, batch, dev)
            for row, view in enumerate(batch["index"].tolist()):
                entry = sums.setdefault(view // views, {"views": 0, "label": batch["label"][row]})
                entry["views"] += 1
                for key, value in emb.items():
                    entry[key] = value[row] if key.startswith("has_") else entry.get(key, 0) + value[row]
            bar.update(batch["batch_size"] + len(loader.skipped) + passed - bar.n)
            passed += batch["batch_size"]
            while queue and passed + len(loader.skipped) >= ends[queue[0]]:
                _write_chunk(folder, queue[0], dataset, chunk_size, index["embedding_size"], sums, loader.skipped)
                written.append(queue.pop(0))
        for c in queue:  # the last views were skipped: nothing more comes
            _write_chunk(folder, c, dataset, chunk_size, index["embedding_size"], sums, loader.skipped)
            written.append(c)
    finally:
        bar.close()
    index["complete"] = True
    atomic_write(folder / INDEX, json.dumps(index, indent=1).encode())
    sidecars = [json.loads((folder / _chunk_name(c, "json")).read_text()) for c in range(num_chunks)]
    return {
        "out": str(folder),
        "num_items": len(items),
        "embedded": sum(sc["rows"] for sc in sidecars),
        "chunks_written": len(written),
        "chunks_resumed": len(done),
        "without": {m: sum(sc["without"][m] for sc in sidecars) for m in cfg.modalities},
        "skipped": [s for sc in sidecars for s in sc["skipped"]],
        "missing_files_left_out": index["missing_files_left_out"],
    }


def _prepare_folder(folder: Path, settings: dict[str, Any], num_chunks: int, overwrite: bool) -> set[int]:
    """Create `folder`, or check that it holds the same embedding run; the chunks already done."""
    folder.mkdir(parents=True, exist_ok=True)
    index_path = folder / INDEX
    if index_path.is_file():
        old = json.loads(index_path.read_text())
        differ = [k for k, v in settings.items() if old.get(k) != v]
        if differ and not overwrite:
            raise ValueError(f"{folder}: holds embeddings made with other settings ({', '.join(differ)} differ); "
                             "give a new output folder, or overwrite=True / --overwrite to start over")
        if differ or overwrite:
            for path in folder.glob("chunk-*"):
                path.unlink()
            index_path.unlink()
            return set()
    elif any(folder.iterdir()) and not overwrite:
        raise ValueError(f"{folder}: not empty and not an embeddings folder (no {INDEX})")
    return {c for c in range(num_chunks) if (folder / _chunk_name(c, "json")).is_file()}


def _write_chunk(folder: Path, chunk: int, dataset: AVDataset, chunk_size: int, width: int,
                 sums: dict[int, dict[str, Any]], skipped: list[tuple[str, str]]) -> None:
    from safetensors.torch import save

    cfg_mods = dataset.modalities
    first, last = chunk * chunk_size, min((chunk + 1) * chunk_size, len(dataset.items))
    kept = [i for i in range(first, last) if i in sums]
    left_out = [i for i in range(first, last) if i not in sums]
    entries = [sums.pop(i) for i in kept]
    reasons = dict(skipped)
    tensors: dict[str, torch.Tensor] = {}
    for key in (*cfg_mods, "fused"):
        rows = [e[key] / e["views"] for e in entries]
        tensors[key] = torch.stack(rows).float() if rows else torch.zeros(0, width)
    for m in cfg_mods:
        tensors[f"has_{m}"] = torch.tensor([bool(e[f"has_{m}"]) for e in entries], dtype=torch.bool)
        tensors[m][~tensors[f"has_{m}"]] = float("nan")  # not made up: NaN, as for single files
    if cfg_mods:
        tensors["fused"][~torch.stack([tensors[f"has_{m}"] for m in cfg_mods]).any(0)] = float("nan")
    num_classes = dataset.num_classes
    tensors["labels"] = (torch.stack([e["label"] for e in entries]) > 0.5).to(torch.uint8) if entries \
        else torch.zeros(0, num_classes, dtype=torch.uint8)
    tensors["item"] = torch.tensor(kept, dtype=torch.int64)
    tensors["num_views"] = torch.tensor([e["views"] for e in entries], dtype=torch.int64)
    atomic_write(folder / _chunk_name(chunk, "safetensors"), save(tensors))
    items = dataset.items
    sidecar = {
        "chunk": chunk,
        "rows": len(kept),
        "ids": [items[i].video_id for i in kept],
        "paths": [items[i].path for i in kept],
        "without": {m: int((~tensors[f"has_{m}"]).sum()) for m in cfg_mods},
        "skipped": [{"item": i, "path": items[i].path, "reason": reasons.get(items[i].path, "unreadable")}
                    for i in left_out],
    }
    atomic_write(folder / _chunk_name(chunk, "json"), json.dumps(sidecar, indent=1).encode())


@dataclass
class Embeddings:
    """A finished embeddings folder, read back (`load_embeddings`)."""

    tensors: dict[str, torch.Tensor]
    """The chunks' tensors concatenated: per modality and `fused` [N, D], `has_<modality>` [N],
    `labels` [N, C], `item` [N], `num_views` [N]."""
    ids: list[str]
    paths: list[str]
    class_names: list[str]
    multi_label: bool
    class_splits: tuple[int, ...]
    split_names: tuple[str, ...]
    modalities: tuple[str, ...]
    skipped: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """Items left out as unreadable: item, path, reason."""


def load_embeddings(folder: str | os.PathLike) -> Embeddings:
    """The embeddings written by `embed_dataset` into `folder`, checked to be complete."""
    from safetensors.torch import load_file

    folder = Path(folder)
    index_path = folder / INDEX
    if not index_path.is_file():
        raise FileNotFoundError(f"{folder}: not an embeddings folder (no {INDEX}; write one with mbt embed --format)")
    index = json.loads(index_path.read_text())
    chunks = range(index["num_chunks"])
    missing = [c for c in chunks if not (folder / _chunk_name(c, "json")).is_file()]
    if missing:
        raise ValueError(f"{folder}: unfinished, {len(missing)} of {index['num_chunks']} chunks missing "
                         f"(first {_chunk_name(missing[0], 'json')}); rerun the same mbt embed to finish it")
    parts: dict[str, list[torch.Tensor]] = {}
    ids: list[str] = []
    paths: list[str] = []
    skipped: list[dict[str, Any]] = []
    for c in chunks:
        sidecar = json.loads((folder / _chunk_name(c, "json")).read_text())
        path = folder / _chunk_name(c, "safetensors")
        tensors = load_file(path)
        rows = {k: v.shape[0] for k, v in tensors.items()}
        if set(rows.values()) != {sidecar["rows"]} or len(sidecar["ids"]) != sidecar["rows"]:
            raise ValueError(f"{path}: rows {rows} do not match its sidecar ({sidecar['rows']} rows)")
        for k, v in tensors.items():
            parts.setdefault(k, []).append(v)
        ids += sidecar["ids"]
        paths += sidecar["paths"]
        skipped += sidecar["skipped"]
    return Embeddings(
        tensors={k: torch.cat(v) for k, v in parts.items()}, ids=ids, paths=paths,
        class_names=index["class_names"], multi_label=index["multi_label"],
        class_splits=tuple(index["class_splits"]), split_names=tuple(index["split_names"]),
        modalities=tuple(m for m in MODALITIES if m in index["modalities"]), skipped=skipped,
    )
