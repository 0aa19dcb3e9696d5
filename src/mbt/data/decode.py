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
from its own seek point (`_ClipReader._seek_target` has the policy), and the GOPs before
the first frame and the audio packets outside the window (less a short pre-roll) are
demuxed but not decoded. docs/benchmarks.md has the measurements behind these choices.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import numpy as np

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

PAD_MODES = ("loop", "zeros")

_TIME_EPS = 1e-6
"""A frame at ``t + _TIME_EPS`` still counts as shown at ``t`` (absorbs float rounding of
requested times such as ``3 * 0.1``)."""

NO_INDEX_SEEK_MIN_S = 1.0
"""Without a keyframe index, seek only when the clip starts at least this far in
(`benchmarks/bench_data.py` measures seeking against decoding from the start)."""

AUDIO_PREROLL_S = 0.2
"""Audio decoded before the window starts (and after a skipped stretch), so codecs with
overlapping frames (AAC, MP3, Vorbis, Opus) are settled when the window begins."""

TRUNCATION_TOLERANCE_S = 1.0
"""A stream that ends more than max(this, 5% of its length) before its header duration
is reported as truncated."""


class DecodeError(RuntimeError):
    """A media file could not be decoded; the message names the file and the cause."""


@dataclass
class Damage:
    """What FFmpeg reported while decoding: damage it concealed rather than failed on."""

    decode_errors: int = 0
    """Error messages FFmpeg logged while reading (decoders and demuxer)."""
    corrupt_frames: int = 0
    """Frames the decoder flagged as corrupt (output with concealed macroblocks)."""
    first_error: str = ""
    """The first error message, as 'codec: message'."""
    missing_frames: int = 0
    """Frames the header announces that decoding did not find (only `probe`, which decodes
    all: lost packets, as a damaged AVI's demuxer drops them without an error)."""

    def __bool__(self) -> bool:
        return bool(self.decode_errors or self.corrupt_frames or self.missing_frames)

    def __str__(self) -> str:
        first = f" (first: {self.first_error})" if self.first_error else ""
        missing = f", {self.missing_frames} frame(s) missing" if self.missing_frames else ""
        return f"{self.decode_errors} decode error(s), {self.corrupt_frames} corrupt frame(s){missing}{first}"


class _DamageLog:
    """Counts FFmpeg's error messages (its log, captured in this thread) and corrupt frames
    while active; PyAV's log level is raised to errors for that time if it was lower (PyAV
    ignores FFmpeg's log by default)."""

    def __init__(self, damage: Damage):
        self.damage = damage
        self.capture = av.logging.Capture()

    def __enter__(self) -> _DamageLog:
        self.level = av.logging.get_level()
        self.raised = self.level is None or self.level < av.logging.ERROR
        if self.raised:
            av.logging.set_level(av.logging.ERROR)
        self.logs = self.capture.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.capture.__exit__(*exc)
        if self.raised:
            av.logging.set_level(self.level)
        errors = [f"{name}: {msg.strip()}" for level, name, msg in self.logs if level <= av.logging.ERROR]
        self.damage.decode_errors += len(errors)
        if errors and not self.damage.first_error:
            self.damage.first_error = errors[0]

    def frames(self, frames: Any) -> Iterator[Any]:
        for frame in frames:
            self.damage.corrupt_frames += frame.is_corrupt
            yield frame


# ---------------------------------------------------------------------------- probe
@dataclass
class VideoStreamInfo:
    """The video stream taken, as the container describes it."""

    index: int
    """Stream index in the container."""
    codec: str
    """Codec name (FFmpeg's canonical name, e.g. 'h264', 'av1')."""
    width: int
    """Coded width in pixels, before rotation."""
    height: int
    """Coded height in pixels, before rotation."""
    frame_rate: float | None
    """Average frame rate (frames/s) from the header; None if unknown."""
    frame_count: int | None
    """Frame count from the header; None if the container does not store it."""
    duration: float | None
    """Stream duration from the header (s); None if unknown."""
    rotation: int = 0
    """Display rotation, counter-clockwise degrees in {-90, 0, 90, 180} (FFmpeg's
    display-matrix convention: -90 is the usual portrait phone video)."""
    decoded_frames: int | None = None
    """Frames actually decoded (only with ``probe(count_frames=True)``)."""


@dataclass
class AudioStreamInfo:
    """The audio stream taken, as the container describes it."""

    index: int
    """Stream index in the container."""
    codec: str
    """Codec name (FFmpeg's canonical name, e.g. 'aac', 'mp3', 'vorbis')."""
    sample_rate: int
    """Samples per second per channel."""
    channels: int
    """Number of channels."""
    duration: float | None
    """Stream duration from the header (s); None if unknown."""
    decoded_samples: int | None = None
    """Samples per channel actually decoded (only with ``probe(count_frames=True)``)."""


