"""`mbt` command line: train | eval | predict | embed | probe | explain | demo | convert | export | flops
| bench | data.

Each command group adds its parser in one `_add_*` function and runs through a small
handler that imports its module lazily, so `mbt --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any


def _print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


# ---------------------------------------------------------------------- convert
def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert official (Scenic) checkpoints into mbt's format")
    csub = p.add_subparsers(dest="source", required=True)
    s = csub.add_parser("scenic", help="a Scenic MBT checkpoint (flax msgpack) -> save_pretrained folder")
    s.add_argument("checkpoint", help="checkpoint file (checkpoint_<step>) or a params .npz")
    s.add_argument("--config", required=True,
                   help="the Scenic config as a JSON/YAML dump: its 'model' and 'dataset_configs' sections (the "
                        "data config saved with the model comes from the latter; missing fields take the "
                        "released AudioSet config's), or just the config.model fields")
    s.add_argument("--out", required=True, help="output folder (config.json + model.safetensors)")
    s.add_argument("--labels", help="class names file (one per line, or AudioSet class_labels_indices.csv)")
    s.set_defaults(func=_run_convert_scenic)


def _run_convert_scenic(args: argparse.Namespace) -> int:
    from .weights.scenic import convert_scenic_cli

    return convert_scenic_cli(args)


# ---------------------------------------------------------------------- flops
def _add_flops(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("flops", help="compute of a config in GFLOPs (multiply-adds, the paper's convention)")
    p.add_argument("--preset", help="a training preset or model folder to take the config from")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a model field")
    p.add_argument("--table", action="store_true", help="the paper-size table over fusion variants")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run_flops)


def _run_flops(args: argparse.Namespace) -> int:
    """`mbt flops`: the compute of one config, or the table of fusion variants."""
    from .models.config import MBTConfig
    from .models.flops import count_flops, flops_table
    from .overrides import apply_overrides

    cfg = MBTConfig()
    if args.preset:
        from .models.pretrained import read_config

        try:
            cfg = MBTConfig.from_dict(read_config(args.preset)["model"])
        except FileNotFoundError:
            from .train.presets import preset

            cfg = preset(args.preset).model
    cfg = apply_overrides(cfg, args.set)
    if args.table:
        rows = flops_table(cfg)
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            print(f"{'variant':<36} {'GFLOPs':>8} {'params (M)':>11}")
            for r in rows:
                print(f"{r['variant']:<36} {r['gflops']:>8.1f} {r['params_m']:>11.1f}")
        return 0
    report = count_flops(cfg)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(f"{report.gflops:.1f} GFLOPs (multiply-adds; {report.flops / 1e9:.1f} G floating-point operations)")
    return 0


# ---------------------------------------------------------------------- export
def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="a saved model as ONNX or a torch.export program (.pt2), dynamic batch")
    p.add_argument("--model", required=True, help="model folder (config.json + model.safetensors)")
    p.add_argument("--format", choices=("onnx", "pt2"), default="onnx")
    p.add_argument("--out", required=True, help="output file (.onnx / .pt2)")
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from .export import export_pretrained

    print(export_pretrained(args.model, args.out, args.format))
    return 0


# ---------------------------------------------------------------------- data
def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="inspect and prepare datasets and videos: summary | probe | stats | prepare")
    dsub = p.add_subparsers(dest="data_command", required=True)
    _add_data_summary(dsub)
    _add_data_probe(dsub)
    _add_data_stats(dsub)
    _add_data_prepare(dsub)


def _add_data_prepare(dsub: argparse._SubParsersAction) -> None:
    s = dsub.add_parser(
        "prepare", help="decode videos once into WebDataset tar shards (JPEG frames, FLAC audio, labels)",
        description="Write the clips of one split into tar shards that `dataset.format=shards` trains from "
                    "(local disk or fsspec URLs). Re-running on an unfinished folder resumes it.",
    )
    _add_dataset_args(s)
    s.add_argument("--out", required=True, help="output folder (local; copy it to object storage afterwards)")
    s.add_argument("--mode", required=True, choices=("train", "val", "test"),
                   help="train: a span to draw random clips from; val: the middle clip; test: num_test_clips clips")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a DataConfig field (frame_rate, num_frames, min_resize, audio_seconds, ...)")
    s.add_argument("--modalities", default="rgb,spectrogram", help="stored modalities, comma-separated")
    s.add_argument("--shard-size", type=int, default=512, help="samples per shard")
    s.add_argument("--frame-oversample", type=int, default=2,
                   help="train: frames stored per second = this x frame_rate")
    s.add_argument("--jpeg-quality", type=int, default=90)
    s.add_argument("--audio-codec", choices=("flac", "pcm16"), default="flac")
    s.add_argument("--seed", type=int, default=0, help="seed of the item order over shards")
    s.add_argument("--workers", type=int, default=1, help="processes writing shards in parallel")
    s.add_argument("--overwrite", action="store_true", help="replace finished shards in --out")
    s.add_argument("--no-progress", action="store_true")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_run_data_prepare)


def _run_data_prepare(args: argparse.Namespace) -> int:
    from .data.shards import prepare_cli

    return prepare_cli(args)


def _add_data_probe(dsub: argparse._SubParsersAction) -> None:
    s = dsub.add_parser("probe", help="what decoding finds in video files, and one sampled clip's shapes")
    s.add_argument("videos", nargs="+", metavar="VIDEO")
    s.add_argument("--json", action="store_true")
    _add_stream_options(s)
    s.set_defaults(func=_run_data_probe)


def _add_stream_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--video-stream", type=int, metavar="N",
                   help="container index of the video stream to read (default: the default one, else the first)")
    p.add_argument("--audio-stream", type=int, metavar="N",
                   help="container index of the audio stream to read (default: the default one, else the first)")


def _run_data_probe(args: argparse.Namespace) -> int:
    from .data.media_cli import probe_cli

    return probe_cli(args)


_FORMATS = ("folder", "csv", "jsonl", "audioset", "vggsound", "vggsounder", "epic100", "kinetics",
            "kinetics-sounds", "moments-in-time")


def _add_dataset_args(p: argparse.ArgumentParser) -> None:
    """Which annotations, in which format, with media under which root (mbt.data.annotations)."""
    p.add_argument("annotations", nargs="+",
                   help="annotation file(s): a folder (folder), a manifest (csv/jsonl), segment CSVs "
                        "(audioset), vggsound.csv or a VGGSound split list, vggsounder.csv, EPIC_100_*.csv, "
                        "a Kinetics CSV or a Kinetics-Sounds list")
    p.add_argument("--format", required=True, choices=_FORMATS, help="annotation format")
    _add_annotation_options(p)


def _add_annotation_options(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The options of `_add_dataset_args` besides the files and their format."""
    p.add_argument("--classes", help="class list (AudioSet class_labels_indices.csv, VGGSound stat.csv, ...)")
    p.add_argument("--verb-classes", help="EPIC_100_verb_classes.csv (default: next to the annotations)")
    p.add_argument("--noun-classes", help="EPIC_100_noun_classes.csv (default: next to the annotations)")
    p.add_argument("--root", help="folder holding the media files (checked for missing files)")
    p.add_argument("--path-pattern", help='file naming under --root, e.g. "{ytid}_{start:06d}"')
    p.add_argument("--ext", help="media file extension to look for (default: any video/audio extension)")
    p.add_argument("--split", help="keep the rows of this split (vggsound: train/test; kinetics)")
    p.add_argument("--untrimmed", action="store_true",
                   help="files are full source videos: cut [start, end] out of them (YouTube formats)")
    p.add_argument("--skip-bad", action="store_true", help="skip bad rows (counted) instead of failing")
    p.add_argument("--duplicates", choices=("error", "keep", "drop"), default="error",
                   help="a clip listed twice: refuse the file (default), or keep/drop the repeats (reported)")


