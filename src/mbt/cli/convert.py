"""`mbt convert scenic`: official (Scenic) checkpoints into mbt's format."""

from __future__ import annotations

import argparse
import json


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
    from collections.abc import Mapping

    import yaml

    from ..data.annotations import read_class_list
    from ..models.pretrained import save_pretrained
    from ..weights.scenic import (
        FRONTEND_NOTE,
        ScenicFormatError,
        data_config_from_scenic,
        from_scenic,
        scenic_input_shapes,
        split_scenic_config,
    )

    with open(args.config) as f:
        text = f.read()
    config = json.loads(text) if args.config.endswith(".json") else yaml.safe_load(text)
    if not isinstance(config, Mapping):
        raise ScenicFormatError(f"{args.config}: expected a mapping (a Scenic config or its 'model' fields)")
    model_config, dataset_configs = split_scenic_config(config)
    overrides = {"label_names": tuple(read_class_list(args.labels))} if args.labels else {}
    shapes = scenic_input_shapes(model_config, dataset_configs) if dataset_configs is not None else None
    model = from_scenic(args.checkpoint, model_config, input_shapes=shapes, **overrides)
    data = data_config_from_scenic(model.config, dataset_configs)
    save_pretrained(model, args.out, data_config=data, extra={"frontend": FRONTEND_NOTE})
    n = sum(p.numel() for p in model.parameters())
    print(f"converted {args.checkpoint} -> {args.out} ({n:,} parameters, modalities {list(model.config.modalities)})")
    source = "its dataset_configs" if dataset_configs is not None else "no dataset_configs in the config: the " \
        "released AudioSet config's, sized to the model"
    print(f"data config from {source}: {data.num_frames} frames at {data.frame_rate:g}/s, {data.image_size} px, "
          f"{data.audio_seconds:g} s x {data.num_mel_bins} mel bins, {data.num_test_clips} test clips")
    if "spectrogram" in model.config.modalities:
        print(f"note: the audio front end is only partly known; {FRONTEND_NOTE['consequence']}")
    return 0
