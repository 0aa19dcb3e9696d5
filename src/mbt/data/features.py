"""Log-mel spectrograms with `torch.stft` (CPU or GPU, one clip or a batch).

The convention is DMVR's ``logmf`` (the TF pipeline Scenic's MBT data was built with), at
the paper's 25 ms / 10 ms / 128 bins:

* frames of ``window_ms`` (400 samples at 16 kHz) every ``hop_ms`` (160 samples), not
  centred: frame ``i`` starts at sample ``i * hop``; the end is zero-padded so a waveform of
  ``S`` samples gives exactly ``round(S / hop)`` frames (8 s -> 800);
* periodic Hann window, FFT length = window length (no zero padding: 201 bins at 16 kHz);
* STFT **magnitude** (not power) through an HTK-mel filterbank of triangles with peak 1,
  linear in mel, from `MEL_FMIN_HZ` to `MEL_FMAX_HZ`, DC bin excluded
  (``tf.signal.linear_to_mel_weight_matrix``);
* natural log with offset `LOG_OFFSET`: silence gives ``log(1e-6) = -13.8155``.

With 40 Hz FFT bins and low mel bands only ~15 Hz apart, 3 of the 128 bands (0, 3, 8)
catch no FFT bin and always sit at that floor: a property of this convention (torchaudio
warns about the same for n_fft=400 with 128 mels), harmless after normalisation.

`log_mel` returns ``[..., T, F]`` (time, mel), normalised with ``DataConfig.spec_mean`` /
``spec_std`` unless asked not to. `LogMelStats` accumulates those statistics over a set
of clips.

`kaldi_fbank` is the other front end (``DataConfig.frontend='kaldi_fbank'``): Kaldi's
filterbank as AST, CAV-MAE and AudioMAE compute it with ``torchaudio.compliance.kaldi.fbank``,
in plain torch, for models started from those encoders. `spectrogram` is the one function
that turns a clip's audio into the model's input with the configured front end.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import nn

from .config import DataConfig

__all__ = [
    "KALDI_LOG_FLOOR",
    "KALDI_MEL_FMIN_HZ",
    "LOG_OFFSET",
    "MEL_FMAX_HZ",
    "MEL_FMIN_HZ",
    "LogMel",
    "LogMelStats",
    "fit_frames",
    "hz_to_mel",
    "kaldi_fbank",
    "log_mel",
    "mel_filterbank",
    "normalize_spectrogram",
    "spectrogram",
]

MEL_FMIN_HZ = 80.0
"""Lower edge of the lowest mel band (DMVR's default)."""
MEL_FMAX_HZ = 7600.0
"""Upper edge of the highest mel band (DMVR's default; below the 8 kHz Nyquist at 16 kHz)."""
LOG_OFFSET = 1e-6
"""Added to the mel magnitudes before the natural log (DMVR's value)."""
KALDI_MEL_FMIN_HZ = 20.0
"""Lower edge of Kaldi's lowest mel band (its `low_freq` default); the top is Nyquist."""
KALDI_LOG_FLOOR = 1.1920929e-07
"""Kaldi floors the mel energies at float32's machine epsilon before the log."""


def hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    """HTK mel scale: ``1127 ln(1 + f / 700)`` (= ``2595 log10(1 + f / 700)``)."""
    return 1127.0 * torch.log1p(hz / 700.0)


def mel_filterbank(num_mel_bins: int, n_fft: int, sample_rate: int,
                   fmin: float = MEL_FMIN_HZ, fmax: float = MEL_FMAX_HZ) -> torch.Tensor:
    """``[n_fft // 2 + 1, num_mel_bins]`` weights: triangles linear in mel with peak 1 and
    band edges evenly spaced in mel; the DC bin gets no weight."""
    if not 0 <= fmin < fmax <= sample_rate / 2:
        raise ValueError(f"need 0 <= fmin < fmax <= sample_rate/2, got {fmin}, {fmax}, {sample_rate}")
    num_bins = n_fft // 2 + 1
    bin_mel = hz_to_mel(torch.linspace(0.0, sample_rate / 2, num_bins, dtype=torch.float64))[1:, None]
    edges = torch.linspace(float(hz_to_mel(torch.tensor(fmin, dtype=torch.float64))),
                           float(hz_to_mel(torch.tensor(fmax, dtype=torch.float64))),
                           num_mel_bins + 2, dtype=torch.float64)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bin_mel - lower) / (center - lower)
    falling = (upper - bin_mel) / (upper - center)
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)
    return torch.cat([torch.zeros(1, num_mel_bins, dtype=torch.float64), weights]).float()


