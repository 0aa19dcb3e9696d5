"""`mbt convert scenic|ast|cav-mae|audiomae`: official (Scenic) checkpoints and the published
AST, CAV-MAE and AudioMAE checkpoints into mbt's format."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert official (Scenic), AST, CAV-MAE and AudioMAE checkpoints into "
                                       "mbt's format")
    csub = p.add_subparsers(dest="source", required=True)
    s = csub.add_parser("scenic", help="a Scenic MBT checkpoint (flax msgpack) -> save_pretrained folder")
    s.add_argument("checkpoint", help="checkpoint file (checkpoint_<step>) or a params .npz")
    s.add_argument("--config", required=True,
                   help="the Scenic config as a JSON/YAML dump: its 'model' and 'dataset_configs' sections (the "
                        "data config saved with the model comes from the latter; missing fields take the "
                        "released AudioSet config's), or just the config.model fields")
    s.add_argument("--out", required=True, help="output folder (config.json + model.safetensors)")
    s.add_argument("--labels", help="class names file (one per line, or AudioSet class_labels_indices.csv)")
    s.set_defaults(func=run_scenic)
    for family, what in (("ast", "AST: a Hugging Face AST folder (or its model.safetensors) or the original .pth"),
                         ("cav-mae", "CAV-MAE: a pretrained (CAVMAE) or fine-tuned (CAVMAEFT) .pth"),
                         ("audiomae", "AudioMAE: a pretrained or fine-tuned .pth ({'model': ..., 'args': ...})")):
        a = csub.add_parser(family, help=f"{what} -> save_pretrained folder with its Kaldi fbank front end")
        a.add_argument("file", help="the published file (or Hugging Face model folder), unmodified")
        a.add_argument("--out", required=True, help="output folder (config.json + model.safetensors)")
        a.add_argument("--modalities", nargs="+", choices=["spectrogram", "rgb"],
                       help="encoders to convert (CAV-MAE: one branch alone, or both; default: all the file has)")
        a.add_argument("--num-classes", type=int,
                       help="classes of the head: another count than the file's (or a file without a head) gives "
                            "a fresh head (default: the file's, else 527)")
        a.add_argument("--num-heads", type=int,
                       help="attention heads, which .pth files do not record (default: width / 64, as every "
                            "released ViT)")
        a.add_argument("--target-length", type=int,
                       help="original AST .pth: the spectrogram frames it was trained on (default 1024)")
        a.add_argument("--labels", help="class names file (one per line, or AudioSet class_labels_indices.csv)")
        a.set_defaults(func=run_peer, family=family)


def run_scenic(args: argparse.Namespace) -> int:
    """`mbt convert scenic CHECKPOINT --config CONFIG --out DIR`."""
    from ..weights.scenic import FRONTEND_NOTE, convert_scenic

    model, data, from_dump = convert_scenic(args.checkpoint, args.config, args.out, args.labels)
    n = sum(p.numel() for p in model.parameters())
    print(f"converted {args.checkpoint} -> {args.out} ({n:,} parameters, modalities {list(model.config.modalities)})")
    source = "its dataset_configs" if from_dump else "no dataset_configs in the config: the " \
        "released AudioSet config's, sized to the model"
    print(f"data config from {source}: {data.num_frames} frames at {data.frame_rate:g}/s, {data.image_size} px, "
          f"{data.audio_seconds:g} s x {data.num_mel_bins} mel bins, {data.num_test_clips} test clips")
    if "spectrogram" in model.config.modalities:
        print(f"note: the audio front end is only partly known; {FRONTEND_NOTE['consequence']}")
    return 0


def run_peer(args: argparse.Namespace) -> int:
    """`mbt convert ast|cav-mae|audiomae FILE --out DIR`."""
    from ..data.annotations import read_class_list
    from ..weights.peers import convert_peer

    labels = tuple(read_class_list(args.labels)) if args.labels else None
    num_classes = args.num_classes or (len(labels) if labels else None)
    model, report = convert_peer(
        args.file, args.out, args.family, modalities=tuple(args.modalities) if args.modalities else None,
        num_classes=num_classes, label_names=labels, num_heads=args.num_heads, target_length=args.target_length,
    )
    cfg = model.config
    n = sum(p.numel() for p in model.parameters())
    print(f"converted {report['layout']} {args.file} -> {args.out} ({n:,} parameters, modalities "
          f"{list(cfg.modalities)}, {cfg.num_classes} classes)")
    print(f"settings: {report['settings']}")
    for m, how in report["positions"].items():
        print(f"{m} positions: {how}")
    print(f"head: {report['head']}" + (f"; fresh: {report['fresh']}" if report["fresh"] else ""))
    print(f"front end: Kaldi fbank, {cfg.spectrogram_size[0]} frames" if "spectrogram" in cfg.modalities else "")
    return 0
