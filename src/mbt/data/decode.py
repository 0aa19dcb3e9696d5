"""Decoding clips from video files with PyAV: only the frames and the audio window a clip needs.

Conventions (all times in seconds):

* Time 0 is the container's start time (FFmpeg's ``start_time``), so the video and audio
  timelines share one origin and a clip's audio lines up with its frames by timestamps.
* The frame shown at time ``t`` is the last frame whose presentation time is ``<= t``
  (within 1 µs); a time before the first frame gets the first frame. Variable frame rates
  are therefore honoured. Timestamps follow FFmpeg's ``best_effort_timestamp`` rule: when
  a stream's pts are not monotonic (e.g. packed B-frames in AVI) its dts are used.
* Audio is resampled by FFmpeg (``av.AudioResampler``) to float32 at ``sample_rate``, made
  mono as the mean of the channels (as librosa and torchaudio do; FFmpeg's own downmix
  would scale by 1/sqrt(2) instead), and placed by the resampler's output timestamps (to
  within half a sample); the window ``[audio_start, audio_start + audio_seconds)`` always
  has exactly ``round(audio_seconds * sample_rate)`` samples.
* Past the end of the media (``pad_mode``): ``'loop'`` reads the media cyclically, frame
  times modulo the video duration and audio samples modulo the track length (Scenic/DMVR
  repeat a too-short clip the same way); ``'zeros'`` repeats the last frame and fills
  audio with silence.
* Rotation (display-matrix side data, or the legacy ``rotate`` tag) is applied to the
  frames in multiples of 90°; mirror flips in the matrix are ignored.
* Any file that cannot be read (missing, a directory, empty, not media, truncated, no
  decodable frame) raises `DecodeError` naming the file and the cause; so does a still image
  (JPEG, PNG, ...: an image demuxer) given to `read_clip`, which is no video.
* Damage that FFmpeg conceals (a decoder that logs errors and outputs repaired or corrupt
  frames) is counted, not hidden: `Clip.damage` and, with ``count_frames``, `MediaInfo.damage`.
* Streams: the video and audio streams marked default by the container, else the first of
  each kind (cover pictures left out); ``video_stream`` / ``audio_stream`` pick one by its
  container index.

Only what a clip needs is decoded: the frames and the audio are read in separate runs, each
from its own seek point (`ClipReader._seek_target` has the policy), and the GOPs before
the first frame and the audio packets outside the window (less a short pre-roll) are
demuxed but not decoded. docs/benchmarks.md has the measurements behind these choices.

Modules: this one is the API (`probe`, `media_duration`, `read_clip`, `read_audio`); `media` opens a
file (errors, damage accounting, stream facts, `Clip`); `feeds` decodes (frame pickers, the audio
sink, `ClipReader`, the feeds of `mbt.timeline`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import av
import numpy as np

# The private names `mbt.timeline` (the feeds) and benchmarks/bench_data.py (`ClipReader`) read from here.
from .feeds import AudioFeed, ClipReader, Converter, VideoFeed, rotate  # noqa: F401
from .media import (
    PAD_MODES,
    AudioStreamInfo,
    Clip,
    Damage,
    DamageLog,
    DecodeError,
    Media,
    MediaInfo,
    VideoStreamInfo,
    frame_rotation,
    normalise_rotation,  # noqa: F401
    packets_end,
)

__all__ = [
    "AudioStreamInfo",
    "Clip",
    "Damage",
    "DecodeError",
    "MediaInfo",
    "VideoStreamInfo",
    "media_duration",
    "probe",
    "read_audio",
    "read_clip",
]


def probe(path: str | os.PathLike[str], count_frames: bool = False, video_stream: int | None = None,
          audio_stream: int | None = None) -> MediaInfo:
    """Describe the video and audio streams taken from ``path`` (module docstring).

    Decodes the first video frame (to read its rotation and prove the file decodes); with
    ``count_frames`` it decodes everything and fills ``decoded_frames`` / ``decoded_samples``
    and ``damage``.
    """
    path = os.fspath(path)
    with Media(path, video_stream=video_stream, audio_stream=audio_stream) as media:
        info = media.info
        try:
            if media.vstream is not None:
                first = next(media.decode(media.vstream), None)
                if first is None:
                    raise DecodeError(f"{path}: the video stream has no decodable frame")
                info.video.rotation = frame_rotation(first, media.vstream)  # type: ignore[union-attr]
            if count_frames:
                info.damage = Damage()
                with DamageLog(info.damage) as log:
                    if media.vstream is not None:
                        media.reopen()  # image demuxers cannot seek back to their one frame
                        frames = log.frames(media.decode(media.vstream))
                        v = info.video
                        v.decoded_frames = sum(1 for _ in frames)  # type: ignore[union-attr]
                        info.damage.missing_frames = max((v.frame_count or 0) - v.decoded_frames, 0)  # type: ignore[union-attr]
                    if media.astream is not None:
                        media.rewind()
                        frames = log.frames(media.decode(media.astream))
                        info.audio.decoded_samples = sum(f.samples for f in frames)  # type: ignore[union-attr]
        except av.FFmpegError as e:
            raise DecodeError(f"{path}: {e}") from e
    return info


def media_duration(path: str | os.PathLike[str], video_stream: int | None = None,
                   audio_stream: int | None = None) -> float:
    """Length of the media (s): the container's duration, else the longest of its streams'
    (header), else the end of the last packet of the streams taken (a demux pass, nothing
    decoded), for files that store none (live WebM/Matroska). Raises `DecodeError` when
    there is none or it is zero."""
    path = os.fspath(path)
    with Media(path, video_stream=video_stream, audio_stream=audio_stream) as media:
        info = media.info
        streams = [s for s in (info.video, info.audio) if s is not None]
        duration = info.duration or max((s.duration or 0.0 for s in streams), default=0.0)
        if not duration:
            try:
                duration = packets_end(media, [s for s in (media.vstream, media.astream) if s is not None]) or 0.0
            except av.FFmpegError as e:
                raise DecodeError(f"{path}: {e}") from e
    if not duration > 0:
        raise DecodeError(f"{path}: unknown or zero duration (neither the container, the streams nor "
                          "the packets give one)")
    return float(duration)

def read_clip(
    path: str | os.PathLike[str],
    frame_times: Sequence[float],
    audio_start: float,
    audio_seconds: float,
    sample_rate: int = 16000,
    pad_mode: str = "loop",
    resize_short_side: int | None = None,
    *,
    shrink_only: bool = False,
    threads: int = 1,
    video_stream: int | None = None,
    audio_stream: int | None = None,
) -> Clip:
    """Decode the frames shown at ``frame_times`` and the audio window starting at
    ``audio_start`` (see the module docstring for the conventions).

    ``resize_short_side`` resizes the frames in FFmpeg (bilinear, aspect kept) so their
    short side has that length: much cheaper than converting full-size frames and
    resizing afterwards. With ``shrink_only`` frames whose short side is already at most
    that length are left as they are (for training, where `VideoTransform` resizes its
    crop anyway and an upscale here would only cost time). ``threads`` is the video
    decoder's thread count (1 suits data-loader workers, one per core; 0 lets FFmpeg
    choose). ``video_stream`` / ``audio_stream`` pick streams by container index.
    """
    path = os.fspath(path)
    _check_args(frame_times, audio_start, audio_seconds, sample_rate, pad_mode)
    if resize_short_side is not None and resize_short_side < 1:
        raise ValueError(f"resize_short_side must be >= 1, got {resize_short_side}")
    with Media(path, threads, video_stream, audio_stream) as media:
        if media.vstream is None:
            raise DecodeError(f"{path}: no video stream (use read_audio for audio-only files)")
        if media.info.still_image:
            raise DecodeError(f"{path}: a still image ({media.info.video.codec}), not a video; "  # type: ignore[union-attr]
                              "mbt reads video files (make a video of it first, e.g. "
                              "ffmpeg -loop 1 -i IMAGE -t 1 out.mp4)")
        try:
            reader = ClipReader(media, frame_times, audio_start, audio_seconds, sample_rate, pad_mode,
                                 Converter(resize_short_side, shrink_only))
            with DamageLog(reader.damage):
                return reader.read()
        except av.FFmpegError as e:
            raise DecodeError(f"{path}: {e}") from e


def read_audio(
    path: str | os.PathLike[str],
    start: float,
    seconds: float,
    sample_rate: int = 16000,
    pad_mode: str = "loop",
    audio_stream: int | None = None,
) -> tuple[np.ndarray, MediaInfo]:
    """Mono float32 audio of ``[start, start + seconds)`` from any media file (video or
    audio-only), with the same alignment and padding rules as `read_clip`, and the file's
    `MediaInfo` (``damage``: what decoding the window met). Raises `DecodeError` for a file
    without an audio stream."""
    path = os.fspath(path)
    _check_args((), start, seconds, sample_rate, pad_mode)
    with Media(path, audio_stream=audio_stream) as media:
        if media.astream is None:
            raise DecodeError(f"{path}: no audio stream")
        try:
            reader = ClipReader(media, (), start, seconds, sample_rate, pad_mode, None)
            with DamageLog(reader.damage):
                audio = reader.read_audio()
            media.info.damage = reader.damage
            return audio, media.info
        except av.FFmpegError as e:
            raise DecodeError(f"{path}: {e}") from e


# ---------------------------------------------------------------------------- opening files
def _check_args(frame_times: Sequence[float], audio_start: float, audio_seconds: float,
                sample_rate: int, pad_mode: str) -> None:
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
    bad = [t for t in frame_times if not (math.isfinite(t) and t >= 0)]
    if bad:
        raise ValueError(f"frame_times must be finite and >= 0, got {bad[:3]}")
    if not (math.isfinite(audio_start) and audio_start >= 0):
        raise ValueError(f"audio_start must be finite and >= 0, got {audio_start}")
    if not (math.isfinite(audio_seconds) and audio_seconds >= 0):
        raise ValueError(f"audio_seconds must be finite and >= 0, got {audio_seconds}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")