@dataclass
class MediaInfo:
    """What the container says about a media file (plus decoded counts when asked)."""

    path: str
    format: str
    """Container format name(s) as FFmpeg reports them, e.g. 'mov,mp4,m4a,3gp,3g2,mj2'."""
    duration: float | None
    """Container duration (s); None if unknown."""
    start_time: float
    """Container start time (s); the origin of all clip times."""
    video: VideoStreamInfo | None
    """The video stream taken (module docstring); None for an audio-only file."""
    audio: AudioStreamInfo | None
    """The audio stream taken; None for a file without audio."""
    still_image: bool = False
    """An image file (image demuxer: JPEG, PNG, ...), which `read_clip` refuses."""
    video_streams: list[int] = field(default_factory=list)
    """Container indices of all video streams (cover pictures excluded)."""
    audio_streams: list[int] = field(default_factory=list)
    """Container indices of all audio streams."""
    damage: Damage | None = None
    """Concealed damage found by decoding: everything with ``probe(count_frames=True)``, the
    window with `read_audio`; None otherwise."""

    @property
    def has_audio(self) -> bool:
        return self.audio is not None

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["has_audio"] = self.has_audio
        return out


def probe(path: str | os.PathLike[str], count_frames: bool = False, video_stream: int | None = None,
          audio_stream: int | None = None) -> MediaInfo:
    """Describe the video and audio streams taken from ``path`` (module docstring).

    Decodes the first video frame (to read its rotation and prove the file decodes); with
    ``count_frames`` it decodes everything and fills ``decoded_frames`` / ``decoded_samples``
    and ``damage``.
    """
    path = os.fspath(path)
    with _Media(path, video_stream=video_stream, audio_stream=audio_stream) as media:
        info = media.info
        try:
            if media.vstream is not None:
                first = next(media.decode(media.vstream), None)
                if first is None:
                    raise DecodeError(f"{path}: the video stream has no decodable frame")
                info.video.rotation = _rotation(first, media.vstream)  # type: ignore[union-attr]
            if count_frames:
                info.damage = Damage()
                with _DamageLog(info.damage) as log:
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
    with _Media(path, video_stream=video_stream, audio_stream=audio_stream) as media:
        info = media.info
        streams = [s for s in (info.video, info.audio) if s is not None]
        duration = info.duration or max((s.duration or 0.0 for s in streams), default=0.0)
        if not duration:
            try:
                duration = _packets_end(media, [s for s in (media.vstream, media.astream) if s is not None]) or 0.0
            except av.FFmpegError as e:
                raise DecodeError(f"{path}: {e}") from e
    if not duration > 0:
        raise DecodeError(f"{path}: unknown or zero duration (neither the container, the streams nor "
                          "the packets give one)")
    return float(duration)


# ---------------------------------------------------------------------------- clips
@dataclass
class Clip:
    """The frames and audio of one clip, as decoded."""

    rgb: np.ndarray
    """uint8 [T, H, W, 3], rotation applied (and resized when asked)."""
    audio: np.ndarray
    """float32 [S] mono at ``sample_rate``; zeros when ``has_audio`` is False."""
    has_audio: bool
    """False when the file has no audio stream."""
    frame_times: np.ndarray
    """float64 [T]: presentation time of each frame shown (after looping)."""
    sample_rate: int
    """Rate of ``audio``."""
    info: MediaInfo
    """What the container says (rotation as found on the frames)."""
    damage: Damage = field(default_factory=Damage)
    """Concealed damage met while decoding this clip (FFmpeg errors, corrupt frames)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Decoding facts for diagnostics: 'seeked' (bool), 'passes' (demux runs),
    'video_packets_decoded', 'audio_packets_decoded' (work done, over all passes)."""


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
    with _Media(path, threads, video_stream, audio_stream) as media:
        if media.vstream is None:
            raise DecodeError(f"{path}: no video stream (use read_audio for audio-only files)")
        if media.info.still_image:
            raise DecodeError(f"{path}: a still image ({media.info.video.codec}), not a video; "  # type: ignore[union-attr]
                              "mbt reads video files (make a video of it first, e.g. "
                              "ffmpeg -loop 1 -i IMAGE -t 1 out.mp4)")
        try:
            reader = _ClipReader(media, frame_times, audio_start, audio_seconds, sample_rate, pad_mode,
                                 _Converter(resize_short_side, shrink_only))
            with _DamageLog(reader.damage):
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
    with _Media(path, audio_stream=audio_stream) as media:
        if media.astream is None:
            raise DecodeError(f"{path}: no audio stream")
        try:
            reader = _ClipReader(media, (), start, seconds, sample_rate, pad_mode, None)
            with _DamageLog(reader.damage):
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


