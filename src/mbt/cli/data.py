"""`mbt data summary | probe | stats | prepare | merge`: inspect and prepare datasets and videos."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ._options import add_dataset_args, add_set_option, add_stream_options, annotations_from_args, section_overrides

_FIRST_LISTED = 5
"""Skipped items listed by `mbt data stats`."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data",
                       help="inspect and prepare datasets and videos: summary | probe | stats | prepare | merge")
    dsub = p.add_subparsers(dest="data_command", required=True)
    _add_data_summary(dsub)
    _add_data_probe(dsub)
    _add_data_stats(dsub)
    _add_data_prepare(dsub)
    _add_data_merge(dsub)


def _add_data_prepare(dsub: argparse._SubParsersAction) -> None:
    s = dsub.add_parser(
        "prepare", help="decode videos once into WebDataset tar shards (JPEG frames, FLAC audio, labels)",
        description="Write the clips of one split into tar shards that `dataset.format=shards` trains from "
                    "(local disk or fsspec URLs). Re-running on an unfinished folder resumes it.",
    )
    add_dataset_args(s)
    s.add_argument("--out", required=True, help="output folder (local; copy it to object storage afterwards)")
    s.add_argument("--mode", required=True, choices=("train", "val", "test"),
                   help="train: a span to draw random clips from; val: the middle clip; test: num_test_clips clips")
    add_set_option(s, "override data config fields, e.g. data.frame_rate=2 data.num_frames=4 data.min_resize=128")
    s.add_argument("--modalities", default="rgb,spectrogram", help="stored modalities, comma-separated")
    s.add_argument("--shard-size", type=int, default=512, help="samples per shard")
    s.add_argument("--frame-oversample", type=int, default=2,
                   help="train: frames stored per second = this x frame_rate")
    s.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality of the stored frames (1-100)")
    s.add_argument("--audio-codec", choices=("flac", "pcm16"), default="flac",
                   help="stored audio: flac (lossless, smaller) or pcm16 (raw, fastest to read)")
    s.add_argument("--seed", type=int, default=0, help="seed of the item order over shards")
    s.add_argument("--workers", type=int, default=1, help="processes writing shards in parallel")
    s.add_argument("--part", type=int, default=0, metavar="K",
                   help="with --num-parts: write part K (0-based) of the shards, for one of N machines; then "
                        "`mbt data merge` the N part folders")
    s.add_argument("--num-parts", type=int, default=1, metavar="N", help="machines the preparation is split over")
    s.add_argument("--overwrite", action="store_true", help="replace finished shards in --out")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("--json", action="store_true", help="print the report as JSON")
    s.set_defaults(func=run_prepare)


def _add_data_merge(dsub: argparse._SubParsersAction) -> None:
    s = dsub.add_parser(
        "merge", help="merge the part folders of `mbt data prepare --part K --num-parts N` into one shard folder",
        description="Check that every part of the same preparation is there and finished, link (or copy) their "
                    "shards into --out and write its manifest: the same folder a run in one go writes.",
    )
    s.add_argument("parts", nargs="+", metavar="PART_DIR", help="the folders the parts were prepared into, all N")
    s.add_argument("--out", required=True, help="the merged shard folder (local)")
    s.add_argument("--overwrite", action="store_true", help="replace finished shards in --out")
    s.add_argument("--json", action="store_true", help="print the merged report as JSON")
    s.set_defaults(func=run_merge)


def _add_data_probe(dsub: argparse._SubParsersAction) -> None:
    s = dsub.add_parser("probe", help="what decoding finds in video files, and one sampled clip's shapes")
    s.add_argument("videos", nargs="+", metavar="VIDEO", help="video or audio files")
    s.add_argument("--json", action="store_true", help="print the findings as JSON")
    add_stream_options(s)
    s.set_defaults(func=run_probe)


