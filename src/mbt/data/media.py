"""An open media file for `mbt.data.decode`: errors and concealed-damage accounting, what the
container says (`MediaInfo`), the decoded `Clip`, stream choice and rotation."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import numpy as np

PAD_MODES = ("loop", "zeros")

TIME_EPS = 1e-6
"""A frame at ``t + TIME_EPS`` still counts as shown at ``t`` (absorbs float rounding of
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


class DamageLog:
    """Counts FFmpeg's error messages (its log, captured in this thread) and corrupt frames
    while active; PyAV's log level is raised to errors for that time if it was lower (PyAV
    ignores FFmpeg's log by default)."""

    def __init__(self, damage: Damage):
        self.damage = damage
        self.capture = av.logging.Capture()

    def __enter__(self) -> DamageLog:
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



class Media:
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

    def __enter__(self) -> Media:
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


def packets_end(media: Media, streams: list[Any]) -> float | None:
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
        end = count * frame_period(media.vstream)
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
        return normalise_rotation(-float(tag)) if tag is not None else 0
    except ValueError:
        return 0


def normalise_rotation(degrees: float) -> int:
    return {0: 0, 1: 90, 2: 180, 3: -90}[round(degrees / 90.0) % 4]


def frame_rotation(frame: Any, stream: Any) -> int:
    return normalise_rotation(frame.rotation) if frame.rotation else _legacy_rotation(stream)


def frame_period(stream: Any) -> float:
    """Seconds per frame from the stream's rates (for frames without timestamps)."""
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return 1.0 / float(rate) if rate else 1.0 / 25.0


