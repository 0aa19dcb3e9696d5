"""`ExperimentConfig`: everything a training run needs, in four typed sections.

- `model`: the network (`MBTConfig`),
- `data`: how a video becomes inputs (`DataConfig`),
- `dataset`: which annotation files and media (`DatasetConfig`),
- `train`: optimisation, schedule, evaluation and bookkeeping (`TrainConfig`).

A run starts from a preset (`mbt.train.presets`) or the defaults, then a YAML/JSON file,
then `--set section.field=value` overrides (`mbt.overrides`, typed by the field
annotations). The resolved config is saved in the run folder and is enough to resume.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..data.annotations.formats import ANNOTATION_FORMATS
from ..data.config import DataConfig
from ..errors import ConfigError
from ..io import atomic_write, load_yaml, not_a_file
from ..models.config import PAPER_VIT, MBTConfig, check_range
from ..overrides import ConfigDumper, ConfigLoader, coerce, parse_assignments, update
from .loggers import LOGGERS

OPTIMIZERS = ("sgd", "adamw")
AMP_MODES = ("auto", "bf16", "fp16", "off")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
"""`torch.compile` modes `train.compile` accepts."""
MAX_BATCH = 65_536
"""Largest `batch_size`, `eval_batch_size` and `grad_accum_steps`."""
MAX_EPOCHS = 100_000
MAX_WORKERS = 256
"""Most `num_workers`; the loaders also cap it to 4 per CPU of the machine, with a warning
(`mbt.data.loader.worker_count`)."""
MAX_CONFIG_BYTES = 1 << 20
"""Largest config file read (1 MiB; the paper's configs are a few KiB)."""
SYNTHETIC = "synthetic"
"""`dataset.format` of the built-in generated data set (no files; see `mbt.train.synthetic`)."""
SHARDS = "shards"
"""`dataset.format` of shard folders written by `mbt data prepare` (see `mbt.data.shards`)."""
WEBDATASET = "webdataset"
"""`dataset.format` of standard WebDataset tars of media files and labels (`mbt.data.shards.webdataset`)."""
DATASET_FORMATS = (*ANNOTATION_FORMATS, SHARDS, WEBDATASET, SYNTHETIC)
"""Every `dataset.format`: the annotation formats (`mbt.data.annotations.ANNOTATION_FORMATS`),
and those without annotation files."""


@dataclass
class DatasetConfig:
    """Where the examples come from: arguments of `mbt.data.annotations.load_annotations`
    for each split, plus the media root."""

    format: str = "audioset"
    """One of `DATASET_FORMATS`: an annotation format (`mbt.data.annotations.ANNOTATION_FORMATS`,
    whose entries say which of the fields below each one takes: 'folder', 'csv', 'jsonl',
    'audioset', 'vggsound', 'vggsounder', 'epic100', 'kinetics', 'kinetics-sounds',
    'moments-in-time'), 'shards' (folders written by `mbt data prepare`, local or
    fsspec URLs: `train`, `val`, `test` each name one folder, prepared with `--mode` of that
    split; classes and media come from the shards), 'webdataset' (tars of media files and `.cls` /
    `.json` labels as the `webdataset` package writes them: `train`, `val`, `test` list tar paths or
    URLs, brace patterns such as `shards-{000000..000009}.tar` expanded; class names from `classes`),
    or 'synthetic' (generated tensors, no files: for smoke tests and benchmarks of the training stack)."""
    root: str | None = None
    """Folder holding the media files (located by the format's naming patterns)."""
    annotations_dir: str | None = None
    """Folder that relative annotation and class-list paths are taken from; None: the
    current directory."""
    train: tuple[str, ...] = ()
    """Annotation file(s) of the training split (AudioSet takes several segment CSVs)."""
    val: tuple[str, ...] = ()
    """Annotation file(s) of the validation split: one middle clip per video, evaluated
    every `train.eval_every` steps; the best model is chosen on it. Empty: no validation,
    unless `val_fraction` holds one out of the training files."""
    val_fraction: float = 0.0
    """Hold this fraction of the training videos out as the validation split (with `val`
    empty): a video is held out when a hash of its id and `split_seed` falls below it
    (`mbt.data.subsets.hold_out`), so the split is reproducible and does not depend on row
    order or on which other videos are present. 0: no hold-out."""
    split_seed: int = 0
    """Seed of the `val_fraction` hold-out and the `balanced_subset` order."""
    balanced_subset: int | None = None
    """Train on about this many training videos, chosen class-balanced from the training files
    (`mbt.data.subsets.balanced_subset`: AudioSet-500K from the 2M unbalanced set); the
    `val_fraction` hold-out is taken from this subset. None: all training videos."""
    test: tuple[str, ...] = ()
    """Annotation file(s) of the test split: `data.num_test_clips` clips (x crops) per
    video, logits averaged per video, evaluated once at the end. Empty: no test."""
    train_split: str | None = None
    """Value of the split column kept for training (formats with one file holding all
    splits: 'vggsound' -> 'train', 'kinetics')."""
    val_split: str | None = None
    """Split column value kept for validation."""
    test_split: str | None = None
    """Split column value kept for the test (VGGSound: 'test')."""
    classes: str | None = None
    """Class list file (AudioSet `class_labels_indices.csv`, VGGSound / Kinetics lists)."""
    verb_classes: str | None = None
    """EPIC-KITCHENS-100 `EPIC_100_verb_classes.csv` (default: next to the annotations)."""
    noun_classes: str | None = None
    """EPIC-KITCHENS-100 `EPIC_100_noun_classes.csv` (default: next to the annotations)."""
    path_pattern: str | None = None
    """One `str.format` pattern locating each media file under `root`, replacing the
    format's built-in list (see `mbt.data.annotations`)."""
    ext: str | None = None
    """Only accept media files with this extension."""
    trimmed: bool | None = None
    """YouTube-clip formats: the files are the cut segments (True, default of the parser)
    or the full source videos (False)."""
    skip_bad: bool = False
    """Skip bad annotation rows, missing files and undecodable clips (counted and reported
    at the end) instead of stopping with an error."""
    duplicates: str = "error"
    """A clip listed twice in the annotations: 'error' (refuse), 'keep' or 'drop' the repeats
    (warned about)."""
    synthetic_items: int = 256
    """Videos per split of the 'synthetic' format (which always has train, val and test)."""
    stream: bool = False
    """Format 'shards': read the training shards whole and in sequence (`ShardStream`: a
    shuffled shard order each pass, shards split over processes and loader workers, a
    shuffle buffer) instead of item by item (`ShardDataset`, ranged reads). For object
    storage, where one long read costs far less than many short ones. Each process then
    sees its own shards; evaluation still reads item by item."""
    shuffle_buffer: int = 256
    """With `stream`: samples each loader worker holds and draws from at random."""
    read_retries: int = 5
    """Shards at URLs: further tries after a transient error (connection refused/reset, timeout,
    HTTP 5xx), waiting `read_backoff` s, then twice as long each time (at most 30 s); then the run
    stops with an error naming the URL and the cause (also with `skip_bad`: an outage is not a bad
    item). See `mbt.data.shards.remote`."""
    read_backoff: float = 0.5
    """Seconds before the first retry of a remote read."""
    read_timeout: float = 60.0
    """Seconds a remote connection or read may block before it counts as a (retried) timeout."""
    read_ahead_mib: int = 64
    """With `stream` and shards at URLs: MiB each loader worker reads ahead of its decoding."""

    def __post_init__(self) -> None:
        if self.format not in DATASET_FORMATS:
            raise ConfigError(f"format: expected one of {list(DATASET_FORMATS)}, got {self.format!r}")
        for name in ("train", "val", "test"):
            value = getattr(self, name)
            setattr(self, name, (value,) if isinstance(value, str) else tuple(value))
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction: must be in [0, 1), got {self.val_fraction}")
        if self.val_fraction > 0 and self.val:
            raise ConfigError(f"val_fraction={self.val_fraction} holds validation out of the training files, "
                              f"but val also names {list(self.val)}: give one of them")
        if (self.val_fraction > 0 or self.balanced_subset is not None) and self.format in (SHARDS, SYNTHETIC):
            raise ConfigError(f"val_fraction / balanced_subset: take annotation files, not format {self.format!r}")
        if self.balanced_subset is not None and self.balanced_subset < 1:
            raise ConfigError(f"balanced_subset: must be >= 1 or null, got {self.balanced_subset}")
        check_range(self.synthetic_items, "synthetic_items", 1, 1_000_000)
        if self.stream and self.format != SHARDS:
            raise ConfigError(f"stream: streams shard folders (format 'shards'), not format {self.format!r}")
        check_range(self.shuffle_buffer, "shuffle_buffer", 0, 1_000_000)
        if min(self.read_retries, self.read_backoff, self.read_ahead_mib) < 0 or not self.read_timeout > 0:
            raise ConfigError("read_retries, read_backoff, read_ahead_mib: must be >= 0; read_timeout: > 0 (got "
                              f"{self.read_retries}, {self.read_backoff}, {self.read_ahead_mib}; {self.read_timeout})")


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping. Defaults are Scenic's AudioSet recipe (spec §5)."""

    optimizer: str = "sgd"
    """'sgd': momentum SGD as the official code (`m <- momentum m + g; w <- w - lr m`,
    no dampening). 'adamw': AdamW with `weight_decay` on all weights but those in
    `model.no_weight_decay()` (tokens, positions, norms, biases)."""
    lr: float = 0.5
    """Base (peak) learning rate, reached after warmup."""
    momentum: float = 0.9
    """SGD momentum."""
    nesterov: bool = False
    """Nesterov momentum for SGD (off in the official recipe)."""
    weight_decay: float = 0.0
    """Decoupled weight decay (AdamW) or L2 added to the gradient (SGD); 0 as official."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW moment decay rates."""
    warmup_epochs: float = 2.5
    """Linear warmup from lr 0 at step 0 to `lr`, in epochs; then cosine decay to 0 at the
    last step (Scenic's `constant * cosine_decay * linear_warmup`)."""
    epochs: int = 50
    """Passes over the training set; an epoch is `len(train) // batch_size` steps."""
    batch_size: int = 64
    """Global batch: examples per optimizer step over all processes and accumulation
    steps. Must be divisible by `world_size * grad_accum_steps`."""
    grad_accum_steps: int = 1
    """Micro-batches accumulated per optimizer step (mixup pairs within a micro-batch)."""
    max_grad_norm: float | None = 1.0
    """Clip the gradient to this global L2 norm; None or 0: no clipping. With DDP the
    averaged gradient is clipped, which equals one process with the global batch; the
    official code clips each device's gradient before averaging (see `clip_per_replica`)."""
    clip_per_replica: bool = False
    """Clip each process's own gradient before averaging them, as the official code does
    per device (then results depend on the number of processes)."""
    label_smoothing: float = 0.3
    """`y (1 - ls) + ls / C` applied to the (mixed) targets inside the loss."""
    mixup_alpha: float = 0.5
    """Mixup Beta(alpha, alpha); 0: off. One lambda per process micro-batch, examples
    paired with the reversed batch (the official per-device pairing)."""
    mixmod: bool = False
    """Mixup with an independent lambda per modality (needs the 'token' classifier)."""
    modality_dropout: float = 0.0
    """Probability that a training micro-batch leaves one modality out (chosen uniformly):
    that tower does not run, as in `predict` and evaluation for a file without that
    modality, so the model learns to answer from either tower alone. Per batch, not per
    clip: a per-clip drop would need a mask through every fusion layer, and zeroed inputs
    would teach that silence means "no sound". The draw is a function of (seed, step,
    micro-batch), the same on every process. 0 (off) in the paper's recipes."""
    balanced_sampling: bool = False
    """Draw training examples with replacement, weighted towards rare classes (AST /
    CAV-MAE's AudioSet sampler); off in the paper's recipes."""
    amp: str = "auto"
    """Mixed precision: 'bf16' autocast, 'fp16' autocast with gradient scaling (CUDA),
    'off' (float32, as official), 'auto' (bf16 on GPUs that support it, else off)."""
    init_from: str | None = PAPER_VIT
    """Weights to start from (`mbt.train.init_from`): an ImageNet ViT for both towers (a timm
    model name, or a local .safetensors / .pth / .npz), an mbt model folder (converted or
    trained) or a run folder (its best, else final, else latest verified weights), whose
    towers load and whose head is re-initialised when the classes differ; None: random
    initialisation."""
    freeze: bool = False
    """Train only the classifier (`head`, and `pre_logits` when the model has one), the
    rest kept as initialised: a frozen-backbone fine-tune, to measure what a representation
    (`init_from`) gives without training it. `mbt probe` does the same on saved embeddings."""
    grad_checkpointing: bool = False
    """Recompute blocks in the backward pass to save activation memory."""
    compile: bool | str = "auto"
    """`torch.compile` the model: true, false, a `torch.compile` mode ('default',
    'max-autotune-no-cudagraphs', ...), or 'auto': compiled on CUDA (300 vs 233 clips/s
    eager for MBT-B on an H200), eager on the CPU (where compiling costs minutes and the
    eager CPU kernels are tuned). The first step's time, compilation included, is logged."""
    fsdp: bool = False
    """With several processes, shard the weights, gradients and optimizer state over them
    (FSDP2 `fully_shard`, one unit per encoder block) instead of replicating them (DDP):
    for models that do not fit one device. Checkpoints and saved models hold the full
    weights as with DDP; evaluation runs a gathered copy of the weights on every process."""
    eval_batch_size: int | None = None
    """Clips per process per evaluation batch; None: the per-process training batch."""
    checkpoint_every: int = 500
    """Steps between checkpoints (one is always written at the end); official: 500."""
    eval_every: int = 0
    """Steps between validation passes; 0: at the end of every epoch (official)."""
    log_every: int = 50
    """Steps between training-metric log lines."""
    max_unreadable_share: float = 0.5
    """With `dataset.skip_bad`: stop the run (naming counts and the first causes) when more
    than this share of the training clips of the last `unreadable_window` steps could not be
    read, e.g. storage that went away; 1: never. (A step with no readable clip at all is
    never taken, and a run that read none fails.)"""
    unreadable_window: int = 100
    """Steps over which `max_unreadable_share` is measured (from the first full window)."""
    loggers: tuple[str, ...] = ()
    """Where metrics go besides metrics.jsonl and curves.png (always written): any of 'csv'
    (metrics.csv), 'tensorboard' (tb/; also unasked when installed), 'wandb', 'mlflow'
    (optional extras: `pip install 'mbt[wandb]'`); see `mbt.train.loggers`."""
    seed: int = 0
    """Seed of initialisation, data order, augmentation and mixup (official `rng_seed`)."""
    num_workers: int = 8
    """DataLoader worker processes per training process."""
    device: str = "auto"
    """'auto' (the local GPU under torchrun, else CPU), 'cpu', or 'cuda'."""

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)
        self.loggers = (self.loggers,) if isinstance(self.loggers, str) else tuple(self.loggers)
        unknown = [name for name in self.loggers if name not in LOGGERS]
        if unknown:
            raise ConfigError(f"loggers: unknown {unknown}; expected some of {list(LOGGERS)}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer: unknown {self.optimizer!r}; expected one of {list(OPTIMIZERS)}")
        if self.amp not in AMP_MODES:
            raise ConfigError(f"amp: unknown {self.amp!r}; expected one of {list(AMP_MODES)}")
        if self.compile not in (True, False, "auto", *COMPILE_MODES):
            raise ConfigError(f"compile: expected true, false, 'auto' or one of {list(COMPILE_MODES)}, "
                              f"got {self.compile!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device: expected 'auto', 'cpu' or 'cuda', got {self.device!r}")
        for name in ("lr", "momentum", "weight_decay", "warmup_epochs", "label_smoothing", "mixup_alpha"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name}: must be a finite number >= 0, got {value}")
        if not 0 <= self.modality_dropout <= 1:
            raise ConfigError(f"modality_dropout: must be a probability in [0, 1], got {self.modality_dropout}")
        if self.label_smoothing >= 1:
            raise ConfigError(f"label_smoothing: must be < 1, got {self.label_smoothing}")
        if self.nesterov and self.momentum == 0:
            raise ConfigError("nesterov: needs momentum > 0")
        if self.max_grad_norm is not None and self.max_grad_norm < 0:
            raise ConfigError(f"max_grad_norm: must be >= 0 or null, got {self.max_grad_norm}")
        limits = {"epochs": MAX_EPOCHS, "batch_size": MAX_BATCH, "grad_accum_steps": MAX_BATCH,
                  "checkpoint_every": 2**40, "log_every": 2**40}
        for name, hi in limits.items():
            check_range(getattr(self, name), name, 1, hi)
        if self.eval_batch_size is not None:
            check_range(self.eval_batch_size, "eval_batch_size", 1, MAX_BATCH)
        check_range(self.eval_every, "eval_every", 0, 2**40)
        check_range(self.num_workers, "num_workers", 0, MAX_WORKERS)
        check_range(self.seed, "seed", 0, 2**63 - 1)
        check_range(self.max_unreadable_share, "max_unreadable_share", 0.0, 1.0, float)
        check_range(self.unreadable_window, "unreadable_window", 1, 2**40)
        if self.fsdp and self.clip_per_replica:
            raise ConfigError("clip_per_replica: not available with fsdp (gradients are reduced while sharded)")
        if self.batch_size % self.grad_accum_steps:
            raise ConfigError(
                f"batch_size: {self.batch_size} is not divisible by grad_accum_steps={self.grad_accum_steps}"
            )

    def micro_batch_size(self, world_size: int) -> int:
        """Examples per process per forward pass."""
        per_step = world_size * self.grad_accum_steps
        if self.batch_size % per_step:
            raise ConfigError(
                f"train.batch_size: {self.batch_size} is not divisible by world_size * grad_accum_steps "
                f"= {world_size} * {self.grad_accum_steps}"
            )
        return self.batch_size // per_step