class _Media:
    """An open media file with the streams taken; it can start over from the beginning
    (seek to 0, or reopen where the format cannot seek, e.g. raw elementary streams)."""

    def __init__(self, path: str, threads: int = 1, video_stream: int | None = None,
                 audio_stream: int | None = None):
        if os.path.isdir(path):
            raise DecodeError(f"{path}: is a directory, not a media file")
        if not os.path.exists(path):
            raise DecodeError(f"{path}: no such file")
        if os.path.getsize(path) == 0:
            raise DecodeError(f"{path}: empty file (0 bytes)")
        self.path, self.threads = path, threads
        self.chosen = (video_stream, audio_stream)
        self._open()
        self.info = _header_info(self.container, self.vstream, self.astream, path)
        self.info.video_streams = [s.index for s in self.videos]
        self.info.audio_streams = [s.index for s in self.container.streams.audio]
        self.origin = self.info.start_time
        self.fresh = True

    def _open(self) -> None:
        try:
            self.container = av.open(self.path, metadata_errors="ignore")
        except (av.FFmpegError, OSError, ValueError) as e:
            raise DecodeError(f"{self.path}: cannot open as media: {e}") from e
        streams = self.container.streams
        self.videos = [s for s in streams.video if not s.disposition & av.stream.Disposition.attached_pic]
        self.vstream = _choose(self.videos, self.chosen[0], "video", streams, self.path)
        self.astream = _choose(list(streams.audio), self.chosen[1], "audio", streams, self.path)
        if self.vstream is not None:
            cc = self.vstream.codec_context
            cc.thread_count = self.threads
            cc.thread_type = "SLICE" if self.threads == 1 else "AUTO"

    def __enter__(self) -> _Media:
        return self

    def __exit__(self, *exc: object) -> None:
        self.container.close()

    def rewind(self) -> None:
        if self.fresh:
            return
        try:
            self.container.seek(0)
        except av.FFmpegError:
            self.reopen()
        self.fresh = True

    def reopen(self) -> None:
        self.container.close()
        self._open()
        self.fresh = True

    def seek(self, seconds: float, stream: Any) -> None:
        """Seek to the keyframe at or before ``seconds`` (clip time) of ``stream``."""
        self.fresh = False
        ts = max(0, math.floor((seconds + self.origin) / stream.time_base))
        self.container.seek(ts, stream=stream, backward=True, any_frame=False)

    def demux(self, *streams: Any) -> Iterator[Any]:
        self.fresh = False
        return self.container.demux(*streams)

    def decode(self, stream: Any) -> Iterator[Any]:
        for packet in self.demux(stream):
            yield from packet.decode()

    def stream_start(self, stream: Any) -> float:
        start = _seconds(stream.start_time, stream.time_base)
        return (start - self.origin) if start is not None else 0.0


def _choose(candidates: list[Any], index: int | None, kind: str, streams: Any, path: str) -> Any:
    """The stream of container index ``index`` (which must be of ``kind``), else the one
    marked default, else the first; None if there is none of that kind."""
    if index is not None:
        chosen = next((s for s in candidates if s.index == index), None)
        if chosen is None:
            found = ", ".join(f"{s.index} ({s.type})" for s in streams) or "none"
            raise DecodeError(f"{path}: no {kind} stream with index {index} (streams: {found})")
        return chosen
    default = [s for s in candidates if s.disposition & av.stream.Disposition.default]
    return (default or candidates or [None])[0]


def _packets_end(media: _Media, streams: list[Any]) -> float | None:
    """End time (clip time) of the last packet of ``streams``, by demuxing; packets without
    timestamps (raw elementary streams) count one frame period each."""
    media.rewind()
    end, count = None, 0
    for packet in media.demux(*streams):
        if packet.size == 0:
            continue
        count += 1
        ts = packet.pts if packet.pts is not None else packet.dts
        if ts is not None:
            t = float((ts + (packet.duration or 0)) * packet.stream.time_base) - media.origin
            end = t if end is None else max(end, t)
    if end is None and count and media.vstream is not None:
        end = count * _frame_period(media.vstream)
    return end


def _seconds(ts: int | None, time_base: Fraction | None) -> float | None:
    if ts is None or time_base is None:
        return None
    return float(ts * time_base)