class LogMel(nn.Module):
    """Waveform ``[..., S]`` -> log-mel ``[..., round(S / hop), num_mel_bins]``; holds the
    window and the filterbank as buffers (built once, moved with ``.to(device)``)."""

    def __init__(self, sample_rate: int = 16000, window_ms: float = 25.0, hop_ms: float = 10.0,
                 num_mel_bins: int = 128):
        super().__init__()
        self.win_length = round(sample_rate * window_ms / 1000.0)
        self.hop_length = round(sample_rate * hop_ms / 1000.0)
        if self.win_length < 2 or self.hop_length < 1:
            raise ValueError(f"window {window_ms} ms / hop {hop_ms} ms too short at {sample_rate} Hz")
        self.register_buffer("window", torch.hann_window(self.win_length, periodic=True), persistent=False)
        self.register_buffer("filterbank", mel_filterbank(num_mel_bins, self.win_length, sample_rate),
                             persistent=False)

    def num_frames(self, num_samples: int) -> int:
        return round(num_samples / self.hop_length)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        lead, num_samples = waveform.shape[:-1], waveform.shape[-1]
        frames = self.num_frames(num_samples)
        x = waveform.reshape(-1, num_samples).to(self.window.dtype)
        needed = (frames - 1) * self.hop_length + self.win_length
        if needed > num_samples:
            x = nn.functional.pad(x, (0, needed - num_samples))
        spec = torch.stft(x, n_fft=self.win_length, hop_length=self.hop_length, win_length=self.win_length,
                          window=self.window, center=False, return_complex=True)
        magnitude = spec.abs()[..., :frames].transpose(-1, -2)  # [N, T, bins]
        mel = torch.log(magnitude @ self.filterbank + LOG_OFFSET)
        return mel.reshape(*lead, frames, mel.shape[-1])


@functools.lru_cache(maxsize=16)
def _cached(sample_rate: int, window_ms: float, hop_ms: float, num_mel_bins: int,
            device: str) -> LogMel:
    return LogMel(sample_rate, window_ms, hop_ms, num_mel_bins).to(device)


def normalize_spectrogram(spec: torch.Tensor, cfg: DataConfig) -> torch.Tensor:
    """``(x - spec_mean) / spec_std``: so SpecAugment's masked value 0 is the dataset mean."""
    return (spec - cfg.spec_mean) / cfg.spec_std


def log_mel(waveform: torch.Tensor | np.ndarray, cfg: DataConfig, *, normalize: bool = True) -> torch.Tensor:
    """Log-mel spectrogram ``[..., T, num_mel_bins]`` of a mono waveform ``[..., S]`` at
    ``cfg.sample_rate``, on the waveform's device; normalised unless ``normalize=False``."""
    if isinstance(waveform, np.ndarray):
        waveform = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))
    module = _cached(cfg.sample_rate, cfg.window_ms, cfg.hop_ms, cfg.num_mel_bins, str(waveform.device))
    spec = module(waveform)
    return normalize_spectrogram(spec, cfg) if normalize else spec


