"""The Python face of the `mbt` command, verb for verb, with the options' names:
`mbt.train`, `mbt.evaluate`, `mbt.predict`, `mbt.embed`, `mbt.explain`, `mbt.export`,
`mbt.timeline`, `mbt.probe`.

    import mbt
    results = mbt.train(preset="tiny", set=["dataset.format=folder", "dataset.train=[my_videos/train]"],
                        run_dir="runs/quick")
    report = mbt.evaluate("runs/quick", data=["my_videos/test"], format="folder")
    predictions = mbt.predict(["clip.mp4"], model="runs/quick", topk=3)

Each function takes what its command takes (`--run-dir` is `run_dir`, `--set` is `set`, a
comma list such as `--modalities rgb,spectrogram` a list) and returns what the command prints
(as objects); the command line is these functions plus printing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .inference import Prediction, Predictor
from .train.launch import train

__all__ = ["embed", "evaluate", "explain", "export", "predict", "probe", "timeline", "train"]


def _names(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """A `--modalities`-style choice: 'rgb,spectrogram' or ['rgb', 'spectrogram']."""
    if value is None:
        return None
    return tuple(value.split(",")) if isinstance(value, str) else tuple(value)


def _paths(value: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    return [os.fspath(value)] if isinstance(value, (str, os.PathLike)) else [os.fspath(v) for v in value]


# ---------------------------------------------------------------------------------- evaluate
def _eval_config(target: str | os.PathLike, split: str, data: Sequence[str] | None, format: str | None,
                 root: str | None, classes: str | None, skip_bad: bool, weights: str | None, set: Sequence[str],
                 batch_size: int | None, num_workers: int | None) -> tuple[Any, Any, Path]:
    """(config, model, default output folder) for a run folder or a saved model folder."""
    from .data.config import load_data_config
    from .errors import ConfigError
    from .train.config import DatasetConfig, ExperimentConfig, TrainConfig
    from .train.run_folder import load_run_weights
    from .weights import load_pretrained

    target = Path(target)
    if (target / "config.yaml").is_file():  # a run folder
        cfg = ExperimentConfig.load(target / "config.yaml")
        choice, model = load_run_weights(target, weights, cfg.model)  # type: ignore[arg-type]
        out = target / "eval" / f"{split}-{choice}"
    elif (target / "config.json").is_file():  # a save_pretrained folder
        if weights:
            raise ConfigError("--weights applies to run folders; a model folder holds one model")
        model = load_pretrained(target)
        cfg = ExperimentConfig(model=model.config, data=load_data_config(target),
                               dataset=DatasetConfig(), train=TrainConfig(init_from=None))
        out = target / f"eval-{split}"
    else:
        raise FileNotFoundError(f"{target}: neither a run folder (config.yaml) nor a model folder (config.json)")
    changes: dict[str, Any] = {}
    if format:
        changes["format"] = format
    if root:
        changes["root"] = root
    if classes:
        changes["classes"] = classes
    if data:
        changes[split] = _paths(data)
    if skip_bad:
        changes["skip_bad"] = True
    cfg = ExperimentConfig.from_dict({"dataset": changes}, cfg) if changes else cfg
    train_changes: dict[str, Any] = {}
    if batch_size:
        train_changes["eval_batch_size"] = batch_size
    if num_workers is not None:
        train_changes["num_workers"] = num_workers
    if train_changes:
        cfg = ExperimentConfig.from_dict({"train": train_changes}, cfg)
    if set:
        if "model" in {s.partition("=")[0].partition(".")[0] for s in set}:
            raise ConfigError("--set model.*: the model is fixed by the weights being evaluated")
        cfg = cfg.override(list(set))
    return cfg, model, out


def evaluate(target: str | os.PathLike, *, split: str = "test", data: str | Sequence[str] | None = None,
             format: str | None = None, root: str | None = None, classes: str | None = None,
             skip_bad: bool = False, modalities: str | Sequence[str] | None = None, weights: str | None = None,
             set: Sequence[str] = (), batch_size: int | None = None, num_workers: int | None = None,
             out: str | os.PathLike | None = None, progress: bool = True) -> dict[str, Any]:
    """`mbt eval`: multi-clip evaluation of a run folder (`weights`: best, final or latest) or a
    model folder on `split`'s annotations (the run's, or `data` in `format`); writes
    metrics.json, predictions.jsonl/.npz, per_class.csv (and confusion.png) to `out` and
    returns metrics.json's content. `modalities` evaluates with only those towers (the others
    are neither decoded nor run)."""
    from .errors import ConfigError
    from .train.data import NAMED_CLASS_FORMATS, build_dataset, load_split_annotations
    from .train.distributed import barrier, init_distributed, shutdown
    from .train.evaluate import (
        evaluate as evaluate_model,
        json_safe,
        modality_subset_metrics,
        write_damaged,
        write_eval_tables,
        write_predictions,
    )
    from .train.precision import resolve_amp
    from .train.run_folder import weights_chosen_on

    chosen = _names(modalities)
    cfg, model, default_out = _eval_config(target, split, [data] if isinstance(data, str) else data, format, root,
                                           classes, skip_bad, weights, set, batch_size, num_workers)
    if out is None:
        out = default_out.with_name(f"{default_out.name}-{'+'.join(chosen)}") if chosen else default_out
    out = Path(out)
    m = cfg.model
    # the labels map to the model's own classes when it names them and no class list is given
    by_model = bool(m.label_names) and cfg.dataset.classes is None and cfg.dataset.format in NAMED_CLASS_FORMATS
    annotations = load_split_annotations(cfg, split, m.label_names if by_model else None)
    if annotations is None:
        raise ConfigError(f"no annotation file for the {split} split: give --data FILE (and --format)")
    if annotations.num_classes != m.num_classes or (m.label_names and list(m.label_names) != annotations.class_names):
        raise ConfigError(
            f"the {split} annotations have {annotations.num_classes} classes "
            f"(first {annotations.class_names[:3]}) but the model was trained on {m.num_classes} "
            f"(first {list(m.label_names or [])[:3]}); give the model's class list with --classes"
        )
    dataset = build_dataset(cfg, split, annotations, chosen or m.modalities)
    d = init_distributed(cfg.train.device)
    report: dict[str, Any] = {}
    try:
        amp_dtype, _ = resolve_amp(cfg.train.amp, d.device)
        model.to(d.device)
        result = evaluate_model(
            model, dataset, batch_size=cfg.train.eval_batch_size or 8, dist=d, amp_dtype=amp_dtype,
            num_workers=cfg.train.num_workers, multi_label=m.multi_label, class_splits=m.class_splits,
            split_names=m.split_names, desc=split, progress=progress,
        )
        if d.is_main:
            names = list(m.label_names or [str(i) for i in range(m.num_classes)])
            heads = {"class_names": names, "multi_label": m.multi_label, "class_splits": m.class_splits,
                     "split_names": m.split_names}
            paths = write_predictions(result, out, **heads)
            paths.update(write_eval_tables(result, out, **heads))
            report = {
                "target": str(target),
                "split": split,
                "weights_chosen_on": weights_chosen_on(target, weights),  # type: ignore[arg-type]
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
                "non_finite_scores": [f"{p}: {r}" for p, r in result.non_finite],
                "predictions": paths,
            }
            if result.damaged:
                paths["damaged"] = str(write_damaged(result, out))
            with open(out / "metrics.json", "w") as f:
                json.dump(report, f, indent=2)
        barrier(d)
    finally:
        shutdown(d)
    return report


# ---------------------------------------------------------------------------------- files
def predict(videos: str | os.PathLike | Sequence[str | os.PathLike], model: str | os.PathLike, *,
            topk: int | None = None, clips: int | None = None, device: str = "cpu",
            modalities: str | Sequence[str] | None = None,
            video_stream: int | None = None, audio_stream: int | None = None) -> list[Prediction]:
    """`mbt predict`: the top classes of each media file (clip-averaged) with a model folder or a
    run folder; `clips` per file (default: enough to cover it), `modalities` a subset of the
    model's towers; `topk` 1 to the model's classes (default 5, or all when fewer)."""
    predictor = _predictor(model, device, modalities, video_stream, audio_stream)
    topk = predictor.topk(topk)  # checked once, before any file
    return [predictor.predict(p, topk, clips) for p in _paths(videos)]


def _predictor(model: str | os.PathLike, device: str, modalities: str | Sequence[str] | None,
               video_stream: int | None = None, audio_stream: int | None = None) -> Predictor:
    from dataclasses import replace

    predictor = Predictor(model, device=device, modalities=_names(modalities))
    streams = {"video_stream": video_stream, "audio_stream": audio_stream}
    predictor.data = replace(predictor.data, **{k: v for k, v in streams.items() if v is not None})
    return predictor


def timeline(video: str | os.PathLike, model: str | os.PathLike, *, out: str | os.PathLike | None = None,
             window: float | None = None, hop: float | None = None, topk: int | None = None, device: str = "cpu",
             modalities: str | Sequence[str] | None = None, progress: bool = False) -> Any:
    """`mbt predict --timeline OUT`: per-window predictions over a file of any length (a
    `mbt.timeline.Timeline`); with `out`, also timeline.csv/.json/.png there."""
    from .timeline import timeline as run, write_timeline

    predictor = _predictor(model, device, modalities)
    topk = predictor.topk(topk)
    tl = run(predictor, os.fspath(video), window, hop, progress=progress)
    if out is not None:
        write_timeline(tl, out, topk=topk)
    return tl


def embed(videos: str | os.PathLike | Sequence[str | os.PathLike], model: str | os.PathLike, *,
          out: str | os.PathLike | None = None, device: str = "cpu", format: str | None = None,
          mode: str = "test", set: Sequence[str] = (), batch_size: int = 8, num_workers: int = 0,
          chunk_size: int = 1024, overwrite: bool = False, progress: bool = False,
          **annotation_options: Any) -> dict[str, Any]:
    """`mbt embed`. Media files: per-modality embeddings [N, D] (NaN rows for a modality a file
    lacks), `fused` [N, D] and the masks `has_<modality>` [N], also saved to the `out` .npz.
    With `format`, `videos` are annotation files (`annotation_options`: classes, root,
    path_pattern, ext, split, skip_bad, duplicates, ... as `mbt.data.annotations.load_annotations`)
    and the whole dataset is embedded into the `out` folder; returns the report."""
    from .inference import embed as embed_files

    if format is None:
        arrays = embed_files(_paths(videos), model, device=device)
        if out is not None:
            np.savez(out, paths=np.array(_paths(videos)), **arrays)
        return arrays
    from .data.annotations import load_annotations
    from .data.config import load_data_config
    from .embed_dataset import embed_dataset
    from .overrides import apply_overrides

    if out is None:
        raise ValueError("embed with format: give the output folder (out)")
    fields = [s.split(".", 1)[1] if s.startswith("data.") else s for s in set]
    data = apply_overrides(load_data_config(model), fields)
    annotations = load_annotations(format, _paths(videos), **annotation_options)
    return embed_dataset(model, annotations, out, data=data, mode=mode, batch_size=batch_size,
                         num_workers=num_workers, chunk_size=chunk_size, device=device,
                         skip_bad=bool(annotation_options.get("skip_bad", False)), overwrite=overwrite,
                         progress=progress)


def explain(video: str | os.PathLike, model: str | os.PathLike, out: str | os.PathLike, *,
            start: float | None = None, target: str | int | None = None, device: str = "cpu") -> list[Path]:
    """`mbt explain`: pictures of where the bottleneck tokens look in the clip at `start` (default:
    the middle one), weighted by the gradient of class `target` (`--target`/`--class`) if given."""
    return Predictor(model, device=device).explain(os.fspath(video), out, start, target)


def export(model: str | os.PathLike, out: str | os.PathLike, *, format: str | None = None,
           allow_unverified: bool = False) -> str:
    """`mbt export`: a model folder (or run folder) as ONNX or a torch.export program, the format
    from `out`'s extension (.onnx, .pt2) unless given; a folder without `weights_sha256` only
    with `allow_unverified`."""
    from .export import export_pretrained

    return export_pretrained(model, out, format, allow_unverified=allow_unverified)


def probe(train: Any, test: Any, *, feature: str = "fused", weight_decay: float = 1e-4, max_iter: int = 500,
          device: str = "cpu", out: str | os.PathLike | None = None) -> dict[str, Any]:
    """`mbt probe`: a linear probe fitted on the `train` embeddings folder (written by `mbt.embed`
    with a format, or loaded `Embeddings`) and scored on `test`; with `out`, the probe's weights
    are saved there (.safetensors)."""
    from .embed_dataset import Embeddings, load_embeddings
    from .probe import linear_probe

    sets = [e if isinstance(e, Embeddings) else load_embeddings(e) for e in (train, test)]
    result = linear_probe(*sets, feature=feature, weight_decay=weight_decay, max_iter=max_iter, device=device)
    if out is not None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in result["weights"].items()}, os.fspath(out))
    return result