def _header_info(container: Any, vstream: Any, astream: Any, path: str) -> MediaInfo:
    video = audio = None
    if vstream is not None:
        cc = vstream.codec_context
        rate = vstream.average_rate or vstream.guessed_rate
        video = VideoStreamInfo(
            index=vstream.index,
            codec=cc.codec.canonical_name,
            width=cc.width,
            height=cc.height,
            frame_rate=float(rate) if rate else None,
            frame_count=vstream.frames or None,
            duration=_seconds(vstream.duration, vstream.time_base),
            rotation=_legacy_rotation(vstream),
        )
    if astream is not None:
        cc = astream.codec_context
        audio = AudioStreamInfo(
            index=astream.index,
            codec=cc.codec.canonical_name,
            sample_rate=cc.sample_rate,
            channels=cc.layout.nb_channels,
            duration=_seconds(astream.duration, astream.time_base),
        )
    if video is None and audio is None:
        raise DecodeError(f"{path}: no video or audio stream")
    duration = container.duration / av.time_base if container.duration is not None else None
    start = container.start_time / av.time_base if container.start_time is not None else 0.0
    fmt = container.format.name
    return MediaInfo(path=path, format=fmt, duration=duration, start_time=start, video=video, audio=audio,
                     still_image=fmt == "image2" or fmt.endswith("_pipe"))


def _legacy_rotation(stream: Any) -> int:
    """The old ``rotate`` tag (clockwise degrees) as counter-clockwise degrees."""
    tag = stream.metadata.get("rotate")
    try:
        return _normalise_rotation(-float(tag)) if tag is not None else 0
    except ValueError:
        return 0


def _normalise_rotation(degrees: float) -> int:
    return {0: 0, 1: 90, 2: 180, 3: -90}[round(degrees / 90.0) % 4]


def _rotation(frame: Any, stream: Any) -> int:
    return _normalise_rotation(frame.rotation) if frame.rotation else _legacy_rotation(stream)


def _frame_period(stream: Any) -> float:
    """Seconds per frame from the stream's rates (for frames without timestamps)."""
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return 1.0 / float(rate) if rate else 1.0 / 25.0


# ---------------------------------------------------------------------------- decoding
class _Timestamps:
    """FFmpeg's ``guess_correct_pts``: use pts unless they have been less monotonic than dts."""

    def __init__(self) -> None:
        self.last_pts: int | None = None
        self.last_dts: int | None = None
        self.faulty_pts = self.faulty_dts = 0

    def __call__(self, frame: Any) -> int | None:
        pts, dts = frame.pts, frame.dts
        if dts is not None:
            self.faulty_dts += self.last_dts is not None and dts <= self.last_dts
            self.last_dts = dts
        if pts is not None:
            self.faulty_pts += self.last_pts is not None and pts <= self.last_pts
            self.last_pts = pts
        if pts is not None and (self.faulty_pts <= self.faulty_dts or dts is None):
            return pts
        return dts


class _Converter:
    """Frame -> uint8 RGB array, in FFmpeg (swscale, one thread). The output size is fixed by
    the first frame (short side resized when asked), so a mid-stream size change cannot
    break a clip."""

    def __init__(self, resize_short_side: int | None, shrink_only: bool = False):
        self.resize_short_side = resize_short_side
        self.shrink_only = shrink_only
        self.size: tuple[int, int] | None = None

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        short = min(width, height)
        if self.resize_short_side is None or short <= 0:
            return width, height
        if self.shrink_only and short <= self.resize_short_side:
            return width, height
        scale = self.resize_short_side / short
        return max(1, round(width * scale)), max(1, round(height * scale))

    def __call__(self, frame: Any) -> np.ndarray:
        if self.size is None:
            self.size = self.output_size(frame.width, frame.height)
        width, height = self.size
        return frame.reformat(width=width, height=height, format="rgb24", interpolation="BILINEAR",
                              threads=1).to_ndarray()


class _FramePicker:
    """Keeps, for each requested time, the last frame at or before it; converts a frame to
    RGB only when it is picked (once, however many times pick it)."""

    def __init__(self, times: Sequence[float], convert: _Converter):
        order = sorted(range(len(times)), key=lambda k: times[k])
        self.pending = [(times[k], k) for k in order]
        self.pos = 0
        self.convert = convert
        self.images: list[np.ndarray | None] = [None] * len(times)
        self.shown = np.zeros(len(times), dtype=np.float64)
        self.prev: Any = None
        self.prev_time = 0.0
        self.prev_image: np.ndarray | None = None
        self.last_end: float | None = None
        self.rotation: int | None = None
        self.frame_tb = 0.0

    @property
    def done(self) -> bool:
        return self.pos >= len(self.pending)

    @property
    def first_wanted(self) -> float:
        return self.pending[0][0]

    def _prev_image(self) -> np.ndarray:
        if self.prev_image is None:
            self.prev_image = self.convert(self.prev)
        return self.prev_image

    def push(self, frame: Any, time: float) -> None:
        if self.rotation is None:
            self.rotation = _normalise_rotation(frame.rotation) if frame.rotation else 0
            self.frame_tb = float(frame.time_base) if frame.time_base else 0.0
        while self.pos < len(self.pending) and self.pending[self.pos][0] + _TIME_EPS < time:
            _, k = self.pending[self.pos]
            if self.prev is None:  # a time before the first frame shows the first frame
                self.images[k], self.shown[k] = self.convert(frame), time
            else:
                self.images[k], self.shown[k] = self._prev_image(), self.prev_time
            self.pos += 1
        self.prev, self.prev_time, self.prev_image = frame, time, None
        self.last_end = time + (frame.duration * self.frame_tb if frame.duration else 0.0)

    def finish(self) -> None:
        """End of stream: the remaining times show the last frame."""
        while self.pos < len(self.pending):
            _, k = self.pending[self.pos]
            self.images[k], self.shown[k] = self._prev_image(), self.prev_time
            self.pos += 1