# ---------------------------------------------------------------------- Kaldi fbank
@functools.lru_cache(maxsize=16)
def _kaldi_tables(sample_rate: int, win_length: int, n_fft: int, num_mel_bins: int, device: str,
                  dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The symmetric Hann window and the ``[n_fft // 2 + 1, num_mel_bins]`` filterbank of
    Kaldi's ``get_mel_banks``: triangles with peak 1 in mel space, edges evenly spaced in mel
    from `KALDI_MEL_FMIN_HZ` to Nyquist; the Nyquist bin gets no weight. The filterbank is
    computed in float32, step by step as torchaudio does (even for float64 features), so
    tiny weights at the triangles' feet round as they did for the encoders' training data."""
    nyquist = sample_rate / 2
    if nyquist <= KALDI_MEL_FMIN_HZ:
        raise ValueError(f"sample_rate {sample_rate}: Nyquist is not above {KALDI_MEL_FMIN_HZ} Hz")
    lo, hi = (1127.0 * math.log(1.0 + f / 700.0) for f in (KALDI_MEL_FMIN_HZ, nyquist))
    delta = (hi - lo) / (num_mel_bins + 1)
    band = torch.arange(num_mel_bins, dtype=torch.float32)[None]
    left, centre, right = lo + band * delta, lo + (band + 1.0) * delta, lo + (band + 2.0) * delta
    hz = (sample_rate / n_fft) * torch.arange(n_fft // 2, dtype=torch.float32)
    mel = (1127.0 * (1.0 + hz / 700.0).log())[:, None]
    weights = torch.clamp(torch.minimum((mel - left) / (centre - left), (right - mel) / (right - centre)), min=0.0)
    weights = torch.cat([weights, torch.zeros(1, num_mel_bins)])
    window = torch.hann_window(win_length, periodic=False, dtype=dtype)
    return window.to(device), weights.to(device, dtype)


def kaldi_fbank(waveform: torch.Tensor | np.ndarray, sample_rate: int = 16000, num_mel_bins: int = 128, *,
                window_ms: float = 25.0, hop_ms: float = 10.0) -> torch.Tensor:
    """Kaldi log mel filterbank ``[..., T, num_mel_bins]`` of a mono waveform ``[..., S]``,
    as AST, CAV-MAE and AudioMAE compute it (``torchaudio.compliance.kaldi.fbank(wav -
    wav.mean(), htk_compat=True, use_energy=False, window_type='hanning', dither=0.0, ...)``,
    which mbt does not depend on): the waveform minus its mean; frames of 25 ms every 10 ms
    that fit inside it (``snip_edges``: ``T = 1 + (S - 400) // 160`` at 16 kHz, 998 for 10 s);
    per frame, DC removal, pre-emphasis 0.97 (the first sample against itself) and a
    symmetric Hann window; zero-padded to the next power of two (512); power spectrum; the
    Kaldi mel filterbank; ``log(max(x, KALDI_LOG_FLOOR))``. float64 input stays float64,
    anything else is computed in float32."""
    x = torch.as_tensor(waveform)
    x = x if x.dtype == torch.float64 else x.float()
    win_length = int(sample_rate * window_ms * 0.001)  # Kaldi truncates (551 samples at 22.05 kHz)
    hop_length = int(sample_rate * hop_ms * 0.001)
    if win_length < 2 or hop_length < 1:
        raise ValueError(f"window {window_ms} ms / hop {hop_ms} ms too short at {sample_rate} Hz")
    n_fft = 1 << (win_length - 1).bit_length()
    window, filterbank = _kaldi_tables(sample_rate, win_length, n_fft, num_mel_bins, str(x.device), x.dtype)
    lead, num_samples = x.shape[:-1], x.shape[-1]
    if num_samples < win_length:
        return x.new_zeros(*lead, 0, num_mel_bins)
    x = x - x.mean(-1, keepdim=True)
    frames = x.unfold(-1, win_length, hop_length)  # [..., T, win]
    frames = frames - frames.mean(-1, keepdim=True)
    previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
    frames = (frames - 0.97 * previous) * window
    power = torch.fft.rfft(frames, n=n_fft).abs().pow(2)
    return torch.log(torch.clamp(power @ filterbank, min=KALDI_LOG_FLOOR))


# ---------------------------------------------------------------------- the model's input
def fit_frames(spec: torch.Tensor, frames: int) -> torch.Tensor:
    """``[..., T, F]`` cut to, or zero-padded at the end to, `frames` time steps (AST's rule,
    applied to the raw features before normalisation)."""
    have = spec.shape[-2]
    if have >= frames:
        return spec[..., :frames, :]
    return nn.functional.pad(spec, (0, 0, 0, frames - have))


def spectrogram(waveform: torch.Tensor | np.ndarray, cfg: DataConfig, *, normalize: bool = True) -> torch.Tensor:
    """The model's spectrogram input ``[..., num_spectrogram_frames, num_mel_bins]`` of a mono
    waveform at ``cfg.sample_rate``: the ``cfg.frontend`` features, cut or zero-padded to
    ``cfg.num_spectrogram_frames``, then normalised with ``spec_mean`` / ``spec_std`` (unless
    ``normalize=False``). Every path from audio to a model goes through here."""
    if isinstance(waveform, np.ndarray):
        waveform = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))
    if cfg.frontend == "kaldi_fbank":
        raw = kaldi_fbank(waveform, cfg.sample_rate, cfg.num_mel_bins, window_ms=cfg.window_ms, hop_ms=cfg.hop_ms)
    else:
        raw = log_mel(waveform, cfg, normalize=False)
    raw = fit_frames(raw, cfg.num_spectrogram_frames)
    return normalize_spectrogram(raw, cfg) if normalize else raw


class LogMelStats:
    """Running mean and standard deviation of log-mel values over many clips (float64
    sums), for ``DataConfig.spec_mean`` / ``spec_std``."""

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.total_sq = 0.0

    def update(self, spec: torch.Tensor) -> None:
        x = spec.detach().double()
        self.count += x.numel()
        self.total += float(x.sum())
        self.total_sq += float((x * x).sum())

    @property
    def mean(self) -> float:
        return self.total / self.count

    @property
    def std(self) -> float:
        return math.sqrt(max(self.total_sq / self.count - self.mean**2, 0.0))
