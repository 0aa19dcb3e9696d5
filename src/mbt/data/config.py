"""`DataConfig`: how a video file becomes model inputs (the paper's recipe, spec §4)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..models.config import MBTConfig

FRONTENDS = ("log_mel", "kaldi_fbank")
"""Values of `DataConfig.frontend` (`mbt.data.features`)."""


@dataclass
class DataConfig:
    """Clip sampling, features and augmentation. Defaults follow Scenic's AudioSet recipe,
    with the 32 frames at stride 2 (12.5 frames/s over 2.56 s) that the official config
    reads thinned to the 8 frames MBT-B's temporal sampling keeps (3.125 frames/s over the
    same 2.56 s)."""

    # ---- rgb
    num_frames: int = 8
    """Frames per clip given to the model."""
    frame_rate: float = 3.125
    """Frames per second inside a clip: frames are `1/frame_rate` s apart in video time
    (by timestamps, so variable frame rates are honoured)."""
    image_size: int = 224
    """Side of the square crop."""
    min_resize: int = 256
    """Short side after resizing, before the crop."""

    # ---- audio
    sample_rate: int = 16000
    """Audio is resampled to mono at this rate."""
    audio_seconds: float = 8.0
    """Audio window per clip; 8 s -> 800 spectrogram frames."""
    num_mel_bins: int = 128
    """Mel bands of the log-mel spectrogram."""
    window_ms: float = 25.0
    """STFT window length."""
    hop_ms: float = 10.0
    """STFT hop: 10 ms gives 100 spectrogram frames per second."""
    frontend: str = "log_mel"
    """Spectrogram features (`mbt.data.features`): 'log_mel' (DMVR's log-mel, the convention
    Scenic's MBT data was built with) or 'kaldi_fbank' (Kaldi's log mel filterbank as AST,
    CAV-MAE and AudioMAE compute it: for models started from those encoders, with the
    encoder's own `spec_mean` / `spec_std` and `target_length`)."""
    target_length: int | None = None
    """Spectrogram frames given to the model: the raw features of the audio window are cut, or
    zero-padded at the end, to this length, then normalised (AST's order: 10 s of audio give
    998 Kaldi frames, padded to 1024, and a padded frame normalises to 0.467 with AST's
    statistics). None: ``round(audio_seconds / hop_ms)`` frames (800 for 8 s)."""
    spec_mean: float = -2.37
    """Mean of the log-mel (`mbt.data.features` convention) over the training set, subtracted.
    The default was measured on 11 real clips (6 ESC-50, a VGGSound and an AudioSet clip, 3
    video soundtracks; 5176 frames, digitally silent padding frames left out), see
    docs/benchmarks.md; run `mbt data stats` on your own training set for exact values.
    (Scenic's 1.102 belongs to a different, unpublished log-mel convention.)"""
    spec_std: float = 2.62
    """Standard deviation of the log-mel over the training set, divided by (measured with
    `spec_mean`)."""

    pad_mode: str = "loop"
    """How a clip shorter than its window is filled: 'loop' repeats the media cyclically
    (Scenic's behaviour), 'zeros' pads audio with silence and repeats the last frame."""
    video_stream: int | None = None
    """Container index of the video stream to read; None: the one marked default, else the
    first."""
    audio_stream: int | None = None
    """Container index of the audio stream to read; None: the one marked default, else the
    first."""

    # ---- training augmentation (spec §4.2, §4.3)
    scale_jitter: tuple[float, float] = (0.9, 1.33)
    """Independent height and width scale factors drawn from this range before the crop."""
    flip: bool = True
    """Random horizontal flip with p=0.5."""
    color_jitter_prob: float = 0.8
    """Probability of brightness/contrast/saturation/hue jitter (same for all frames)."""
    color_drop_prob: float = 0.1
    """Probability of turning the clip grey."""
    freq_mask_max_bins: int = 48
    """SpecAugment: widest frequency mask."""
    freq_mask_count: int = 1
    """SpecAugment: frequency masks per example."""
    time_mask_max_frames: int = 48
    """SpecAugment: widest time mask."""
    time_mask_count: int = 0
    """SpecAugment: time masks per example (the official config's effective value is 0)."""

    # ---- evaluation
    num_test_clips: int = 4
    """Evenly spaced clips per video at test time; their logits are averaged."""
    num_test_crops: int = 1
    """Spatial crops per clip at test time (1: centre; 3: left/centre/right or top/centre/bottom)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataConfig:
        from ..overrides import from_dict

        return from_dict(cls, data)

    def __post_init__(self) -> None:
        from ..models.config import ConfigError

        self.scale_jitter = tuple(self.scale_jitter)
        if self.frontend not in FRONTENDS:
            raise ConfigError(f"data.frontend: expected one of {list(FRONTENDS)}, got {self.frontend!r}")
        if self.target_length is not None and self.target_length < 1:
            raise ConfigError(f"data.target_length: must be a positive frame count or null, got {self.target_length}")

    def sized_for(self, model: MBTConfig) -> DataConfig:
        """A copy with the clip geometry of `model`: frames and crop for rgb, window and mel
        bins (at this `hop_ms`) for the spectrogram. The model config is the one source of
        geometry; `ExperimentConfig` rejects a data config that disagrees with it."""
        from ..errors import ConfigError

        changes: dict[str, Any] = {}
        if "rgb" in model.modalities:
            h, w = model.image_size
            if h != w:
                raise ConfigError(f"model.image_size={[h, w]}: the data pipeline crops square frames")
            changes.update(num_frames=model.num_frames, image_size=h)
        if "spectrogram" in model.modalities:
            frames, bins = model.spectrogram_size
            if self.target_length is None:
                changes.update(audio_seconds=frames * self.hop_ms / 1000.0)
            else:
                changes.update(target_length=frames)
            changes.update(num_mel_bins=bins)
        return dataclasses.replace(self, **changes)

    def check_fits(self, model: MBTConfig) -> None:
        """Raise `ConfigError` naming the fields when the inputs this recipe makes do not have
        the shapes `model` takes (a saved model's recipe edited by hand, a wrong override)."""
        from ..models.config import ConfigError

        if "rgb" in model.modalities:
            if model.num_frames != self.num_frames:
                raise ConfigError(f"model.num_frames={model.num_frames} differs from data.num_frames={self.num_frames}")
            if model.image_size != (self.image_size, self.image_size):
                raise ConfigError(
                    f"model.image_size={list(model.image_size)} differs from data.image_size={self.image_size}"
                )
        if "spectrogram" in model.modalities:
            want = (self.num_spectrogram_frames, self.num_mel_bins)
            if model.spectrogram_size != want:
                source = "data.target_length" if self.target_length is not None else "data.audio_seconds, data.hop_ms"
                raise ConfigError(
                    f"model.spectrogram_size={list(model.spectrogram_size)} differs from the data's "
                    f"[num_spectrogram_frames, num_mel_bins]={list(want)} ({source}, data.num_mel_bins)"
                )

    @property
    def num_spectrogram_frames(self) -> int:
        """Spectrogram time bins per clip: `target_length`, else 800 for 8 s at a 10 ms hop."""
        if self.target_length is not None:
            return self.target_length
        return round(self.audio_seconds * 1000.0 / self.hop_ms)

    @property
    def clip_seconds(self) -> float:
        """Span of the rgb frames of one clip."""
        return self.num_frames / self.frame_rate


def load_data_config(directory: str | os.PathLike) -> DataConfig:
    """The `DataConfig` saved with a model (a `save_pretrained` folder or `hf-hub:org/name`), or the defaults
    if none was saved."""
    from ..models.hub import resolve_model_dir
    from ..models.pretrained import read_config

    data = read_config(resolve_model_dir(directory)).get("data")
    return DataConfig.from_dict(data) if data else DataConfig()