@dataclass
class ExperimentConfig:
    """One training run: model, data recipe, dataset and training settings."""

    model: MBTConfig = field(default_factory=MBTConfig)
    """The network."""
    data: DataConfig = field(default_factory=DataConfig)
    """Clip sampling, features and augmentation."""
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    """Annotation files and media."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation, evaluation and bookkeeping."""
    name: str = "mbt"
    """Experiment name (the preset's), used to name run folders."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise `ConfigError` naming the fields that disagree across sections."""
        m, d = self.model, self.data
        d.check_fits(m)
        if self.train.mixmod and m.classifier != "token":
            raise ConfigError("train.mixmod: needs model.classifier='token' (one head per modality)")
        if self.train.modality_dropout and len(m.modalities) < 2:
            raise ConfigError("train.modality_dropout: needs a model with two modalities")
        if self.train.modality_dropout and self.train.fsdp:
            raise ConfigError("train.modality_dropout: not available with train.fsdp (a dropped tower's "
                              "shards would wait for gradients that never come); use DDP")
        if self.dataset.stream and self.train.balanced_sampling:
            raise ConfigError("train.balanced_sampling: draws items at random, which dataset.stream cannot; "
                              "turn one off")

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: ExperimentConfig | None = None) -> ExperimentConfig:
        """`base` (default: the defaults) with every field given in `data` set.

        Values are type-checked against the field annotations; each section is rebuilt
        once with all its changes, so fields that must agree (`num_classes` and
        `class_splits`) can change together. Unknown keys and bad values are errors
        naming the dotted key."""
        base = base if base is not None else cls()
        if not isinstance(data, dict):
            raise ConfigError(f"an experiment config must be a mapping of sections, got {type(data).__name__}")
        changes: dict[str, Any] = {}
        for name, value in data.items():
            if name not in _SECTIONS and name != "name":
                raise ConfigError(f"{name}: unknown key; sections: {[*_SECTIONS, 'name']}")
            if name == "name":
                changes[name] = coerce(value, str, name)
                continue
            if not isinstance(value, dict):
                raise ConfigError(f"{name}: expected a mapping of {type(getattr(base, name)).__name__} fields")
            if name == "dataset":
                value = _compose_dataset(base.dataset, value, base.name)
            changes[name] = _rebuild(getattr(base, name), value, name)
        if "model" in changes or "data" in changes:
            changes["model"], changes["data"] = _follow_geometry(
                base.model, changes.get("model", base.model), changes.get("data", base.data),
                set(data.get("model", {})), set(data.get("data", {})),
            )
        return dataclasses.replace(base, **changes)

    def save(self, path: str | os.PathLike) -> None:
        """Write the config as YAML (`.yaml`/`.yml`) or JSON, atomically."""
        path = os.fspath(path)
        if path.endswith((".yaml", ".yml")):
            text = yaml.dump(self.to_dict(), Dumper=ConfigDumper, sort_keys=False)
        else:
            text = json.dumps(self.to_dict(), indent=2)
        atomic_write(path, text.encode())

    @classmethod
    def load(cls, path: str | os.PathLike, base: ExperimentConfig | None = None) -> ExperimentConfig:
        """A config file (YAML or JSON) applied on top of `base`."""
        problem = not_a_file(path)
        if problem:
            raise ConfigError(f"{path}: {problem}")
        with open(path) as f:
            text = f.read(MAX_CONFIG_BYTES + 1)
        if len(text) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: more than {MAX_CONFIG_BYTES} characters; not a config file")
        try:
            data = load_yaml(text, os.fspath(path), ConfigLoader)  # aliases bounded: a 'billion laughs' is refused
        except ValueError as e:
            raise ConfigError(str(e)) from e
        try:
            return cls.from_dict(data or {}, base)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from e

    def override(self, assignments: list[str]) -> ExperimentConfig:
        """A copy with `section.field=value` assignments applied together, in the grammar of
        `--set` on every command (`mbt.overrides.parse_assignments`)."""
        return self.from_dict(parse_assignments(assignments), self)