class _AudioSink:
    """Mono chunks with their positions (samples from the time origin), kept as decoded
    and assembled once at the end: the window ``[start, start + n)``, or the whole track.
    ``gain`` is applied then."""

    def __init__(self, start: int, n: int, whole_track: bool):
        self.start, self.n, self.whole = start, n, whole_track
        self.chunks: list[tuple[int, np.ndarray]] = []
        self.first: int | None = None
        self.end: int | None = None
        self.gain = 1.0

    @property
    def done(self) -> bool:
        return not self.whole and self.end is not None and self.end >= self.start + self.n

    def add(self, pos: int, samples: np.ndarray) -> None:
        if self.first is None:
            self.first = pos
        self.end = pos + len(samples)
        self.chunks.append((pos, samples))

    def _place(self, out: np.ndarray, offset: int) -> np.ndarray:
        """Copy the chunks into ``out`` (whose first sample is at position ``offset``), runs
        of contiguous chunks at a time."""
        chunks = sorted(self.chunks, key=lambda c: c[0])
        i = 0
        while i < len(chunks):
            j, end = i + 1, chunks[i][0] + len(chunks[i][1])
            while j < len(chunks) and chunks[j][0] == end:
                end += len(chunks[j][1])
                j += 1
            lo, hi = max(chunks[i][0], offset), min(end, offset + len(out))
            if hi > lo:
                run = np.concatenate([c for _, c in chunks[i:j]]) if j - i > 1 else chunks[i][1]
                out[lo - offset:hi - offset] = run[lo - chunks[i][0]:hi - chunks[i][0]]
            i = j
        if self.gain != 1.0:
            out *= self.gain
        return out

    def window(self) -> np.ndarray:
        return self._place(np.zeros(self.n, dtype=np.float32), self.start)

    def track(self) -> tuple[int, np.ndarray]:
        """The decoded track as (position of its first sample, samples)."""
        if not self.chunks:
            return 0, np.zeros(0, dtype=np.float32)
        first = min(p for p, _ in self.chunks)
        end = max(p + len(c) for p, c in self.chunks)
        return first, self._place(np.zeros(end - first, dtype=np.float32), first)