def _add_data_summary(dsub: argparse._SubParsersAction) -> None:
    s = dsub.add_parser("summary", help="parse annotations: classes, items, problems, missing files")
    add_dataset_args(s)
    s.add_argument("--first", type=int, default=5, help="items, problems and missing files to show")
    s.add_argument("--json", action="store_true", help="print the summary as JSON")
    s.set_defaults(func=run_summary)


def _add_data_stats(dsub: argparse._SubParsersAction) -> None:
    s = dsub.add_parser("stats", help="mean/std of the log-mel spectrogram over a dataset (for DataConfig)")
    add_dataset_args(s)
    s.add_argument("--max-items", type=int, help="use at most this many items, evenly spread")
    add_set_option(s, "override data config fields, e.g. data.sample_rate=16000 data.num_mel_bins=128")
    s.add_argument("--num-workers", type=int, default=0, help="decoding worker processes")
    s.add_argument("--json", action="store_true", help="print the statistics as JSON")
    s.set_defaults(func=run_stats)


def run_summary(args: argparse.Namespace) -> int:
    """`mbt data summary`: what the parser made of the annotations."""
    ann = annotations_from_args(args, args.annotations)
    info = ann.summary(first=args.first)
    if args.json:
        json.dump(info, sys.stdout, indent=2)
        print()
        return 0
    splits = ", ".join(f"{n} {c}" for n, c in info["class_splits"].items())
    print(f"format: {info['format']}  ({', '.join(info['sources'])})")
    print(f"classes: {info['num_classes']}" + (f" = {splits}" if splits else "")
          + (" (multi-label)" if info["multi_label"] else ""))
    print(f"items: {info['num_items']}  ({info['num_multi_label_items']} with several labels)")
    if info["files_checked"]:
        print(f"missing files: {info['num_missing_files']} of {info['num_items']}")
        for line in info["missing_first"]:
            print(f"  {line}")
    else:
        print("missing files: not checked (no --root)")
    for note in info["notes"]:
        print(f"note: {note}")
    print(f"bad rows skipped: {info['num_problems']}")
    for line in info["problems_first"]:
        print(f"  {line}")
    if info["num_duplicates"]:
        print(f"duplicated clips ({args.duplicates}): {info['num_duplicates']}")
        for line in info["duplicates_first"]:
            print(f"  {line}")
    print("first items:")
    for it in info["first_items"]:
        span = "" if it["start"] is None else f" [{it['start']:g}-{it['end']:g} s]"
        print(f"  {it['video_id']}{span} {it['path']}: {'; '.join(it['labels'])}")
    return 0


def run_probe(args: argparse.Namespace) -> int:
    """Probe each file (decoding all frames to count them and to find concealed damage) and
    decode its middle clip with the DataConfig defaults through features and the eval
    transform. Exit code 1 if any file cannot be read as a video (or audio) file."""
    from ..data.config import DataConfig
    from ..data.decode import DecodeError, probe

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


def _sample_clip(path: str, info: Any, cfg: Any) -> dict[str, Any]:
    """The middle clip, as evaluation would see it."""
    import torch

    from ..data.decode import media_duration, read_clip
    from ..data.views import ClipInputs

    centre = media_duration(path, cfg.video_stream, cfg.audio_stream) / 2
    first = max(centre - cfg.clip_seconds / 2, 0.0)
    times = [first + k / cfg.frame_rate for k in range(cfg.num_frames)]
    audio_start = max(centre - cfg.audio_seconds / 2, 0.0)
    clip = read_clip(path, times, audio_start, cfg.audio_seconds, cfg.sample_rate, cfg.pad_mode,
                     resize_short_side=cfg.min_resize, video_stream=cfg.video_stream, audio_stream=cfg.audio_stream)
    inputs = ClipInputs(cfg, "val")(clip.rgb, clip.audio, 0, torch.Generator())  # a val view draws nothing
    rgb, spec = inputs["rgb"], inputs["spectrogram"]
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