def _add_data_summary(dsub: argparse._SubParsersAction) -> None:
    s = dsub.add_parser("summary", help="parse annotations: classes, items, problems, missing files")
    _add_dataset_args(s)
    s.add_argument("--first", type=int, default=5, help="items, problems and missing files to show")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_run_data_summary)


def _run_data_summary(args: argparse.Namespace) -> int:
    from .data.annotations import summary_cli

    return summary_cli(args)


def _add_data_stats(dsub: argparse._SubParsersAction) -> None:
    s = dsub.add_parser("stats", help="mean/std of the log-mel spectrogram over a dataset (for DataConfig)")
    _add_dataset_args(s)
    s.add_argument("--max-items", type=int, help="use at most this many items, evenly spread")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a DataConfig field (sample_rate, audio_seconds, num_mel_bins, ...)")
    s.add_argument("--num-workers", type=int, default=0, help="decoding worker processes")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_run_data_stats)


def _run_data_stats(args: argparse.Namespace) -> int:
    from .data.dataset import stats_cli

    return stats_cli(args)


# ---------------------------------------------------------------------- train / eval
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train MBT (a paper preset or a config file, KEY=VALUE overrides); torchrun for DDP",
        description="Train MBT. Config = preset (or defaults) <- --config file <- --set overrides; the "
                    "resolved config is saved in the run folder. Under torchrun every process runs this.",
    )
    p.add_argument("--preset", help="a paper experiment (see --list-presets), e.g. audioset-mini")
    p.add_argument("--config", help="YAML/JSON file with model/data/dataset/train sections")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override any field, e.g. train.lr=0.1 model.fusion_layer=4 dataset.root=/data")
    p.add_argument("--run-dir", help="run folder (default runs/<name>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its latest checkpoint")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--list-presets", action="store_true", help="list the presets and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the final results as JSON")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from .train.commands import train_cli

    return train_cli(args)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="evaluate a run or a saved model: metrics JSON and per-video predictions",
        description="Multi-clip evaluation (logits averaged per video, over all processes under torchrun). "
                    "Writes metrics.json, predictions.jsonl and predictions.npz.",
    )
    p.add_argument("target", help="a run folder (config.yaml) or a model folder (config.json)")
    p.add_argument("--split", choices=("test", "val"), default="test",
                   help="test: num_test_clips x num_test_crops views per video; val: one middle clip")
    p.add_argument("--data", nargs="+", metavar="FILE", help="annotation file(s) (default: the run's)")
    p.add_argument("--format", help="annotation format (folder, csv, jsonl, audioset, vggsound, vggsounder, epic100, "
                                    "kinetics, kinetics-sounds)")
    p.add_argument("--root", help="folder holding the media files")
    p.add_argument("--classes", help="class list file")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable or missing media (reported)")
    p.add_argument("--weights", choices=("best", "final", "latest"),
                   help="run folders: which model (default best, else final)")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override data.*, dataset.* or train.* (device, amp, num_workers) fields")
    p.add_argument("--batch-size", type=int, help="views per batch per process (default 8)")
    p.add_argument("--num-workers", type=int, help="loader worker processes")
    p.add_argument("--out", help="output folder (default: <run>/eval/<split>-<weights> or <model>/eval-<split>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the whole report, not only the metrics")
    p.set_defaults(func=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    from .train.commands import eval_cli

    return eval_cli(args)


# ---------------------------------------------------------------------- demo and inference
def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train small MBT variants on generated audio-visual clips and compare them")
    p.add_argument("--out", default="mbt-demo", help="output folder (default: mbt-demo)")
    p.add_argument("--epochs", type=int, help="training epochs per variant (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated data")
    p.add_argument("--variants", nargs="+", metavar="NAME",
                   help="variants to train: audio, video, late, cross, bottleneck (default: all)")
    p.add_argument("--cache-dir", help="where the generated clips are kept (default $MBT_CACHE or ~/.cache/mbt)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .demo import VARIANTS, DemoConfig, run_demo

    cfg = DemoConfig(out=args.out, cache_dir=args.cache_dir)
    cfg.data = replace(cfg.data, seed=args.seed)
    if args.epochs:
        cfg.train = replace(cfg.train, epochs=args.epochs)
    if args.variants:
        chosen = []
        for word in args.variants:
            match = [v for v in VARIANTS if v.split()[0].startswith(word.lower())]
            if len(match) != 1:
                raise ValueError(f"--variants: {word!r} matches {match or 'none'} of {list(VARIANTS)}")
            chosen.append(match[0])
        cfg.variants = tuple(chosen)
    report = run_demo(cfg, progress=not args.no_progress)
    from .demo.run import markdown_table

    print()
    print(markdown_table(report["rows"]))
    print(f"\n{report['seconds']['total_s']:.0f} s on {report['threads']} CPU threads. Written to {args.out}/: "
          "results.md, results.json, curves.png, accuracy.png, model/")
    print(f"Try it: mbt predict {report['data']}/clips/test_00000.mp4 --model {report['model']}")
    return 0


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="top classes of media files (clip-averaged), or over time (--timeline)")
    p.add_argument("videos", nargs="+", help="video or audio files (mp4, mkv, wav, mp3, flac, m4a, ogg, ...)")
    p.add_argument("--model", required=True, help="a model folder (save_pretrained format)")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--clips", type=int, help="clips per video (default: enough to cover it, >= num_test_clips)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    _add_stream_options(p)
    p.add_argument("--timeline", metavar="DIR",
                   help="sliding windows over each file (any length, decoded in one streamed pass): "
                        "timeline.csv, timeline.json and timeline.png in DIR (DIR/<file name>/ for several files)")
    p.add_argument("--window", type=float, help="--timeline: window seconds (default: the model's clip length)")
    p.add_argument("--hop", type=float, help="--timeline: seconds between window starts (default: window / 2)")
    p.add_argument("--no-progress", action="store_true", help="--timeline: no progress bar")
    p.set_defaults(func=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    from .inference import Predictor

    predictor = Predictor(args.model, device=args.device)
    streams = {"video_stream": args.video_stream, "audio_stream": args.audio_stream}
    predictor.data = replace(predictor.data, **{k: v for k, v in streams.items() if v is not None})
    if args.timeline:
        return _run_timeline(predictor, args)
    failed = 0
    for path in args.videos:
        try:
            pred = predictor.predict(path, args.topk, args.clips)
        except (OSError, RuntimeError, ValueError) as e:
            failed += 1
            print(f"{path}: error: {e}", file=sys.stderr)
            continue
        if pred.damage:
            print(f"warning: {path}: decoded with concealed damage: {pred.damage}", file=sys.stderr)
        if args.json:
            print(json.dumps(pred.to_dict()))
            continue
        extra = f"  ({pred.note})" if pred.note else ""
        print(f"{path}  [{pred.num_clips} clip(s), {'+'.join(pred.modalities)}]{extra}")
        for head, ranking in pred.heads.items():
            print(f"  {head}:")
            for name, prob in ranking:
                print(f"    {prob:7.2%}  {name}")
        if pred.heads and len(pred.heads) != 2:
            continue
        if pred.heads:
            print("  actions (joint):")
        for name, prob in pred.top:
            print(f"{'    ' if pred.heads else '  '}{prob:7.2%}  {name}")
    return 1 if failed else 0


def _run_timeline(predictor: Any, args: argparse.Namespace) -> int:
    from pathlib import Path

    from .timeline import timeline, write_timeline

    for path in args.videos:
        out = Path(args.timeline) / Path(path).name if len(args.videos) > 1 else Path(args.timeline)
        tl = timeline(predictor, path, args.window, args.hop, progress=not args.no_progress)
        written = write_timeline(tl, out, topk=args.topk)
        extra = f"  ({tl.note})" if tl.note else ""
        print(f"{path}  [{len(tl.starts)} windows of {tl.window:g} s every {tl.hop:g} s, "
              f"{'+'.join(tl.modalities)}]{extra}: {', '.join(str(w) for w in written)}")
    return 0


def _add_embed(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed", help="pooled per-modality embeddings of video files, or of a whole dataset (--format)",
        description="Video files -> one .npz. Annotation files with --format -> a folder of safetensors chunks "
                    "(per-modality and fused embeddings, masks of the modalities present, labels; ids in JSON), "
                    "written so that rerunning an interrupted command finishes it.",
    )
    p.add_argument("videos", nargs="+", help="video files, or annotation file(s) with --format")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True,
                   help="output .npz (video files: paths, one [N, D] array per modality, NaN rows for files "
                        "without it, and its mask has_<modality> [N]) or folder (--format)")
    p.add_argument("--device", default="cpu")
    g = p.add_argument_group("whole datasets (--format)")
    g.add_argument("--format", choices=_FORMATS, help="the files are annotations in this format")
    _add_annotation_options(g)
    g.add_argument("--mode", choices=("test", "val"), default="test",
                   help="test: num_test_clips x num_test_crops views per item, averaged; val: the middle clip")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the model's DataConfig (num_test_clips, num_test_crops, ...)")
    g.add_argument("--batch-size", type=int, default=8, help="views per batch")
    g.add_argument("--num-workers", type=int, default=0, help="decoding worker processes")
    g.add_argument("--chunk-size", type=int, default=1024, help="items per written chunk (the unit of resuming)")
    g.add_argument("--overwrite", action="store_true", help="start over in a folder made with other settings")
    g.add_argument("--no-progress", action="store_true")
    g.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_run_embed)