_SECTIONS = ("model", "data", "dataset", "train")

FORMAT_SPECIFIC = ("train", "val", "test", "classes", "verb_classes", "noun_classes", "path_pattern",
                   "train_split", "val_split", "test_split", "trimmed")
"""`DatasetConfig` fields that belong to one annotation format (a preset's file names, its class
list, its split values): a change of `dataset.format` resets those it does not set itself."""

MODEL_GEOMETRY = ("num_frames", "image_size", "spectrogram_size")
DATA_GEOMETRY = ("num_frames", "image_size", "audio_seconds", "num_mel_bins", "hop_ms")
"""The clip geometry, set in either section: the other section follows (`_follow_geometry`)."""


def _compose_dataset(base: DatasetConfig, values: dict[str, Any], preset: str) -> dict[str, Any]:
    """`values` plus the resets a change of `dataset.format` implies: a preset's AudioSet
    file names and class list mean nothing to a folder of videos, so they are dropped (with a
    note) unless set in the same change; a hold-out of validation needs annotation files."""
    new_format = values.get("format", base.format)
    if new_format == base.format:
        return values
    defaults = DatasetConfig()
    values = dict(values)
    dropped = []
    for name in FORMAT_SPECIFIC:
        if name not in values and getattr(base, name) != getattr(defaults, name):
            dropped.append(f"{name}={_plain(getattr(base, name))}")
            values[name] = getattr(defaults, name)
    if new_format in (SHARDS, SYNTHETIC):  # subsets are chosen from annotation files (or when preparing shards)
        for name in ("val_fraction", "balanced_subset"):
            if name not in values and getattr(base, name) != getattr(defaults, name):
                dropped.append(f"{name}={_plain(getattr(base, name))}")
                values[name] = getattr(defaults, name)
    if dropped:
        warnings.warn(f"dataset.format {base.format!r} -> {new_format!r}: the {base.format} fields of "
                      f"{preset!r} are dropped: {', '.join(dropped)}", stacklevel=4)
    return values


