"""`AVDataset`: annotated media files -> model inputs (rgb clip, log-mel spectrogram, label).

Clip timing (seconds of file time). An item covers the segment `[start, end]` of its file, the
whole file when the annotation gives none (its duration then comes from `decode.probe`). A clip is
placed by its centre `c`:

- rgb frame `i` (of `num_frames`) is the frame shown at `c + (i - (num_frames - 1) / 2) / frame_rate`;
- the audio window is `[c - audio_seconds / 2, c + audio_seconds / 2]`, centred on the same `c`, so
  picture and sound stay aligned.

With `h` half the longest window in use (`clip_seconds` for rgb, `audio_seconds` for audio):

- train: `c ~ U[start + h, end - h]`, so the clip lies inside the segment when the segment is long
  enough (the segment middle otherwise);
- val: `c` = the segment middle (one central clip, Scenic's validation);
- test: `num_test_clips` centres evenly spaced over `[start + h, end - h]` (Scenic's linspace offsets),
  each seen through `num_test_crops` spatial crops; view `v = clip * num_test_crops + crop`, and the
  dataset has `len(items) * num_test_clips * num_test_crops` entries, views of an item consecutive.

The centre is then raised to at least `h`, so no window starts before the file does: a clip longer
than its media starts at 0 and `read_clip` fills what runs past the end according to
`DataConfig.pad_mode` ('loop' repeats the media, as Scenic repeats a short clip from its start).

Randomness (train centre, augmentation, SpecAugment) comes from a `torch.Generator` seeded by
`(seed, epoch, index)`, so an item is the same whatever the number or order of workers. The
loader passes the epoch with each index (`mbt.data.loader`); `set_epoch` serves direct indexing.

A file that cannot be decoded raises `ClipError` naming it and the cause; with `skip_bad=True` the
item comes back as a `SkippedItem`, which the loader's collate removes and counts (once per file). A
clip decoded with concealed damage (FFmpeg errors, corrupt frames) is used, and its item says so in
`damage` (empty when clean), which the loader and the trainer count per file. Items whose file is
missing raise at construction, or with `skip_bad` are dropped and listed in `dropped`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..models.config import MODALITIES
from .annotations import AnnotationError, Annotations, Item
from .batch import ClipError, SkippedItem
from .config import DataConfig
from .decode import Clip, DecodeError, media_duration, probe, read_audio, read_clip
from .features import LogMelStats
from .loader import build_loader
from .views import ClipInputs, Split, clip_centre, frame_times

PRESENCE_KEYS = {"rgb": "has_rgb", "spectrogram": "has_audio"}
"""The item key that says whether its file has each modality."""
MISSING_NOTE = {"rgb": "no video stream", "spectrogram": "no audio track"}
"""How a note names a modality its file lacks."""


def missing_note(modalities: Sequence[str], present: Sequence[str], path: str = "") -> str:
    """What a prediction from `present` of the model's `modalities` left out ('' if
    nothing); a ValueError naming the file when it has none of them."""
    absent = [m for m in modalities if m not in present]
    if not present:
        raise ValueError(f"{path}: {' and '.join(MISSING_NOTE[m] for m in absent)}: nothing this model "
                         f"({'+'.join(modalities)}) can use")
    if not absent:
        return ""
    alone = {"rgb": "the video", "spectrogram": "the sound"}
    used = " and ".join(alone[m] for m in present)
    return f"{', '.join(MISSING_NOTE[m] for m in absent)}: predicted from {used} alone"


_MAX_LISTED = 5


def check_modalities(modalities: Sequence[str]) -> None:
    """Refuse an empty or unknown choice of modalities."""
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown or not modalities:
        raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, got {list(modalities)}")


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit generator seed for one (seed, epoch, dataset index)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class AVDataset(torch.utils.data.Dataset):
    """Items of `annotations` as dicts of tensors (see `__getitem__`)."""

    def __init__(
        self,
        annotations: Annotations,
        cfg: DataConfig,
        split: Split,
        modalities: Sequence[str] = MODALITIES,
        seed: int = 0,
        skip_bad: bool = False,
    ) -> None:
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        check_modalities(modalities)
        missing = annotations.missing
        self.dropped: list[tuple[str, str]] = []
        """(path, reason) of the items left out at construction (missing files, with skip_bad)."""
        if missing and not skip_bad:
            listed = "\n".join(f"  {it.source}:{it.line}: {it.path}" for it in missing[:_MAX_LISTED])
            raise AnnotationError(
                f"{len(missing)} of {len(annotations.items)} media files are missing:\n{listed}"
                + ("\n  ..." if len(missing) > _MAX_LISTED else "")
                + "\n(fix --root / --path-pattern, or leave them out with skip_bad=True / --skip-bad)"
            )
        if missing:
            self.dropped = [(it.path, "missing file") for it in missing]
            annotations = annotations.without_missing()
        if not annotations.items:
            raise AnnotationError(f"no items to build a {split} dataset from ({', '.join(annotations.sources)})")
        self.annotations = annotations
        self.items: list[Item] = annotations.items
        self.cfg = cfg
        self.split: Split = split
        self.modalities = tuple(modalities)
        self.seed = seed
        self.skip_bad = skip_bad
        self.epoch = 0
        self.views = cfg.num_test_clips * cfg.num_test_crops if split == "test" else 1
        self.num_classes = annotations.num_classes
        self.single_label = not annotations.multi_label and not annotations.class_splits
        self.inputs = ClipInputs(cfg, split, rgb="rgb" in self.modalities)
        self._durations: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self.items) * self.views

    def set_epoch(self, epoch: int) -> None:
        """Epoch used by direct indexing (`dataset[i]`); the loader passes it with each index instead."""
        self.epoch = epoch

    # ------------------------------------------------------------------ timing
    @property
    def window_seconds(self) -> float:
        """Longest window of the modalities in use: the span a clip must fit in."""
        spans = []
        if "rgb" in self.modalities:
            spans.append(self.cfg.clip_seconds)
        if "spectrogram" in self.modalities:
            spans.append(self.cfg.audio_seconds)
        return max(spans)

    def segment(self, item: Item) -> tuple[float, float]:
        """[start, end] of the item in file time; the file's duration (`decode.media_duration`) when
        no end is given."""
        start = item.start or 0.0
        if item.end is not None:
            return start, item.end
        if item.path not in self._durations:
            self._durations[item.path] = media_duration(item.path, self.cfg.video_stream, self.cfg.audio_stream)
        return start, self._durations[item.path]

    def clip_centre(self, item: Item, view: int, generator: torch.Generator) -> float:
        """Centre of the clip for this split and view (module docstring)."""
        start, end = self.segment(item)
        return clip_centre(start, end, self.window_seconds, self.split, view, self.cfg, generator)

    def frame_times(self, centre: float) -> list[float]:
        return frame_times(centre, self.cfg)

    # ------------------------------------------------------------------ items
    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any] | SkippedItem:
        """`key` is an index, or `(epoch, index)` as the loader passes it. Returns

        - `rgb`: float32 [T, 3, H, W] in [-1, 1] (if 'rgb' in modalities),
        - `spectrogram`: float32 [T_spec, F], normalised (if 'spectrogram' in modalities),
        - `label`: float32 [num_classes] multi-hot (EPIC: noun one-hot then verb one-hot),
        - `label_index`: the class for single-label datasets, else -1,
        - `has_audio`, `has_rgb`: whether the file has the modality (a missing one is given as
          silence or as zeros, mid-grey frames, to keep batches rectangular; see "Missing
          modalities" in the README),
        - `video_id`, `clip_index` (test view k, else 0), `index`, `path`,
        - `damage`: concealed damage met decoding the clip ('' when none; `decode.Damage`).
        """
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} entries")
        item_index, view = divmod(index, self.views)
        item = self.items[item_index]
        generator = torch.Generator().manual_seed(item_seed(self.seed, epoch, index))
        try:
            sample = self._load(item, view, generator)
        except (DecodeError, OSError) as e:
            reason = f"{type(e).__name__}: {e}"
            if self.skip_bad:
                return SkippedItem(index, item.path, reason)
            raise ClipError(
                f"{item.path} (annotation {item.source}:{item.line}): cannot read the clip: {reason}"
            ) from e
        label = torch.zeros(self.num_classes, dtype=torch.float32)
        label[list(item.labels)] = 1.0
        sample.update(
            label=label,
            label_index=item.labels[0] if self.single_label and item.labels else -1,
            video_id=item.video_id,
            clip_index=view,
            index=index,
            path=item.path,
        )
        return sample

    def _load(self, item: Item, view: int, generator: torch.Generator) -> dict[str, Any]:
        cfg = self.cfg
        centre = self.clip_centre(item, view, generator)
        audio_start = max(centre - cfg.audio_seconds / 2, 0.0)
        out: dict[str, Any] = {"damage": "", "has_rgb": "rgb" in self.modalities}
        clip = self._read_clip(item.path, centre, audio_start) if "rgb" in self.modalities else None
        if clip is not None:
            audio, out["has_audio"] = clip.audio, bool(clip.has_audio)
            out["damage"] = str(clip.damage) if clip.damage else ""
        else:
            audio, out["has_audio"], out["damage"] = self._read_audio(item.path, audio_start)
        if "rgb" in self.modalities and clip is None:  # an audio-only file: mid-grey frames
            out["has_rgb"] = False
            out["rgb"] = torch.zeros(cfg.num_frames, 3, cfg.image_size, cfg.image_size)
        out.update(self.inputs(clip.rgb if clip is not None else None,
                               audio if "spectrogram" in self.modalities else None, view, generator))
        return out

    def _read_clip(self, path: str, centre: float, audio_start: float) -> Clip | None:
        """Frames and audio of the clip; None for an audio-only file (no video stream)."""
        cfg = self.cfg
        try:
            return read_clip(
                path,
                self.frame_times(centre),
                audio_start=audio_start,
                audio_seconds=cfg.audio_seconds if "spectrogram" in self.modalities else 0.0,
                sample_rate=cfg.sample_rate,
                pad_mode=cfg.pad_mode,
                resize_short_side=cfg.min_resize,
                shrink_only=True,  # the transforms resize anyway: never upscale in FFmpeg
                video_stream=cfg.video_stream,
                audio_stream=cfg.audio_stream,
            )
        except DecodeError:
            if probe(path, video_stream=cfg.video_stream).video is not None:  # a real failure, not a missing stream
                raise
            return None

    def _read_audio(self, path: str, start: float) -> tuple[np.ndarray, bool, str]:
        """The audio window alone (audio-only files welcome), whether the file has audio, and the
        concealed damage met ('' if none); silence for a file without audio."""
        cfg = self.cfg
        try:
            audio, info = read_audio(path, start, cfg.audio_seconds, cfg.sample_rate, cfg.pad_mode, cfg.audio_stream)
            return audio, True, str(info.damage) if info.damage else ""
        except DecodeError:
            if probe(path, audio_stream=cfg.audio_stream).has_audio:  # a real decoding failure, not a missing track
                raise
            return np.zeros(round(cfg.audio_seconds * cfg.sample_rate), dtype=np.float32), False, ""


class InMemoryDataset(torch.utils.data.Dataset):
    """The items of a deterministic dataset (a 'val' or 'test' `AVDataset`), decoded once
    and kept in memory: for data sets small enough to hold, evaluated or trained on for
    many epochs without decoding again. Indexing as `AVDataset` (index or (epoch, index))."""

    def __init__(self, dataset: AVDataset, num_workers: int = 0, progress: bool = False, desc: str = "decode"):
        from tqdm.auto import tqdm

        self.annotations, self.modalities = dataset.annotations, tuple(dataset.modalities)
        self.views, self.num_classes = dataset.views, dataset.num_classes
        self.dropped = list(getattr(dataset, "dropped", []))
        loader = build_loader(dataset, batch_size=1, train=False, num_workers=num_workers)
        self.items: list[dict[str, Any]] = []
        for batch in tqdm(loader, desc=desc, unit="clip", disable=not progress):
            for i in range(batch["batch_size"]):
                self.items.append({k: (v[i] if isinstance(v, (torch.Tensor, list)) else v)
                                   for k, v in batch.items() if k not in ("batch_size", "skipped")})
        self.skipped, self.damaged = loader.skipped, loader.damaged

    def with_modalities(self, modalities: Sequence[str]) -> InMemoryDataset:
        """A view of the same items that gives only `modalities`."""
        view = object.__new__(InMemoryDataset)
        view.__dict__.update(self.__dict__)
        view.modalities = tuple(m for m in self.modalities if m in modalities)
        return view

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        item = self.items[key[1] if isinstance(key, tuple) else key]
        return {k: v for k, v in item.items() if k not in MODALITIES or k in self.modalities}


# ---------------------------------------------------------------------- stats
def spectrogram_stats(
    dataset: AVDataset, max_items: int | None = None, num_workers: int = 0
) -> dict[str, Any]:
    """Mean and std of the log-mel over the dataset's central clips, before normalisation.

    Items without an audio track are left out (their silence would pull the statistics) and
    counted; unreadable items count as skipped when the dataset skips bad items."""
    if dataset.modalities != ("spectrogram",) or dataset.split != "val":
        raise ValueError("spectrogram_stats needs a 'val' dataset with modalities=('spectrogram',)")
    items = dataset.items
    if max_items is not None and max_items < len(items):
        items = [items[i] for i in np.unique(np.linspace(0, len(items) - 1, max_items).round().astype(int))]
    raw = dataclasses.replace(dataset.cfg, spec_mean=0.0, spec_std=1.0)
    subset = AVDataset(
        dataclasses.replace(dataset.annotations, items=items), raw, "val", ("spectrogram",), skip_bad=dataset.skip_bad
    )
    loader = build_loader(subset, batch_size=8, train=False, num_workers=num_workers)
    stats = LogMelStats()
    items = no_audio = 0
    for batch in loader:
        spec = batch["spectrogram"][batch["has_audio"]]
        no_audio += int((~batch["has_audio"]).sum())
        items += spec.shape[0]
        stats.update(spec)
    if stats.count == 0:
        raise ValueError("no item with audio to compute spectrogram statistics from")
    return {
        "spec_mean": stats.mean,
        "spec_std": stats.std,
        "items": items,
        "values": stats.count,
        "items_without_audio": no_audio,
        "skipped": [list(s) for s in loader.skipped] + [list(d) for d in dataset.dropped],
    }