def _run_embed(args: argparse.Namespace) -> int:
    if args.format:
        return _run_embed_dataset(args)
    import numpy as np

    from .inference import embed

    arrays = embed(args.videos, args.model, device=args.device)
    np.savez(args.out, paths=np.array(args.videos), **arrays)
    shapes = ", ".join(f"{m} {list(a.shape)}" for m, a in arrays.items() if not m.startswith("has_"))
    shapes += "".join(f"; {int((~a).sum())} file(s) without {k[4:]}" for k, a in arrays.items()
                      if k.startswith("has_") and not a.all())
    print(f"wrote {args.out}: {shapes}")
    return 0


def _run_embed_dataset(args: argparse.Namespace) -> int:
    from .data.annotations import annotations_from_args
    from .data.config import load_data_config
    from .embed_dataset import embed_dataset
    from .overrides import apply_overrides

    args.annotations = args.videos
    report = embed_dataset(
        args.model, annotations_from_args(args), args.out, data=apply_overrides(load_data_config(args.model), args.set),
        mode=args.mode, batch_size=args.batch_size,
        num_workers=args.num_workers, chunk_size=args.chunk_size, device=args.device, skip_bad=args.skip_bad,
        overwrite=args.overwrite, progress=not args.no_progress,
    )
    if args.json:
        _print_json(report)
        return 0
    without = ", ".join(f"{n} without {m}" for m, n in report["without"].items() if n)
    print(f"wrote {report['out']}: {report['embedded']} of {report['num_items']} items "
          f"({report['chunks_resumed']} chunks already done, {report['chunks_written']} written"
          + (f"; {without}" if without else "") + f"; {len(report['skipped'])} unreadable skipped)")
    return 0


