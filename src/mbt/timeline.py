"""Predictions over time for a video of any length: sliding windows, decoded in one pass.

Windows of `window` seconds start every `hop` seconds (defaults: the model's clip length,
the longer of its rgb span and audio window, and half of it); the last window ends at the
end of the media. A window is scored as `predict` scores a file: its clips (enough
non-overlapping model clips to cover it, evenly spaced) are featurised by the model's
recipe and their logits averaged. Past the end of the media the last frame is repeated and
the audio is silent (DataConfig's 'zeros' padding; looping an hour-long file makes no sense).

The file is demuxed and decoded once, front to back (`MediaStream`): a decoded frame is
converted and kept only when some window shows it, and frames and audio are forgotten as
soon as the windows have moved past them, so memory is bounded by what a few windows need,
whatever the length of the video. A modality the file lacks is left out as in `predict`.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch

from ._lazy import callable_module
from .data import views
from .data.config import MAX_SECONDS, DataConfig
from .data.decode import (
    AudioFeed,
    Converter,
    Damage,
    DamageLog,
    DecodeError,
    Media,
    VideoFeed,
    finite_audio,
    normalise_rotation,
    rotate,
)
from .models.config import check_range


# ---------------------------------------------------------------------------- windows
def window_starts(duration: float, window: float, hop: float) -> list[float]:
    """Starts of the windows over `[0, duration]`: every `hop` seconds, plus one ending at
    `duration` when the hops leave a tail uncovered (one window when the media is shorter)."""
    check_range(window, "window", 1e-3, MAX_SECONDS, float)  # its clips form one batch
    check_range(hop, "hop", 1e-2, math.inf, float)
    last = max(duration - window, 0.0)
    starts = [k * hop for k in range(int(last / hop + 1e-9) + 1)]
    if starts[-1] < last - 1e-6:
        starts.append(last)
    return starts


def clip_centres(start: float, window: float, clip_seconds: float) -> list[float]:
    """Centres of the model clips that score one window: enough non-overlapping clips to
    cover it, evenly spaced, each inside the window when it fits."""
    n = max(1, math.ceil(window / clip_seconds - 1e-9))
    half = min(clip_seconds, window) / 2
    if n == 1:
        return [start + window / 2]
    return [start + half + (window - 2 * half) * k / (n - 1) for k in range(n)]


# ---------------------------------------------------------------------------- streamed decoding
INTERLEAVE_S = 10.0
"""A stream that lags the other by more than this many seconds of decoded media has ended
(a damaged or cut track): its window is filled (last frame, silence) instead of reading on."""

class _WindowFrames:
    """The frame picker of a `MediaStream` (driven by decode's `VideoFeed`): for each
    requested time, the last frame at or before it, converted when first picked and kept
    until released."""

    first_wanted = -math.inf  # the feed holds no packets back
    done = False

    def __init__(self, times: np.ndarray, convert: Converter):
        self.times, self.pos, self.convert = times, 0, convert
        self.kept: OrderedDict[float, np.ndarray] = OrderedDict()
        self.prev: Any = None
        self.prev_time = 0.0
        self.rotation: int | None = None
        self.peak = 0
        """Most frames held at once (a measure of the memory bound)."""

    def _keep(self, frame: Any, stop: float) -> None:
        """Give `frame` to the requested times before `stop`."""
        image = None
        while self.pos < len(self.times) and self.times[self.pos] < stop:
            if image is None:
                image = rotate(self.convert(frame), self.rotation or 0)
            self.kept[float(self.times[self.pos])] = image
            self.pos += 1
        self.peak = max(self.peak, len(self.kept))

    def push(self, frame: Any, time: float) -> None:
        if self.rotation is None:
            self.rotation = normalise_rotation(frame.rotation) if frame.rotation else 0
        self._keep(self.prev if self.prev is not None else frame, time - 1e-6)
        self.prev, self.prev_time = frame, time

    def hold(self, until: float) -> None:
        """The stream has ended early: the last frame for the requested times up to `until`."""
        self._keep(self.prev, until + 1e-6)

    def finish(self) -> None:
        if self.prev is not None:
            self._keep(self.prev, math.inf)


class _RollingAudio:
    """The audio sink of a `MediaStream` (driven by decode's `AudioFeed`): mono chunks by
    sample position, released from the front."""

    done = False
    first = None

    def __init__(self) -> None:
        self.chunks: deque[tuple[int, np.ndarray]] = deque()
        self.end = 0
        self.gain = 1.0

    def add(self, pos: int, samples: np.ndarray) -> None:
        self.chunks.append((pos, samples))
        self.end = max(self.end, pos + len(samples))

    def window(self, start: int, n: int) -> np.ndarray:
        out = np.zeros(n, dtype=np.float32)
        for pos, samples in self.chunks:
            lo, hi = max(pos, start), min(pos + len(samples), start + n)
            if hi > lo:
                out[lo - start:hi - start] = samples[lo - pos:hi - pos]
        return out * self.gain

    def release(self, before: int) -> None:
        while self.chunks and self.chunks[0][0] + len(self.chunks[0][1]) <= before:
            self.chunks.popleft()


class MediaStream:
    """A media file read front to back in one demux pass, serving the frames shown at
    `frame_times` (all times any window asks for, sorted) and audio windows, in order.
    Ask with `frames` / `audio` for times that do not go back, and `release` what no
    later window needs."""

    def __init__(self, path: str, frame_times: np.ndarray, data: DataConfig, video: bool = True,
                 audio: bool = True, threads: int = 0):
        self.path, self.data = path, data
        self.media = Media(path, threads, data.video_stream, data.audio_stream)
        self.damage = Damage()
        """Damage FFmpeg concealed while decoding (as `read_clip` counts it)."""
        m = self.media
        self.picker = _WindowFrames(frame_times, Converter(data.min_resize, shrink_only=True)) if (
            video and m.vstream is not None) else None
        self.sink = _RollingAudio() if audio and m.astream is not None else None
        self.video = VideoFeed(m, self.picker, False, self.damage) if self.picker else None
        self.audio_feed = (AudioFeed(m, self.sink, data.sample_rate, (math.inf, math.inf), None, False, self.damage)
                           if self.sink else None)
        streams = [f.stream for f in (self.video, self.audio_feed) if f is not None]
        self.packets: Iterator[Any] | None = m.demux(*streams) if streams else None
        self.passes = 1 if streams else 0
        self.ended = not streams

    @property
    def has_video(self) -> bool:
        return self.picker is not None

    @property
    def has_audio(self) -> bool:
        return self.sink is not None

    def close(self) -> None:
        self.media.__exit__()

    def _pull(self) -> None:
        """Demux and decode the next packet; at the end of the file, flush the decoders."""
        with DamageLog(self.damage):
            self._pull_packet()

    def _pull_packet(self) -> None:
        try:
            packet = next(self.packets)  # type: ignore[arg-type]
        except StopIteration:
            self.ended = True
            if self.audio_feed is not None:
                self.audio_feed.flush()
            if self.video is not None:
                self.video.flush()
                if self.picker.prev is None:
                    raise DecodeError(f"{self.path}: the video stream has no decodable frame") from None
                self.picker.finish()
            return
        except av.FFmpegError as e:
            raise DecodeError(f"{self.path}: {e}") from e
        feed = self.video if self.video is not None and packet.stream is self.video.stream else self.audio_feed
        try:
            feed.packet(packet)
        except av.FFmpegError as e:
            raise DecodeError(f"{self.path}: {e}") from e

    def _ahead(self, stream: str, than: float) -> bool:
        """Whether the other stream has been decoded more than `INTERLEAVE_S` past `than`
        (seconds): then `stream` has ended early (a muxer interleaves streams closely), and
        reading on would buffer the other one without bound."""
        if stream == "video":
            return self.sink is not None and self.sink.end / self.data.sample_rate > than + INTERLEAVE_S
        return self.picker is not None and self.picker.prev is not None and self.picker.prev_time > than + INTERLEAVE_S

    def frames(self, times: list[float]) -> np.ndarray:
        """uint8 [T, H, W, 3]: the frames shown at `times` (each one of `frame_times`);
        past the end of the video stream, its last frame."""
        picker = self.picker
        assert picker is not None
        last = max(times)
        while not self.ended and picker.pos < len(picker.times) and picker.times[picker.pos] <= last:
            if picker.prev is not None and self._ahead("video", last):
                picker.hold(last)
                break
            self._pull()
        return np.stack([picker.kept[t] for t in times])

    def audio(self, start: float, seconds: float) -> np.ndarray:
        """float32 mono samples of `[start, start + seconds)` (silence past the end)."""
        sink = self.sink
        assert sink is not None
        rate = self.data.sample_rate
        first, n = round(start * rate), round(seconds * rate)
        while not self.ended and sink.end < first + n and not self._ahead("audio", (first + n) / rate):
            self._pull()
        return finite_audio(sink.window(first, n), self.path, start, rate)

    def release(self, frames_before: float, audio_before: float) -> None:
        """Forget the frames shown before `frames_before` and the audio before `audio_before`."""
        if self.picker is not None:
            kept = self.picker.kept
            while kept and next(iter(kept)) < frames_before:
                kept.popitem(last=False)
        if self.sink is not None:
            self.sink.release(round(audio_before * self.data.sample_rate))


# ---------------------------------------------------------------------------- the timeline
@dataclass
class Timeline:
    """Per-window predictions over one file."""

    path: str
    window: float
    hop: float
    starts: np.ndarray
    """[W] window starts (s)."""
    ends: np.ndarray
    """[W] window ends (s)."""
    scores: np.ndarray
    """[W, C] class probabilities per window."""
    class_names: list[str]
    modalities: tuple[str, ...]
    note: str = ""
    stats: dict[str, Any] = field(default_factory=dict)
    """Decoding facts: 'passes' (demux passes), 'peak_frames_held', 'frames_requested'."""

    def top(self, k: int) -> list[list[tuple[str, float]]]:
        """(class, probability) of the `k` best classes of each window, best first."""
        order = np.argsort(-self.scores, axis=1, kind="stable")[:, :k]
        return [[(self.class_names[c], float(row[c])) for c in idx]
                for row, idx in zip(self.scores, order, strict=True)]


def timeline(predictor: Any, path: str | os.PathLike, window: float | None = None, hop: float | None = None,
             batch_size: int = 8, progress: bool = False) -> Timeline:
    """Slide windows over `path` with a `mbt.inference.Predictor` (module docstring).
    `window` defaults to the model's clip length, `hop` to half the window."""
    from tqdm.auto import tqdm

    from .data.dataset import missing_note
    from .data.decode import probe
    from .models.mbt import class_probabilities

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    model, data = predictor.model, predictor.data
    mods = predictor.modalities
    clip = max(data.clip_seconds if "rgb" in mods else 0.0, data.audio_seconds if "spectrogram" in mods else 0.0)
    window = clip if window is None else float(window)
    hop = window / 2 if hop is None else float(hop)
    info = probe(path)
    if not info.duration or info.duration <= 0:
        raise DecodeError(f"{path}: unknown or zero duration; cannot place windows")
    starts = window_starts(info.duration, window, hop)
    centres = [clip_centres(s, window, clip) for s in starts]
    def frame_times(c: float) -> list[float]:
        return [max(t, 0.0) for t in views.frame_times(c, data)]

    requested = np.unique([t for cs in centres for c in cs for t in frame_times(c)]) if "rgb" in mods else np.zeros(0)
    stream = MediaStream(path, requested, data, video="rgb" in mods, audio="spectrogram" in mods)
    present = tuple(m for m in mods if (stream.has_video if m == "rgb" else stream.has_audio))
    total = torch.zeros(len(starts), model.config.num_classes)  # summed clip logits per window
    pending: list[tuple[int, dict[str, torch.Tensor]]] = []  # (window index, one clip's inputs)

    def flush() -> None:
        if not pending:
            return
        inputs = {m: torch.stack([p[1][m] for p in pending]).to(predictor.device) for m in present}
        with torch.no_grad():
            logits = model(inputs).logits.float().cpu()
        total.index_add_(0, torch.tensor([p[0] for p in pending]), logits)
        pending.clear()

    inputs = views.ClipInputs(replace(data, num_test_crops=1), "test", rgb="rgb" in present)
    try:
        note = missing_note(mods, present, path)
        for w, cs in enumerate(tqdm(centres, desc=Path(path).name, unit="window", disable=not progress,
                                    file=sys.stderr)):
            for c in cs:
                pending.append((w, _clip_inputs(stream, present, inputs, c, frame_times(c))))
            if w + 1 < len(centres):  # what the next window needs starts here
                nxt = centres[w + 1][0]
                stream.release(frame_times(nxt)[0], max(nxt - data.audio_seconds / 2, 0.0))
            if len(pending) >= batch_size:
                flush()
        flush()
    finally:
        stream.close()
    if stream.damage:
        note = "; ".join(n for n in (note, f"decoded with concealed damage: {stream.damage}") if n)
    logits = total / torch.tensor([len(cs) for cs in centres], dtype=torch.float32)[:, None]
    scores = class_probabilities(logits, model.config.multi_label, model.config.class_splits).numpy()
    if not np.isfinite(scores).all():  # as `Predictor.predict`: never a NaN in timeline.json or on a plot
        raise ValueError(f"{path}: the model's scores are NaN or infinite in "
                         f"{int((~np.isfinite(scores)).any(1).sum())} of {len(scores)} windows: no timeline")
    ends = np.minimum(np.array(starts) + window, info.duration)
    stats = {"passes": stream.passes, "peak_frames_held": stream.picker.peak if stream.picker else 0,
             "frames_requested": len(requested)}
    return Timeline(path, window, hop, np.array(starts), ends, scores, predictor.class_names, present, note, stats)


def _clip_inputs(stream: MediaStream, present: tuple[str, ...], inputs: views.ClipInputs, centre: float,
                 times: list[float]) -> dict[str, torch.Tensor]:
    """One clip's model inputs, made by `inputs` (a test-split `ClipInputs` with one centre crop)
    as `AVDataset` makes them."""
    data = inputs.cfg
    rgb = stream.frames(times) if "rgb" in present else None
    audio = (stream.audio(max(centre - data.audio_seconds / 2, 0.0), data.audio_seconds)
             if "spectrogram" in present else None)
    return inputs(rgb, audio, 0, torch.Generator())  # a test view draws nothing


# ---------------------------------------------------------------------------- outputs
_TICK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
"""Seconds between time ticks: the first that gives at most 12 ticks."""


def _clock(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def write_timeline(tl: Timeline, out_dir: str | os.PathLike, topk: int = 3) -> list[Path]:
    """timeline.csv (start, end, top classes and probabilities per window), timeline.json
    (the same with the settings) and timeline.png; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tops = tl.top(topk)
    csv_path = out / "timeline.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["start", "end"] + [c for k in range(1, len(tops[0]) + 1) for c in (f"top{k}", f"p{k}")])
        for s, e, top in zip(tl.starts, tl.ends, tops, strict=True):
            writer.writerow([f"{s:.3f}", f"{e:.3f}"] + [v for name, p in top for v in (name, f"{p:.6f}")])
    json_path = out / "timeline.json"
    doc = {"path": tl.path, "window": tl.window, "hop": tl.hop, "modalities": list(tl.modalities), "note": tl.note,
           "windows": [{"start": round(float(s), 3), "end": round(float(e), 3),
                        "top": [{"label": n, "probability": round(p, 6)} for n, p in top]}
                       for s, e, top in zip(tl.starts, tl.ends, tops, strict=True)]}
    json_path.write_text(json.dumps(doc, indent=1) + "\n")
    return [csv_path, json_path, plot_timeline(tl, out / "timeline.png")]


def plot_timeline(tl: Timeline, path: str | os.PathLike, max_classes: int = 10) -> Path:
    """A heat map of the probabilities over time of the classes that lead some window (the
    most probable others fill up to `max_classes`), with the leading class of each window
    marked; time in m:ss (h:mm:ss)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    leaders = list(dict.fromkeys(int(c) for c in tl.scores.argmax(1)))
    by_peak = [int(c) for c in np.argsort(-tl.scores.max(0), kind="stable") if int(c) not in leaders]
    shown = (leaders + by_peak)[:max(max_classes, 1)]
    shown = sorted(shown, key=lambda c: -tl.scores[:, c].max())
    centres = (tl.starts + tl.ends) / 2
    fig, ax = plt.subplots(figsize=(min(16, 6 + len(tl.starts) / 20), 1.2 + 0.45 * len(shown)), layout="constrained")
    step = tl.hop
    edges = np.concatenate([centres - step / 2, [centres[-1] + step / 2]])
    image = ax.pcolormesh(edges, np.arange(len(shown) + 1) - 0.5, tl.scores[:, shown].T, cmap="Greens",
                          vmin=0.0, vmax=1.0, shading="flat")
    row = {c: i for i, c in enumerate(shown)}
    ax.step(centres, [row[int(c)] for c in tl.scores.argmax(1)], where="mid", color="k", lw=1.2)
    ax.set_yticks(range(len(shown)), [tl.class_names[c] for c in shown])
    ax.invert_yaxis()
    span = edges[-1] - edges[0]
    step = next((s for s in _TICK_STEPS if span / s <= 12), _TICK_STEPS[-1] * math.ceil(span / 12 / _TICK_STEPS[-1]))
    ticks = np.arange(math.ceil(edges[0] / step) * step, edges[-1] + 1e-9, step)
    ax.set_xticks(ticks, [_clock(t) for t in ticks])
    ax.set_xlim(edges[0], edges[-1])
    ax.set_xlabel("time (window centre);  black line: the leading class of each window")
    title = f"{Path(tl.path).name}: window {tl.window:g} s, hop {tl.hop:g} s"
    ax.set_title(title + (f"\n({tl.note})" if tl.note else ""), fontsize=10)
    fig.colorbar(image, ax=ax, label="probability", pad=0.01)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


callable_module(__name__, "mbt.api:timeline")  # mbt.timeline(video, model, ...): `mbt predict --timeline`