class _ClipReader:
    """Decodes what one clip needs from an open file."""

    def __init__(self, media: _Media, frame_times: Sequence[float], audio_start: float,
                 audio_seconds: float, sample_rate: int, pad_mode: str, convert: _Converter | None):
        self.media, self.info = media, media.info
        self.times = [float(t) for t in frame_times]
        self.sample_rate, self.pad_mode, self.convert = sample_rate, pad_mode, convert
        self.a_start = round(audio_start * sample_rate)
        self.a_len = round(audio_seconds * sample_rate)
        self.want_video = media.vstream is not None and bool(self.times)
        self.want_audio = media.astream is not None and self.a_len > 0
        self.seeked = self.audio_seeked = False
        self.passes = 0
        self.decoded = {"video_packets_decoded": 0, "audio_packets_decoded": 0}
        self.damage = Damage()
        self.picker: _FramePicker | None = None
        self.sink: _AudioSink | None = None

    # ---- what the clip needs
    def _video_period(self) -> float | None:
        """Length of the video for looping: from the header, else from the packets."""
        v, media = self.info.video, self.media
        assert v is not None
        if v.duration:
            return media.stream_start(media.vstream) + v.duration
        if self.info.duration:
            return self.info.duration
        return self._scan_video_end()

    def _scan_video_end(self) -> float | None:
        """End time of the video from its packets (demux only, no decoding)."""
        return _packets_end(self.media, [self.media.vstream])

    def _audio_wraps(self) -> bool:
        """Whether the audio window runs past the end of the track (by the header), so that
        looping needs the whole track."""
        if self.pad_mode != "loop":
            return False
        a, media = self.info.audio, self.media
        assert a is not None
        seconds = (media.stream_start(media.astream) + a.duration) if a.duration else self.info.duration
        return seconds is None or self.a_start + self.a_len > math.floor(seconds * self.sample_rate)

    def _seek_target(self, start: float, stream: Any) -> float | None:
        """Where to seek ``stream`` for media from ``start`` on, or None to decode from the
        beginning. With a keyframe index: seek iff a keyframe after the first lies at or
        before ``start`` (seeking then skips decoding at least one GOP; for audio every
        packet is a keyframe). Without one: seek iff ``start >= NO_INDEX_SEEK_MIN_S``."""
        if start <= 0:
            return None
        keyframe = _keyframe_before(stream, start, self.media.origin)
        if keyframe is None:
            return start if start >= NO_INDEX_SEEK_MIN_S else None
        return keyframe if keyframe > 0 else None

    # ---- reading
    def read(self) -> Clip:
        times = self.times
        if self.want_video and self.pad_mode == "loop":
            period = self._video_period()
            if period:
                times = [t % period for t in times]
        self._main_pass(times)
        rotation = self.info.video.rotation  # type: ignore[union-attr]
        picker = self.picker
        if picker is not None and picker.rotation:
            rotation = self.info.video.rotation = picker.rotation  # type: ignore[union-attr]
        if picker is not None:
            rgb = np.stack([_rotate(img, rotation) for img in picker.images])  # type: ignore[arg-type]
            shown = picker.shown
        else:
            cc = self.media.vstream.codec_context
            w, h = self.convert.output_size(cc.width, cc.height)  # type: ignore[union-attr]
            if rotation in (90, -90):
                w, h = h, w
            rgb = np.zeros((0, h, w, 3), dtype=np.uint8)
            shown = np.zeros(0, dtype=np.float64)
        audio = self._audio_window() if self.want_audio else np.zeros(self.a_len, dtype=np.float32)
        return Clip(rgb=rgb, audio=audio, has_audio=self.media.astream is not None, frame_times=shown,
                    sample_rate=self.sample_rate, info=self.info, damage=self.damage,
                    extra={"seeked": self.seeked, "passes": self.passes, **self.decoded})

    def read_audio(self) -> np.ndarray:
        if not self.want_audio:
            return np.zeros(0, dtype=np.float32)
        self._main_pass([])
        return self._audio_window()

    def _main_pass(self, times: list[float]) -> None:
        """Decode the frames, then the audio window (or, when the window wraps around the end
        of the track, the audio from there to the end), each in its own run from its own seek
        point (by policy); a run whose seek overshot is redone from the beginning. Separate
        runs decode no more than one joint run and keep each decoder's data in cache."""
        media = self.media
        if self.want_video:
            target = self._seek_target(min(times), media.vstream)
            for seek_to in ((target, None) if target is not None else (None,)):
                self.picker = _FramePicker(times, self.convert)  # type: ignore[arg-type]
                if self._decode(self.picker, None, seek_to):
                    break
        if self.want_audio:
            whole = self._audio_wraps()
            start = self.a_start / self.sample_rate - AUDIO_PREROLL_S
            target = self._seek_target(start, media.astream)
            for seek_to in ((target, None) if target is not None else (None,)):
                self.sink = _AudioSink(self.a_start, self.a_len, whole)
                if self._decode(None, self.sink, seek_to):
                    break
            self.audio_seeked = seek_to is not None

    def _audio_window(self) -> np.ndarray:
        """The audio window, after completing the track where looping needs it."""
        sink = self.sink
        assert sink is not None
        if self.pad_mode == "loop" and not sink.whole and not sink.done:
            # the header promised more audio than there was: read the whole track
            self.sink = sink = _AudioSink(self.a_start, self.a_len, True)
            self._decode(None, sink, seek_to=None)
        if not sink.whole:
            if sink.first is None and not self.seeked:
                raise DecodeError(f"{self.info.path}: the audio stream has no decodable samples")
            return sink.window()  # zeros where the window runs past the track
        track_start = round(self.media.stream_start(self.media.astream) * self.sample_rate)
        if self.audio_seeked and sink.first is not None and sink.first > track_start + 1:
            # the main pass seeked: fetch the beginning of the track that the loop wraps onto
            self._decode(None, sink, seek_to=None, audio_stop=sink.first)
        first, track = sink.track()
        if len(track) == 0:
            raise DecodeError(f"{self.info.path}: the audio stream has no decodable samples")
        return track[(np.arange(self.a_start, self.a_start + self.a_len) - first) % len(track)]

    def _decode(self, picker: _FramePicker | None, sink: _AudioSink | None, seek_to: float | None,
                audio_stop: int | None = None) -> bool:
        """One demux run feeding the frame picker and the audio sink (either may be None);
        audio stops at sample position ``audio_stop`` if given. Returns False if the seek
        overshot what the clip needs (nothing usable was kept then)."""
        media = self.media
        if picker is None and sink is None:
            return True
        self.passes += 1
        if seek_to is None:
            media.rewind()  # may reopen the file: take the streams after it
        else:
            media.seek(seek_to, media.vstream if picker is not None else media.astream)
            self.seeked = True
        check = seek_to is not None
        video = _VideoFeed(media, picker, check, self.damage) if picker is not None else None
        audio = (_AudioFeed(media, sink, self.sample_rate, self._audio_gap(sink), audio_stop, check, self.damage)
                 if sink else None)
        streams = [f.stream for f in (video, audio) if f is not None]
        try:
            return self._run(media, picker, sink, video, audio, streams)
        finally:
            for key, feed in (("video_packets_decoded", video), ("audio_packets_decoded", audio)):
                if feed is not None:
                    self.decoded[key] += feed.decoded

    def _run(self, media: _Media, picker: Any, sink: Any, video: _VideoFeed | None, audio: _AudioFeed | None,
             streams: list[Any]) -> bool:
        for packet in media.demux(*streams):
            feed = video if video is not None and packet.stream is video.stream else audio
            if not feed.done:
                feed.packet(packet)
                if feed.overshot:
                    return False
            if (video is None or video.done) and (audio is None or audio.done):
                break
        else:  # end of file: flush, and check that the streams still being read were complete
            if audio is not None and not audio.done:
                audio.flush()
                self._check_complete("audio", sink.end / self.sample_rate if sink.end is not None else None)
            if video is not None and not video.done:
                video.flush()
                if picker.prev is None:
                    raise DecodeError(f"{self.info.path}: the video stream has no decodable frame")
                self._check_complete("video", picker.last_end)
                picker.finish()
        return True

    def _audio_gap(self, sink: _AudioSink) -> tuple[float, float]:
        """Seconds ``[lo, hi)`` of audio the clip does not need, so its packets are skipped
        undecoded: before the window (less `AUDIO_PREROLL_S`), or, when the window wraps
        around the end, between the wrapped-onto start of the track and the window."""
        start = sink.start / self.sample_rate - AUDIO_PREROLL_S
        lo = -math.inf
        if sink.whole:
            a = self.info.audio
            if a is None or not a.duration:
                return 0.0, 0.0
            track_end = self.media.stream_start(self.media.astream) + a.duration
            wrapped = (sink.start + sink.n) / self.sample_rate - track_end
            # the header may overstate the track by up to the truncation tolerance
            lo = max(wrapped, 0.0) + AUDIO_PREROLL_S + max(TRUNCATION_TOLERANCE_S, 0.05 * a.duration)
        return lo, start

    def _check_complete(self, kind: str, end: float | None) -> None:
        """Raise if a stream stopped well before the duration its header announces."""
        info = self.info.video if kind == "video" else self.info.audio
        stream = self.media.vstream if kind == "video" else self.media.astream
        if info is None or not info.duration or end is None:
            return
        expected = self.media.stream_start(stream) + info.duration
        if end < expected - max(TRUNCATION_TOLERANCE_S, 0.05 * info.duration):
            raise DecodeError(f"{self.info.path}: truncated file: the {kind} stream ends at {end:.2f} s "
                              f"but its header says {expected:.2f} s")