def _add_probe(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "probe", help="linear probe on embeddings: fit on one split's, report the dataset's metric on another's",
        description="Logistic regression (softmax, per-head softmax or sigmoid, as the dataset's labels) on "
                    "embeddings written by `mbt embed --format`, fitted by L-BFGS on standardised features.",
    )
    p.add_argument("train", help="embeddings folder to fit on")
    p.add_argument("test", help="embeddings folder to score on")
    p.add_argument("--feature", default="fused", help="fused (default), rgb or spectrogram")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="L2 penalty on the weights")
    p.add_argument("--max-iter", type=int, default=500, help="L-BFGS iterations")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", help="also write the probe (weight, bias, mean, std) to this .safetensors file")
    p.add_argument("--json", action="store_true", help="print all metrics as JSON")
    p.set_defaults(func=_run_probe)


def _run_probe(args: argparse.Namespace) -> int:
    from .embed_dataset import load_embeddings
    from .probe import linear_probe

    result = linear_probe(load_embeddings(args.train), load_embeddings(args.test), feature=args.feature,
                          weight_decay=args.weight_decay, max_iter=args.max_iter, device=args.device)
    weights = result.pop("weights")
    if args.out:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in weights.items()}, args.out)
    if args.json:
        _print_json(result)
        return 0
    left = result["left_out"]
    note = f" ({left['train']} train / {left['test']} test rows without {args.feature} left out)" if any(
        left.values()) else ""
    print(f"linear probe on {args.feature}: {result['metric']} {result['value']:.4f} on {result['num_test']} items, "
          f"fitted on {result['num_train']} (train {result['metric']} "
          f"{result['train_metrics'][result['metric']]:.4f}){note}")
    return 0


