"""`mbt train` and `mbt eval`: argument handling around `train()` and `evaluate()`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from ..models.config import ConfigError
from .config import DatasetConfig, ExperimentConfig, TrainConfig
from .presets import PRESETS, preset


def resolve_config(args: argparse.Namespace) -> ExperimentConfig:
    """Preset (or defaults) <- config file <- --set; with --resume, the run's saved config <- --set."""
    if args.resume:
        if args.preset or args.config:
            raise ConfigError("--resume takes the config saved in the run folder; drop --preset/--config")
        saved = Path(args.resume) / "config.yaml"
        if not saved.is_file():
            raise FileNotFoundError(f"{args.resume}: not a run folder (no config.yaml)")
        cfg = ExperimentConfig.load(saved)
    else:
        cfg = preset(args.preset) if args.preset else ExperimentConfig()
        if args.config:
            cfg = ExperimentConfig.load(args.config, cfg)
    return cfg.override(args.set) if args.set else cfg


def train_cli(args: argparse.Namespace) -> int:
    if args.list_presets:
        import inspect
        import textwrap

        for name, fn in PRESETS.items():
            text = " ".join(inspect.getdoc(fn).split()) if fn.__doc__ else ""
            print(textwrap.fill(text, 100, initial_indent=f"{name:20s} ", subsequent_indent=" " * 21,
                                break_on_hyphens=False, break_long_words=False))
        return 0
    cfg = resolve_config(args)
    if args.print_config:
        yaml.safe_dump(cfg.to_dict(), sys.stdout, sort_keys=False)
        return 0
    from .loop import train

    run_dir = args.resume or args.run_dir
    results = train(cfg, run_dir, resume=bool(args.resume), progress=not args.no_progress)
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return 0


def _eval_config(args: argparse.Namespace) -> tuple[ExperimentConfig, Any, Path]:
    """(config, model, default output folder) for a run folder or a saved model folder."""
    from ..data.config import load_data_config
    from ..models.mbt import MBT
    from ..weights import load_pretrained

    target = Path(args.target)
    if (target / "config.yaml").is_file():  # a run folder
        cfg = ExperimentConfig.load(target / "config.yaml")
        choice = args.weights or ("best" if (target / "best" / "config.json").is_file() else "final")
        if choice == "latest":
            from .checkpoint import load_resume_checkpoint

            model = MBT(cfg.model)
            model.load_state_dict(load_resume_checkpoint(target / "checkpoints")[0]["model"])
        else:
            model = load_pretrained(target / choice)
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
    return cfg, model, Path(args.out) if args.out else out


def _weights_chosen_on(args: argparse.Namespace) -> str:
    """What chose the evaluated weights, as recorded with them (`best` models of a run)."""
    from ..models.pretrained import read_config

    target = Path(args.target)
    if (target / "config.yaml").is_file():
        choice = args.weights or ("best" if (target / "best" / "config.json").is_file() else "final")
        if choice != "best":
            return f"nothing: the {choice} weights of the run"
        target = target / "best"
    return read_config(target).get("weights_chosen_on") or "not recorded with these weights"


def eval_cli(args: argparse.Namespace) -> int:
    from .data import load_split_annotations
    from .distributed import barrier, init_distributed, shutdown
    from .evaluate import evaluate, json_safe, modality_subset_metrics, write_eval_tables, write_predictions
    from .precision import resolve_amp

    cfg, model, out = _eval_config(args)
    m = cfg.model
    annotations = load_split_annotations(cfg, args.split)
    if annotations is None:
        raise ConfigError(f"no annotation file for the {args.split} split: give --data FILE (and --format)")
    if annotations.num_classes != m.num_classes or (m.label_names and list(m.label_names) != annotations.class_names):
        raise ConfigError(
            f"the {args.split} annotations have {annotations.num_classes} classes "
            f"(first {annotations.class_names[:3]}) but the model was trained on {m.num_classes} "
            f"(first {list(m.label_names or [])[:3]}); give the model's class list with --classes"
        )
    from .data import build_dataset

    dataset = build_dataset(cfg, args.split, annotations)
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
                "weights_chosen_on": _weights_chosen_on(args),
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
                "predictions": paths,
            }
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