def _plain(value: Any) -> str:
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def _follow_geometry(old: MBTConfig, model: MBTConfig, data: DataConfig, model_keys: set[str],
                     data_keys: set[str]) -> tuple[MBTConfig, DataConfig]:
    """One clip geometry for both sections: set in `model` (frames, image size, spectrogram
    size), the data follows; set only in `data` (frames, crop, audio window, mel bins, hop),
    the model follows. Set in both, they must agree (`ExperimentConfig.validate`). A model
    that samples all its frames (`n_sampled_frames >= num_frames`) keeps sampling all of them."""
    set_in_model = bool(model_keys & set(MODEL_GEOMETRY))
    set_in_data = bool(data_keys & set(DATA_GEOMETRY))
    if set_in_data and not set_in_model:
        changes: dict[str, Any] = {}
        if "rgb" in model.modalities:
            changes.update(num_frames=data.num_frames, image_size=(data.image_size, data.image_size))
        if "spectrogram" in model.modalities:
            changes["spectrogram_size"] = (data.num_spectrogram_frames, data.num_mel_bins)
        model = dataclasses.replace(model, **changes)
    if (model.num_frames != old.num_frames and "n_sampled_frames" not in model_keys
            and model.temporal_encoding == "temporal_sampling"):
        if old.n_sampled_frames >= old.num_frames:
            model = dataclasses.replace(model, n_sampled_frames=model.num_frames)
        else:
            warnings.warn(f"model.num_frames {old.num_frames} -> {model.num_frames}: model.n_sampled_frames stays "
                          f"{model.n_sampled_frames} (the frames the model samples from the clip); set it to change "
                          "it", stacklevel=4)
    if set_in_model and not set_in_data:
        data = data.sized_for(model)
    return model, data


def _rebuild(section: Any, values: dict[str, Any], prefix: str) -> Any:
    """`section` rebuilt (and so validated) once with `values` set, type-checked."""
    try:
        return update(section, values, f"{prefix}.")
    except ConfigError as e:
        raise ConfigError(_cut(str(e))) from e


def _cut(message: str, limit: int = 500) -> str:
    """An error message that quotes a value from a file, cut to `limit` characters."""
    return message if len(message) <= limit else f"{message[:limit]}... ({len(message)} characters)"
