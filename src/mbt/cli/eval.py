"""`mbt eval`: argument handling around `mbt.evaluate()` (`mbt.api`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._options import FORMATS, add_set_option


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="evaluate a run or a saved model: metrics JSON and per-video predictions",
        description="Multi-clip evaluation (logits averaged per video, over all processes under torchrun). "
                    "Writes metrics.json, predictions.jsonl and predictions.npz.",
    )
    p.add_argument("target", help="a run folder (config.yaml) or a model folder (config.json)")
    p.add_argument("--split", choices=("test", "val"), default="test",
                   help="test: num_test_clips x num_test_crops views per video; val: one middle clip")
    p.add_argument("--data", nargs="+", metavar="FILE", help="annotation file(s) (default: the run's)")
    p.add_argument("--format", help=f"annotation format ({', '.join(FORMATS)}) or shards")
    p.add_argument("--root", help="folder holding the media files")
    p.add_argument("--classes", help="class list file")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable or missing media (reported)")
    p.add_argument("--modalities", metavar="M[,M]",
                   help="evaluate with only these of the model's towers (e.g. spectrogram: audio only); "
                        "the others are neither decoded nor run")
    p.add_argument("--weights", choices=("best", "final", "latest"),
                   help="run folders: which model (default best, else final)")
    add_set_option(p, "override data.*, dataset.* or train.* (device, amp, num_workers) fields")
    p.add_argument("--batch-size", type=int, help="views per batch per process (default 8)")
    p.add_argument("--num-workers", type=int, help="loader worker processes")
    p.add_argument("--out", help="output folder (default: <run>/eval/<split>-<weights> or <model>/eval-<split>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the whole report, not only the metrics")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..api import evaluate

    report = evaluate(
        args.target, split=args.split, data=args.data, format=args.format, root=args.root, classes=args.classes,
        skip_bad=args.skip_bad, modalities=args.modalities, weights=args.weights, set=args.set,
        batch_size=args.batch_size, num_workers=args.num_workers, out=args.out, progress=not args.no_progress,
    )
    if not report:  # not the main process
        return 0
    for note in report["annotation_notes"]:
        print(f"note: {args.split} annotations: {note}", file=sys.stderr)
    paths = report["predictions"]
    if report["damaged_files"]:
        print(f"warning: {len(report['damaged_files'])} file(s) decoded with concealed damage were evaluated "
              f"(listed in {paths['damaged']}); first: {report['damaged_files'][0]}", file=sys.stderr)
    if report["non_finite_scores"]:
        print(f"warning: {len(report['non_finite_scores'])} video(s) left out of the metrics, the model's scores "
              f"being NaN or infinite; first: {report['non_finite_scores'][0]}", file=sys.stderr)
    json.dump(report["metrics"] if not args.json else report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    out = Path(paths["jsonl"]).parent
    print(f"wrote {out / 'metrics.json'}, {paths['jsonl']}, {paths['per_class']}"
          + (f", {out / 'confusion*.png'}" if any(k.startswith("confusion") for k in paths) else ""), file=sys.stderr)
    print(f"weights chosen on: {report['weights_chosen_on']}", file=sys.stderr)
    return 0
