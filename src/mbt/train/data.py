"""From an `ExperimentConfig` to datasets: annotation files -> `AVDataset` per split, and the
label space the model must have."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

from torch.utils.data import Dataset

from ..data.annotations import ANNOTATION_FORMATS, Annotations, load_annotations
from ..data.dataset import AVDataset
from ..data.shards import ReadConfig, ShardDataset, ShardStream, load_shard_annotations
from ..data.shards.webdataset import WebDataset, load_webdataset
from ..data.subsets import balanced_subset, hold_out
from ..errors import ConfigError
from .config import SHARDS, SYNTHETIC, WEBDATASET, DatasetConfig, ExperimentConfig
from .synthetic import SyntheticAVDataset, synthetic_annotations

SPLITS = ("train", "val", "test")


def _path(ds: DatasetConfig, path: str | None) -> str | None:
    if path is None or ds.annotations_dir is None or os.path.isabs(path) or "://" in path:
        return path
    return os.path.join(ds.annotations_dir, path)


def _read_config(ds: DatasetConfig) -> ReadConfig:
    """How files at URLs are read (`dataset.read_*`)."""
    return ReadConfig(retries=ds.read_retries, backoff=ds.read_backoff, timeout=ds.read_timeout,
                      read_ahead_mib=ds.read_ahead_mib)


NAMED_CLASS_FORMATS = (*(f.name for f in ANNOTATION_FORMATS.values() if f.named_classes), WEBDATASET)
"""Formats whose class list can be given as names (e.g. a trained model's `label_names`)."""


def load_split_annotations(cfg: ExperimentConfig, split: str,
                           class_names: Sequence[str] | None = None) -> Annotations | None:
    """The annotations of `split` ('train', 'val' or 'test'), or None when the config names
    no file for it. With `dataset.val_fraction`, 'val' is the part held out of the training
    files and 'train' the rest; with `dataset.balanced_subset`, both come from that subset.
    `class_names` (formats in `NAMED_CLASS_FORMATS`, instead of `dataset.classes`) fixes the
    classes the labels of a file map to, such as those of the model being evaluated (a split
    held out of the training files keeps the classes of those files)."""
    ds = cfg.dataset
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if class_names is not None and (ds.format not in NAMED_CLASS_FORMATS or ds.classes is not None):
        raise ConfigError(f"class names can be given for formats {list(NAMED_CLASS_FORMATS)} without "
                          "dataset.classes")
    if ds.format == SYNTHETIC:
        return synthetic_annotations(cfg.model, split, ds.synthetic_items, cfg.train.seed)
    if split == "val" and ds.val_fraction > 0:
        training = _training_annotations(cfg)
        held = hold_out(training, ds.val_fraction, ds.split_seed)[1]
        if not held.items:
            n = len({it.video_id for it in training.items})
            raise ConfigError(
                f"dataset.val_fraction={ds.val_fraction:g} holds none of the {n} training videos out for "
                f"validation (a video is held out when a hash of its id falls below the fraction); with so "
                f"few videos: hold out more (e.g. dataset.val_fraction=0.25), name a validation split "
                f"(e.g. 'dataset.val=[my_videos/val]'), or train without validation (dataset.val_fraction=0)"
            )
        return held
    if split == "train" and (ds.val_fraction > 0 or ds.balanced_subset is not None):
        return hold_out(_training_annotations(cfg), ds.val_fraction, ds.split_seed)[0]
    return _read_split(cfg, split, None if class_names is None else list(class_names))


_LAST_TRAINING: dict[str, Annotations] = {}


def _training_annotations(cfg: ExperimentConfig) -> Annotations:
    """The training files, cut to `dataset.balanced_subset` if set (before any hold-out).
    The last result is kept (for the same config and unchanged files): the train and val
    splits both start from it, and parsing 2M AudioSet rows and choosing 500K of them takes
    about a minute."""
    stats = [(os.stat(p).st_mtime_ns, os.stat(p).st_size) if os.path.isfile(p) else None
             for p in (_path(cfg.dataset, f) for f in cfg.dataset.train)]
    key = json.dumps([dataclasses.asdict(cfg.dataset), stats], sort_keys=True, default=str)
    if key in _LAST_TRAINING:
        return _LAST_TRAINING[key]
    ann = _read_split(cfg, "train")
    if ann is None:
        raise ConfigError("dataset.val_fraction / balanced_subset: need training files (dataset.train)")
    if cfg.dataset.balanced_subset is not None:
        ann, _ = balanced_subset(ann, cfg.dataset.balanced_subset, cfg.dataset.split_seed)
    _LAST_TRAINING.clear()
    _LAST_TRAINING[key] = ann
    return ann


def describe_weights_choice(cfg: ExperimentConfig) -> str:
    """Which data chose the best weights of a run with this config, in words: recorded as
    `weights_chosen_on` with the best model and in results.json, read back for `mbt eval`
    by `run_folder.weights_chosen_on`."""
    ds = cfg.dataset
    if ds.format == SYNTHETIC:
        return "val: the synthetic validation split"
    if ds.val_fraction > 0:
        return (f"val: {ds.val_fraction:g} of the training videos held out (dataset.val_fraction, "
                f"split_seed {ds.split_seed}), not the test split")
    if not ds.val:
        return "nothing: no validation split (the final weights are the run's model)"
    same = set(ds.val) == set(ds.test) and ds.val_split == ds.test_split
    return f"val: {', '.join(ds.val)}" + (
        " = the test split: test numbers of these weights are optimistic (selected on the test set)" if same else ""
    )


def _read_split(cfg: ExperimentConfig, split: str, class_names: list[str] | None = None) -> Annotations | None:
    ds = cfg.dataset
    files = getattr(ds, split)
    if not files:
        return None
    if ds.format == SHARDS:
        return load_shard_annotations(_shard_folder(ds, split), _read_config(ds))
    if ds.format == WEBDATASET:
        return load_webdataset([_path(ds, f) for f in files], class_names or _path(ds, ds.classes),  # type: ignore[misc]
                               skip_bad=ds.skip_bad, read=_read_config(ds))
    options: dict[str, Any] = {
        "classes": class_names if class_names is not None else _path(ds, ds.classes),
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


def build_dataset(cfg: ExperimentConfig, split: str, annotations: Annotations | None = None,
                  modalities: Sequence[str] | None = None) -> Dataset | None:
    """The dataset of `split` in its mode (train: random clip + augmentation; val: middle
    clip; test: `num_test_clips` x `num_test_crops` views per video), or None when the
    split has no annotation files. Training with `dataset.stream` gets a `ShardStream` for
    this process (rank and world size from torch.distributed). `modalities`: a subset of the
    model's to read (the others are neither decoded nor fed: a modality ablation)."""
    if modalities is None:
        modalities = cfg.model.modalities
    unknown = [m for m in modalities if m not in cfg.model.modalities]
    if unknown or not modalities:
        raise ConfigError(f"modalities {list(modalities)}: choose among the model's {list(cfg.model.modalities)}")
    modalities = tuple(m for m in cfg.model.modalities if m in modalities)  # the model's order
    if cfg.dataset.format == SYNTHETIC:
        return SyntheticAVDataset(cfg.model, cfg.data, split, cfg.dataset.synthetic_items, cfg.train.seed,
                                  modalities=modalities)
    annotations = annotations if annotations is not None else load_split_annotations(cfg, split)
    if annotations is None:
        return None
    if cfg.dataset.format == SHARDS and cfg.dataset.stream and split == "train":
        return ShardStream(
            _shard_folder(cfg.dataset, split), cfg.data, split, modalities=modalities,  # type: ignore[arg-type]
            seed=cfg.train.seed, skip_bad=cfg.dataset.skip_bad, shuffle_buffer=cfg.dataset.shuffle_buffer,
            read=_read_config(cfg.dataset),
        )
    if cfg.dataset.format == SHARDS:
        return ShardDataset(
            _shard_folder(cfg.dataset, split), cfg.data, split, modalities=modalities,  # type: ignore[arg-type]
            seed=cfg.train.seed, skip_bad=cfg.dataset.skip_bad, annotations=annotations,
            read=_read_config(cfg.dataset),
        )
    if cfg.dataset.format == WEBDATASET:
        return WebDataset(annotations, cfg.data, split, modalities=cfg.model.modalities,  # type: ignore[arg-type]
                          seed=cfg.train.seed, skip_bad=cfg.dataset.skip_bad, read=_read_config(cfg.dataset))
    return AVDataset(
        annotations, cfg.data, split, modalities=modalities, seed=cfg.train.seed,  # type: ignore[arg-type]
        skip_bad=cfg.dataset.skip_bad,
    )
