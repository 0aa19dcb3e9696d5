"""`mbt convert scenic`: official (Scenic) checkpoints into mbt's format."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
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
    s.set_defaults(func=run_scenic)


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