def _add_explain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="pictures of what the model attends to in a video")
    p.add_argument("video")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True, help="output folder for the PNG files")
    p.add_argument("--start", type=float, metavar="SECONDS",
                   help="explain the clip starting this many seconds into the file (default: the middle clip)")
    p.add_argument("--class", dest="target", metavar="NAME|INDEX",
                   help="weight the attention by the gradient of this class (default: plain attention)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_run_explain)


def _run_explain(args: argparse.Namespace) -> int:
    from .inference import explain

    for path in explain(args.video, args.model, args.out, device=args.device, start=args.start, target=args.target):
        print(path)
    return 0


# ---------------------------------------------------------------------- bench
def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="speed, peak memory and FLOP/s (vs a matmul measured alongside) of the fusion variants",
        description="Time eval and training steps of each fusion variant, with achieved FLOP/s as a fraction of "
                    "a large matmul timed in the same rounds (medians over rounds) and the peak memory of a step; "
                    "each case runs in a fresh process. See docs/benchmarks.md.",
    )
    from .bench import add_bench_arguments

    add_bench_arguments(p)
    p.set_defaults(func=_run_bench)


def _run_bench(args: argparse.Namespace) -> int:
    from .bench import bench_cli

    return bench_cli(args)


# ---------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mbt", description="Multimodal Bottleneck Transformers for audio-visual classification."
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)
    _add_convert(sub)
    _add_flops(sub)
    _add_export(sub)
    _add_data(sub)
    _add_train(sub)
    _add_eval(sub)
    _add_demo(sub)
    _add_predict(sub)
    _add_embed(sub)
    _add_probe(sub)
    _add_explain(sub)
    _add_bench(sub)
    return parser


def _version() -> str:
    from . import __version__

    return f"mbt {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as e:
        # bad input (configs, files, videos) is reported in one line; MBT_DEBUG=1 shows the traceback
        if os.environ.get("MBT_DEBUG"):
            raise
        print(f"mbt {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