class _VideoFeed:
    """Video packets -> frame picker. Packets before the first wanted time are held per GOP
    and dropped undecoded when a later keyframe still precedes that time: decoding starts
    at the last keyframe before the clip even when the demuxer started earlier."""

    def __init__(self, media: _Media, picker: _FramePicker, check_overshoot: bool, damage: Damage):
        self.media, self.picker, self.damage = media, picker, damage
        self.stream = media.vstream
        self.tb = float(self.stream.time_base)  # float arithmetic: Fractions cost ~1 us each
        self.stamps = _Timestamps()
        self.gop: list[Any] = []
        self.started = False
        self.checked = not check_overshoot
        self.done = self.overshot = False
        self.decoded = 0

    def packet(self, packet: Any) -> None:
        if not self.started:
            ts = packet.pts if packet.pts is not None else packet.dts
            if ts is not None and ts * self.tb - self.media.origin <= self.picker.first_wanted + _TIME_EPS:
                self.gop = [packet] if packet.is_keyframe else [*self.gop, packet]
                return
            self.started = True
            packets, self.gop = [*self.gop, packet], []
        else:
            packets = [packet]
        for p in packets:
            self.decoded += 1
            self._frames(p.decode())
            if self.done or self.overshot:
                return

    def flush(self) -> None:
        for p in self.gop:
            self.decoded += 1
            self._frames(p.decode())
        self.gop = []
        if not self.done:
            with contextlib.suppress(av.error.EOFError):  # already flushed by the demuxer's last packet
                self._frames(self.stream.codec_context.decode(None))

    def _frames(self, frames: Any) -> None:
        picker = self.picker
        for frame in frames:
            self.damage.corrupt_frames += frame.is_corrupt
            ts = self.stamps(frame)
            if ts is not None:
                t = ts * self.tb - self.media.origin
            else:  # no timestamps at all (raw streams): count frames
                t = 0.0 if picker.prev is None else picker.prev_time + _frame_period(self.stream)
            if not self.checked:
                self.checked = True
                if t > picker.first_wanted + _TIME_EPS and t > self.media.stream_start(self.stream):
                    self.overshot = True
                    return
            picker.push(frame, t)
            if picker.done:
                self.done = True
                return


