"""Decoding for `mbt.data.decode`: timestamps, the frame picker and audio sink a clip is read into,
`ClipReader` (one clip, seeking and demuxing only what it needs) and the sequential feeds of
`mbt.timeline`."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

import av
import numpy as np

from .media import (
    AUDIO_PREROLL_S,
    NO_INDEX_SEEK_MIN_S,
    TIME_EPS,
    TRUNCATION_TOLERANCE_S,
    Clip,
    Damage,
    DecodeError,
    Media,
    frame_period,
    normalise_rotation,
    packets_end,
)


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


class Converter:
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

    def __init__(self, times: Sequence[float], convert: Converter):
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
            self.rotation = normalise_rotation(frame.rotation) if frame.rotation else 0
            self.frame_tb = float(frame.time_base) if frame.time_base else 0.0
        while self.pos < len(self.pending) and self.pending[self.pos][0] + TIME_EPS < time:
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


class ClipReader:
    """Decodes what one clip needs from an open file."""

    def __init__(self, media: Media, frame_times: Sequence[float], audio_start: float,
                 audio_seconds: float, sample_rate: int, pad_mode: str, convert: Converter | None):
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
        return packets_end(self.media, [self.media.vstream])

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
            rgb = np.stack([rotate(img, rotation) for img in picker.images])  # type: ignore[arg-type]
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
        video = VideoFeed(media, picker, check, self.damage) if picker is not None else None
        audio = (AudioFeed(media, sink, self.sample_rate, self._audio_gap(sink), audio_stop, check, self.damage)
                 if sink else None)
        streams = [f.stream for f in (video, audio) if f is not None]
        try:
            return self._run(media, picker, sink, video, audio, streams)
        finally:
            for key, feed in (("video_packets_decoded", video), ("audio_packets_decoded", audio)):
                if feed is not None:
                    self.decoded[key] += feed.decoded

    def _run(self, media: Media, picker: Any, sink: Any, video: VideoFeed | None, audio: AudioFeed | None,
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


class VideoFeed:
    """Video packets -> frame picker. Packets before the first wanted time are held per GOP
    and dropped undecoded when a later keyframe still precedes that time: decoding starts
    at the last keyframe before the clip even when the demuxer started earlier."""

    def __init__(self, media: Media, picker: _FramePicker, check_overshoot: bool, damage: Damage):
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
            if ts is not None and ts * self.tb - self.media.origin <= self.picker.first_wanted + TIME_EPS:
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
                t = 0.0 if picker.prev is None else picker.prev_time + frame_period(self.stream)
            if not self.checked:
                self.checked = True
                if t > picker.first_wanted + TIME_EPS and t > self.media.stream_start(self.stream):
                    self.overshot = True
                    return
            picker.push(frame, t)
            if picker.done:
                self.done = True
                return


class AudioFeed:
    """Audio packets -> resampler -> sink. Packets inside ``gap`` (seconds) are skipped
    undecoded; decoding resumes after a skip with a fresh resampler (samples are placed by
    timestamp, so the skip leaves no shift)."""

    def __init__(self, media: Media, sink: _AudioSink, sample_rate: int, gap: tuple[float, float],
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


def rotate(image: np.ndarray, rotation: int) -> np.ndarray:
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
    target = math.floor((seconds + TIME_EPS + origin) / stream.time_base) - shift
    i = entries.search_timestamp(target, backward=True)
    if i <= 0 or entries[i].timestamp <= first:
        return 0.0
    return float((entries[i].timestamp + shift) * stream.time_base) - origin
