"""`mbt data probe VIDEO...`: what decoding finds in media files, and one sampled clip's shapes."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .augment import VideoTransform
from .config import DataConfig
from .decode import DecodeError, MediaInfo, media_duration, probe, read_clip
from .features import log_mel


def probe_cli(args: argparse.Namespace) -> int:
    """Probe each file (decoding all frames to count them and to find concealed damage) and
    decode its middle clip with the DataConfig defaults through features and the eval
    transform. Exit code 1 if any file cannot be read as a video (or audio) file."""
    cfg = DataConfig(video_stream=args.video_stream, audio_stream=args.audio_stream)
    results: list[dict[str, Any]] = []
    failed = 0
    for path in args.videos:
        info = None
        try:
            info = probe(path, count_frames=True, video_stream=cfg.video_stream, audio_stream=cfg.audio_stream)
            clip = _sample_clip(path, info, cfg) if info.video is not None else None
        except DecodeError as e:
            failed += 1
            print(f"error: {e}", file=sys.stderr)
            # what was found is still worth showing (e.g. a still image's one decoded frame)
            results.append({**(info.to_dict() if info else {"path": path}), "error": str(e)})
            if info is not None and not args.json:
                _print_human(info, None)
            continue
        if info.damage:
            print(f"warning: {path}: decoded with concealed damage: {info.damage}", file=sys.stderr)
        results.append({**info.to_dict(), "clip": clip})
        if not args.json:
            _print_human(info, clip)
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return 1 if failed else 0


def _sample_clip(path: str, info: MediaInfo, cfg: DataConfig) -> dict[str, Any]:
    """The middle clip, as evaluation would see it."""
    centre = media_duration(path, cfg.video_stream, cfg.audio_stream) / 2
    first = max(centre - cfg.clip_seconds / 2, 0.0)
    times = [first + k / cfg.frame_rate for k in range(cfg.num_frames)]
    audio_start = max(centre - cfg.audio_seconds / 2, 0.0)
    clip = read_clip(path, times, audio_start, cfg.audio_seconds, cfg.sample_rate, cfg.pad_mode,
                     resize_short_side=cfg.min_resize, video_stream=cfg.video_stream, audio_stream=cfg.audio_stream)
    rgb = VideoTransform(cfg, train=False)(clip.rgb)
    spec = log_mel(clip.audio, cfg)
    return {
        "frame_times": [round(float(t), 4) for t in clip.frame_times],
        "decoded_rgb": list(clip.rgb.shape),
        "rgb": list(rgb.shape),
        "audio_start": round(audio_start, 4),
        "audio_samples": int(clip.audio.shape[0]),
        "spectrogram": list(spec.shape),
        "has_audio": clip.has_audio,
    }


def _fmt(x: float | None, unit: str = "s") -> str:
    return "unknown" if x is None else f"{x:.3f} {unit}"


def _print_human(info: MediaInfo, clip: dict[str, Any] | None) -> None:
    print(info.path)
    print(f"  container: {info.format}, duration {_fmt(info.duration)}"
          + (" (a still image, not a video)" if info.still_image else ""))
    v = info.video
    if v is None:
        print("  video: none")
    else:
        rate = "unknown" if v.frame_rate is None else f"{v.frame_rate:.3f}"
        header = "not in header" if v.frame_count is None else f"header {v.frame_count}"
        print(f"  video: stream {v.index} of {info.video_streams}: {v.codec} {v.width}x{v.height}, {rate} frames/s, "
              f"{v.decoded_frames} frames decoded ({header}), duration {_fmt(v.duration)}, rotation {v.rotation}")
    a = info.audio
    if a is None:
        print("  audio: none")
    else:
        print(f"  audio: stream {a.index} of {info.audio_streams}: {a.codec} {a.sample_rate} Hz, {a.channels} "
              f"channel(s), {a.decoded_samples} samples per channel decoded, duration {_fmt(a.duration)}")
    if info.damage is not None:
        print(f"  damage: {info.damage if info.damage else 'none found'}")
    if clip is not None:
        print(f"  middle clip (DataConfig defaults): frames at {clip['frame_times']} s -> decoded "
              f"{clip['decoded_rgb']} -> rgb {clip['rgb']}; audio from {clip['audio_start']} s, "
              f"{clip['audio_samples']} samples -> spectrogram {clip['spectrogram']}"
              + ("" if clip["has_audio"] else " (no audio track: silence)"))