class _AudioFeed:
    """Audio packets -> resampler -> sink. Packets inside ``gap`` (seconds) are skipped
    undecoded; decoding resumes after a skip with a fresh resampler (samples are placed by
    timestamp, so the skip leaves no shift)."""

    def __init__(self, media: _Media, sink: _AudioSink, sample_rate: int, gap: tuple[float, float],
                 stop: int | None, check_overshoot: bool, damage: Damage):
        self.damage = damage
        self.media, self.sink, self.sample_rate, self.gap, self.stop = media, sink, sample_rate, gap, stop
        self.stream = media.astream
        self.tb = float(self.stream.time_base)
        self.origin = round(media.origin * sample_rate)
        self.resampler: Any = None
        self.channels = self.stream.codec_context.layout.nb_channels
        self.next_pos: int | None = None
        self.checked = not check_overshoot
        self.done = self.overshot = False
        self.decoded = 0

    def packet(self, packet: Any) -> None:
        if packet.pts is not None and packet.duration:
            start = packet.pts * self.tb - self.media.origin
            if start >= self.gap[0] and start + packet.duration * self.tb < self.gap[1]:
                self.flush()
                return
        if self.resampler is None:
            self.resampler, self.sink.gain = _mono_resampler(self.stream, self.sample_rate)
        self.decoded += 1
        for frame in packet.decode():
            self.damage.corrupt_frames += frame.is_corrupt
            self._add(self.resampler.resample(frame))
        sink = self.sink
        if not self.checked and sink.first is not None:
            self.checked = True
            track_start = round(self.media.stream_start(self.stream) * self.sample_rate)
            if not sink.whole and sink.first > max(sink.start, track_start + 1):
                self.overshot = True
                return
        self.done = sink.done or (self.stop is not None and self.next_pos is not None and self.next_pos >= self.stop)

    def flush(self) -> None:
        if self.resampler is not None:
            self._add(self.resampler.resample(None))
            self.resampler = None

    def _add(self, frames: list[Any]) -> None:
        for frame in frames:
            samples = frame.to_ndarray()[0]  # packed float32
            if self.channels > 2:
                samples = samples.reshape(-1, self.channels).mean(axis=1, dtype=np.float32)
            pos = frame.pts - self.origin if frame.pts is not None else (self.next_pos or 0)
            self.sink.add(pos, samples)
            self.next_pos = pos + len(samples)


def _mono_resampler(stream: Any, sample_rate: int) -> tuple[Any, float]:
    """A resampler to packed float32 at ``sample_rate``, and the gain that makes its output
    the channel mean: mono and stereo are downmixed inside FFmpeg (which gives
    (L + R) / sqrt(2), hence the gain), other layouts keep their channels to be averaged in
    numpy."""
    if stream.codec_context.layout.nb_channels <= 2:
        gain = math.sqrt(0.5) if stream.codec_context.layout.nb_channels == 2 else 1.0
        return av.AudioResampler(format="flt", layout="mono", rate=sample_rate), gain
    return av.AudioResampler(format="flt", rate=sample_rate), 1.0


def _rotate(image: np.ndarray, rotation: int) -> np.ndarray:
    if rotation == 0:
        return image
    return np.ascontiguousarray(np.rot90(image, k=rotation // 90))


def _keyframe_before(stream: Any, seconds: float, origin: float) -> float | None:
    """Presentation time of the last keyframe at or before ``seconds`` from the container
    index (a binary search), 0.0 when that is the stream's first frame, or None unless the
    index lists every frame (MP4, AVI; Matroska loads its keyframe cues only on the first
    seek). Index timestamps are dts; the stream's start offset makes them pts."""
    entries = stream.index_entries
    if len(entries) == 0 or not stream.frames or len(entries) < stream.frames:
        return None
    first = entries[0].timestamp
    shift = (stream.start_time - first) if stream.start_time is not None else 0
    target = math.floor((seconds + _TIME_EPS + origin) / stream.time_base) - shift
    i = entries.search_timestamp(target, backward=True)
    if i <= 0 or entries[i].timestamp <= first:
        return 0.0
    return float((entries[i].timestamp + shift) * stream.time_base) - origin
