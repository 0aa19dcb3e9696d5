"""`mbt embed`: pooled per-modality embeddings of files, or of a whole dataset (--format)."""

from __future__ import annotations

import argparse

from ._options import (
    FORMATS,
    add_annotation_options,
    add_set_option,
    annotations_from_args,
    print_json,
    section_overrides,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed", help="pooled per-modality embeddings of video files, or of a whole dataset (--format)",
        description="Video files -> one .npz. Annotation files with --format -> a folder of safetensors chunks "
                    "(per-modality and fused embeddings, masks of the modalities present, labels; ids in JSON), "
                    "written so that rerunning an interrupted command finishes it.",
    )
    p.add_argument("videos", nargs="+", help="video files, or annotation file(s) with --format")
    p.add_argument("--model", required=True,
                   help="a model folder (save_pretrained format) or a run folder (its best model, else final)")
    p.add_argument("--out", required=True,
                   help="output .npz (video files: paths, one [N, D] array per modality, NaN rows for files "
                        "without it, and its mask has_<modality> [N]) or folder (--format)")
    p.add_argument("--device", default="cpu", help="torch device to run the model on (cpu, cuda, cuda:1, ...)")
    g = p.add_argument_group("whole datasets (--format)")
    g.add_argument("--format", choices=FORMATS, help="the files are annotations in this format")
    add_annotation_options(g)
    g.add_argument("--mode", choices=("test", "val"), default="test",
                   help="test: num_test_clips x num_test_crops views per item, averaged; val: the middle clip")
    add_set_option(g, "override fields of the model's data config, e.g. data.num_test_clips=2 "
                      "data.num_test_crops=3")
    g.add_argument("--batch-size", type=int, default=8, help="views per batch")
    g.add_argument("--num-workers", type=int, default=0, help="decoding worker processes")
    g.add_argument("--chunk-size", type=int, default=1024, help="items per written chunk (the unit of resuming)")
    g.add_argument("--overwrite", action="store_true", help="start over in a folder made with other settings")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.format:
        return _run_embed_dataset(args)
    import numpy as np

    from ..inference import embed

    arrays = embed(args.videos, args.model, device=args.device)
    np.savez(args.out, paths=np.array(args.videos), **arrays)
    shapes = ", ".join(f"{m} {list(a.shape)}" for m, a in arrays.items() if not m.startswith("has_"))
    shapes += "".join(f"; {int((~a).sum())} file(s) without {k[4:]}" for k, a in arrays.items()
                      if k.startswith("has_") and not a.all())
    print(f"wrote {args.out}: {shapes}")
    return 0


def _run_embed_dataset(args: argparse.Namespace) -> int:
    from ..data.config import load_data_config
    from ..embed_dataset import embed_dataset
    from ..overrides import apply_overrides

    data = apply_overrides(load_data_config(args.model), section_overrides(args.set, "data"))
    report = embed_dataset(
        args.model, annotations_from_args(args, args.videos), args.out, data=data,
        mode=args.mode, batch_size=args.batch_size,
        num_workers=args.num_workers, chunk_size=args.chunk_size, device=args.device, skip_bad=args.skip_bad,
        overwrite=args.overwrite, progress=not args.no_progress,
    )
    if args.json:
        print_json(report)
        return 0
    without = ", ".join(f"{n} without {m}" for m, n in report["without"].items() if n)
    print(f"wrote {report['out']}: {report['embedded']} of {report['num_items']} items "
          f"({report['chunks_resumed']} chunks already done, {report['chunks_written']} written"
          + (f"; {without}" if without else "") + f"; {len(report['skipped'])} unreadable skipped)")
    return 0
