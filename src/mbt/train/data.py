"""From an `ExperimentConfig` to datasets: annotation files -> `AVDataset` per split, and the
label space the model must have."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from torch.utils.data import Dataset

from ..data.annotations import Annotations, load_annotations
from ..data.dataset import AVDataset
from ..data.shards import ShardDataset, ShardStream, load_shard_annotations
from ..models.config import ConfigError
from .config import SHARDS, SYNTHETIC, DatasetConfig, ExperimentConfig
from .synthetic import SyntheticAVDataset, synthetic_annotations

SPLITS = ("train", "val", "test")


def _path(ds: DatasetConfig, path: str | None) -> str | None:
    if path is None or ds.annotations_dir is None or os.path.isabs(path) or "://" in path:
        return path
    return os.path.join(ds.annotations_dir, path)


def load_split_annotations(cfg: ExperimentConfig, split: str) -> Annotations | None:
    """The annotations of `split` ('train', 'val' or 'test'), or None when the config names
    no file for it."""
    ds = cfg.dataset
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if ds.format == SYNTHETIC:
        return synthetic_annotations(cfg.model, split, ds.synthetic_items, cfg.train.seed)
    files = getattr(ds, split)
    if not files:
        return None
    if ds.format == SHARDS:
        return load_shard_annotations(_shard_folder(ds, split))
    options: dict[str, Any] = {
        "classes": _path(ds, ds.classes),
        "verb_classes": _path(ds, ds.verb_classes),
        "noun_classes": _path(ds, ds.noun_classes),
        "root": ds.root,
        "path_pattern": ds.path_pattern,
        "ext": ds.ext,
        "split": getattr(ds, f"{split}_split"),
        "trimmed": ds.trimmed,
    }
    options = {k: v for k, v in options.items() if v is not None}
    return load_annotations(ds.format, [_path(ds, f) for f in files], skip_bad=ds.skip_bad,
                            duplicates=ds.duplicates, **options)


def _shard_folder(ds: DatasetConfig, split: str) -> str:
    """The one shard folder of `split` (the shards hold media and classes: `root`, `classes` and
    the other annotation options do not apply)."""
    files = getattr(ds, split)
    if len(files) != 1:
        raise ConfigError(f"dataset.{split}: format 'shards' takes one shard folder, got {len(files)}")
    return _path(ds, files[0])  # type: ignore[return-value]


def resolve_label_space(cfg: ExperimentConfig, annotations: Annotations) -> tuple[ExperimentConfig, list[str]]:
    """The config with the model's label fields taken from the training annotations (the data
    defines the classes), and a line for every field that changed."""
    m = cfg.model
    want = {
        "num_classes": annotations.num_classes,
        "multi_label": annotations.multi_label,
        "class_splits": tuple(annotations.class_splits) or None,
        "split_names": tuple(annotations.split_names) or None,
        "label_names": tuple(annotations.class_names),
    }
    changes = [
        f"model.{k}: {getattr(m, k)!r} -> {v!r} (from the training annotations)"
        for k, v in want.items()
        if getattr(m, k) != v and k != "label_names"
    ]
    if m.label_names != want["label_names"]:
        changes.append(f"model.label_names: set from the training annotations ({len(annotations.class_names)})")
    if not changes:
        return cfg, []
    try:
        model = dataclasses.replace(m, **want)
    except ValueError as e:
        raise ConfigError(f"model: the training annotations do not fit the model config: {e}") from e
    return dataclasses.replace(cfg, model=model), changes


def check_same_classes(reference: Annotations, other: Annotations, split: str) -> None:
    """Validation and test must use the training class list (same names, same order)."""
    if other.class_names != reference.class_names:
        raise ConfigError(
            f"dataset.{split}: its class list ({other.num_classes} classes, first {other.class_names[:3]}) "
            f"differs from the training one ({reference.num_classes}, first {reference.class_names[:3]}); "
            "give the same class list file with dataset.classes"
        )


def build_dataset(cfg: ExperimentConfig, split: str, annotations: Annotations | None = None) -> Dataset | None:
    """The dataset of `split` in its mode (train: random clip + augmentation; val: middle
    clip; test: `num_test_clips` x `num_test_crops` views per video), or None when the
    split has no annotation files. Training with `dataset.stream` gets a `ShardStream` for
    this process (rank and world size from torch.distributed)."""
    if cfg.dataset.format == SYNTHETIC:
        return SyntheticAVDataset(cfg.model, cfg.data, split, cfg.dataset.synthetic_items, cfg.train.seed)
    annotations = annotations if annotations is not None else load_split_annotations(cfg, split)
    if annotations is None:
        return None
    if cfg.dataset.format == SHARDS and cfg.dataset.stream and split == "train":
        return ShardStream(
            _shard_folder(cfg.dataset, split), cfg.data, split, modalities=cfg.model.modalities,  # type: ignore[arg-type]
            seed=cfg.train.seed, skip_bad=cfg.dataset.skip_bad, shuffle_buffer=cfg.dataset.shuffle_buffer,
        )
    if cfg.dataset.format == SHARDS:
        return ShardDataset(
            _shard_folder(cfg.dataset, split), cfg.data, split, modalities=cfg.model.modalities,  # type: ignore[arg-type]
            seed=cfg.train.seed, skip_bad=cfg.dataset.skip_bad, annotations=annotations,
        )
    return AVDataset(
        annotations, cfg.data, split, modalities=cfg.model.modalities, seed=cfg.train.seed,  # type: ignore[arg-type]
        skip_bad=cfg.dataset.skip_bad,
    )