def _print_human(info: Any, clip: dict[str, Any] | None) -> None:
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


def run_stats(args: argparse.Namespace) -> int:
    """`mbt data stats`: log-mel mean/std to paste into DataConfig."""
    from ..data.config import DataConfig
    from ..data.dataset import AVDataset, spectrogram_stats
    from ..overrides import apply_overrides

    cfg = apply_overrides(DataConfig(), section_overrides(args.set, "data"))
    ann = annotations_from_args(args, args.annotations)
    dataset = AVDataset(ann, cfg, "val", modalities=("spectrogram",), skip_bad=args.skip_bad)
    stats = spectrogram_stats(dataset, args.max_items, num_workers=args.num_workers)
    if args.json:
        json.dump(stats, sys.stdout, indent=2)
        print()
        return 0
    print(f"# log-mel statistics over {stats['items']} clips ({stats['values']} values); "
          f"{stats['items_without_audio']} without audio left out, {len(stats['skipped'])} skipped")
    for path, reason in stats["skipped"][:_FIRST_LISTED]:
        print(f"#   skipped {path}: {reason}")
    print(f"spec_mean: {stats['spec_mean']:.4f}")
    print(f"spec_std: {stats['spec_std']:.4f}")
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    """`mbt data prepare`: annotations + videos -> shard folder; prints the report."""
    from ..data.config import DataConfig
    from ..data.shards import ShardConfig, prepare_shards
    from ..overrides import apply_overrides

    cfg = apply_overrides(DataConfig(), section_overrides(args.set, "data"))
    shard_cfg = ShardConfig(mode=args.mode, modalities=tuple(args.modalities.split(",")),
                            shard_size=args.shard_size, frame_oversample=args.frame_oversample,
                            jpeg_quality=args.jpeg_quality, audio_codec=args.audio_codec, seed=args.seed)
    ann = annotations_from_args(args, args.annotations)
    bar = None
    if not args.no_progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="shards", unit="shard", dynamic_ncols=True, file=sys.stderr)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.n = done
            bar.refresh()

    try:
        report = prepare_shards(ann, cfg, args.out, shard_cfg, workers=args.workers, skip_bad=args.skip_bad,
                                overwrite=args.overwrite, progress=progress, part=args.part,
                                num_parts=args.num_parts)
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
        return 0
    if args.num_parts > 1:
        print(f"{report['out']}: part {args.part} of {args.num_parts}: {report['written']} items in "
              f"{report['shards']} shards ({report['bytes'] / 2**20:.1f} MiB), {report['left_out']} unreadable left "
              f"out, {report['seconds']:.1f} s; when every part is done: mbt data merge PART_DIRS... --out DIR")
        return 0
    _print_report(report)
    return 0


def run_merge(args: argparse.Namespace) -> int:
    """`mbt data merge`: part folders -> one shard folder; prints its report."""
    from ..data.shards import merge_parts

    report = merge_parts(args.parts, args.out, overwrite=args.overwrite)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
        return 0
    _print_report(report)
    return 0


def _print_report(report: dict[str, Any]) -> None:
    mib = report["bytes"] / 2**20
    print(f"{report['out']}: {report['written']} of {report['items']} items in {report['shards']} shards "
          f"({mib:.1f} MiB, {mib / max(report['written'], 1):.2f} MiB/item), mode {report['mode']}, "
          f"{report['seconds']:.1f} s ({report['written'] / max(report['seconds'], 1e-9):.1f} items/s)")
    if report["shards_kept_from_interrupted_run"]:
        print(f"resumed: {report['shards_kept_from_interrupted_run']} shards kept from the interrupted run")
    print(f"left out: {report['left_out']} ({report['missing_files']} missing files, {report['unreadable']} "
          f"unreadable; all listed in report.json); without audio: {report['without_audio']}; "
          f"annotation rows skipped: {report['annotation_rows_skipped']}")
    for line in report["first_left_out"]:
        print(f"  {line}")
