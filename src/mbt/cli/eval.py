"""`mbt eval`: argument handling around `mbt.train.evaluate()`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

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


def _eval_config(args: argparse.Namespace) -> tuple[Any, Any, Path]:
    """(config, model, default output folder) for a run folder or a saved model folder."""
    from ..data.config import load_data_config
    from ..errors import ConfigError
    from ..train.config import DatasetConfig, ExperimentConfig, TrainConfig
    from ..train.run_folder import load_run_weights
    from ..weights import load_pretrained

    target = Path(args.target)
    if (target / "config.yaml").is_file():  # a run folder
        cfg = ExperimentConfig.load(target / "config.yaml")
        choice, model = load_run_weights(target, args.weights, cfg.model)
        out = target / "eval" / f"{args.split}-{choice}"
    elif (target / "config.json").is_file():  # a save_pretrained folder
        if args.weights:
            raise ConfigError("--weights applies to run folders; a model folder holds one model")
        model = load_pretrained(target)
        cfg = ExperimentConfig(model=model.config, data=load_data_config(target),
                               dataset=DatasetConfig(), train=TrainConfig(init_from=None))
        out = target / f"eval-{args.split}"
    else:
        raise FileNotFoundError(f"{target}: neither a run folder (config.yaml) nor a model folder (config.json)")
    changes: dict[str, Any] = {}
    if args.format:
        changes["format"] = args.format
    if args.root:
        changes["root"] = args.root
    if args.classes:
        changes["classes"] = args.classes
    if args.data:
        changes[args.split] = args.data
    if args.skip_bad:
        changes["skip_bad"] = True
    cfg = ExperimentConfig.from_dict({"dataset": changes}, cfg) if changes else cfg
    train_changes: dict[str, Any] = {}
    if args.batch_size:
        train_changes["eval_batch_size"] = args.batch_size
    if args.num_workers is not None:
        train_changes["num_workers"] = args.num_workers
    if train_changes:
        cfg = ExperimentConfig.from_dict({"train": train_changes}, cfg)
    if args.set:
        sections = {s.partition("=")[0].partition(".")[0] for s in args.set}
        if "model" in sections:
            raise ConfigError("--set model.*: the model is fixed by the weights being evaluated")
        cfg = cfg.override(args.set)
    if args.modalities:
        out = out.with_name(f"{out.name}-{args.modalities.replace(',', '+')}")
    return cfg, model, Path(args.out) if args.out else out


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..train.data import NAMED_CLASS_FORMATS, build_dataset, load_split_annotations
    from ..train.distributed import barrier, init_distributed, shutdown
    from ..train.evaluate import (
        evaluate,
        json_safe,
        modality_subset_metrics,
        write_damaged,
        write_eval_tables,
        write_predictions,
    )
    from ..train.precision import resolve_amp
    from ..train.run_folder import weights_chosen_on

    cfg, model, out = _eval_config(args)
    m = cfg.model
    # the labels map to the model's own classes when it names them and no class list is given
    by_model = bool(m.label_names) and cfg.dataset.classes is None and cfg.dataset.format in NAMED_CLASS_FORMATS
    annotations = load_split_annotations(cfg, args.split, m.label_names if by_model else None)
    if annotations is None:
        raise ConfigError(f"no annotation file for the {args.split} split: give --data FILE (and --format)")
    if annotations.num_classes != m.num_classes or (m.label_names and list(m.label_names) != annotations.class_names):
        raise ConfigError(
            f"the {args.split} annotations have {annotations.num_classes} classes "
            f"(first {annotations.class_names[:3]}) but the model was trained on {m.num_classes} "
            f"(first {list(m.label_names or [])[:3]}); give the model's class list with --classes"
        )
    modalities = tuple(args.modalities.split(",")) if args.modalities else m.modalities
    dataset = build_dataset(cfg, args.split, annotations, modalities)
    d = init_distributed(cfg.train.device)
    try:
        amp_dtype, _ = resolve_amp(cfg.train.amp, d.device)
        model.to(d.device)
        result = evaluate(
            model, dataset, batch_size=cfg.train.eval_batch_size or 8, dist=d, amp_dtype=amp_dtype,
            num_workers=cfg.train.num_workers, multi_label=m.multi_label, class_splits=m.class_splits,
            split_names=m.split_names, desc=args.split, progress=not args.no_progress,
        )
        if d.is_main:
            for note in annotations.notes:
                print(f"note: {args.split} annotations: {note}", file=sys.stderr)
            names = list(m.label_names or [str(i) for i in range(m.num_classes)])
            paths = write_predictions(result, out, class_names=names, multi_label=m.multi_label,
                                      class_splits=m.class_splits, split_names=m.split_names)
            paths.update(write_eval_tables(result, out, class_names=names, multi_label=m.multi_label,
                                           class_splits=m.class_splits, split_names=m.split_names))
            report = {
                "target": str(args.target),
                "split": args.split,
                "weights_chosen_on": weights_chosen_on(args.target, args.weights),
                "modalities": list(dataset.modalities),
                "annotations": list(annotations.sources),
                "annotation_notes": list(annotations.notes),
                "metrics": json_safe(result.metrics),
                "num_videos": len(result.video_ids),
                **({"modality_subsets": {k: json_safe(v) for k, v in
                                         modality_subset_metrics(result, annotations).items()}}
                   if annotations.format == "vggsounder" else {}),
                "skipped": {
                    "unreadable_views": [f"{p}: {r}" for p, r in result.skipped],
                    "missing_files_left_out": [p for p, _ in getattr(dataset, "dropped", [])],
                    "annotation_rows_skipped": [str(p) for p in annotations.problems],
                },
                "damaged_files": [f"{p}: {r}" for p, r in result.damaged],
                "predictions": paths,
            }
            if result.damaged:
                paths["damaged"] = str(write_damaged(result, out))
                print(f"warning: {len(result.damaged)} file(s) decoded with concealed damage were evaluated "
                      f"(listed in {paths['damaged']}); first: {report['damaged_files'][0]}", file=sys.stderr)
            with open(out / "metrics.json", "w") as f:
                json.dump(report, f, indent=2)
            json.dump(report["metrics"] if not args.json else report, sys.stdout, indent=2)
            sys.stdout.write("\n")
            print(f"wrote {out / 'metrics.json'}, {paths['jsonl']}, {paths['per_class']}"
                  + (f", {out / 'confusion*.png'}" if not m.multi_label else ""), file=sys.stderr)
            print(f"weights chosen on: {report['weights_chosen_on']}", file=sys.stderr)
        barrier(d)
    finally:
        shutdown(d)
    return 0
