"""Evaluation passes: logits per view, averaged per video over all processes, then metrics.

As the official `test_step` (spec §4.5), the raw logits of a video's views (clips x crops)
are averaged, with no sigmoid or softmax first, and the metrics are computed once over all
videos of the pass after gathering from every process. Views are grouped by the dataset
item they come from (`index // views`), so two rows that share a video id stay separate.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..data.dataset import PRESENCE_KEYS
from ..data.loader import build_loader, once_per_file
from ..models.mbt import class_probabilities
from .distributed import Dist, all_gather_objects
from .metrics import classification_metrics
from .precision import autocast


@dataclass
class EvalResult:
    """Video-level outputs of a pass (identical on every process)."""

    metrics: dict[str, float]
    video_ids: list[str]
    logits: np.ndarray
    """[V, C] mean logits over each video's views."""
    labels: np.ndarray
    """[V, C] targets."""
    num_views: np.ndarray
    """[V] views averaged per video (fewer than configured where views were skipped)."""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(path, reason) of unreadable views left out (skip_bad)."""
    damaged: list[tuple[str, str]] = field(default_factory=list)
    """(path, damage) of the files whose clips decoded with concealed damage (FFmpeg errors,
    corrupt or missing frames): evaluated, but listed so a score is never silently built on them."""
    non_finite: list[tuple[str, str]] = field(default_factory=list)
    """(path, reason) of the videos whose mean logits hold NaN or infinity: left out of the
    metrics and of `logits` (a NaN argmax would count as class 0), listed here."""


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Any,
    *,
    batch_size: int,
    dist: Dist,
    amp_dtype: torch.dtype | None = None,
    num_workers: int = 0,
    multi_label: bool,
    class_splits: Sequence[int] | None = None,
    split_names: Sequence[str] | None = None,
    desc: str = "eval",
    progress: bool = True,
) -> EvalResult:
    """Run `model` (in eval mode) over `dataset`, sharded over processes without padding,
    and return video-level logits and metrics. Pass the bare model, not its DDP wrapper:
    processes may get different numbers of batches."""
    was_training = model.training
    model.eval()
    views = getattr(dataset, "views", 1)
    modalities = dataset.modalities
    loader = build_loader(dataset, batch_size, train=False, num_workers=num_workers, distributed=dist.enabled)
    sums: dict[int, list[Any]] = {}  # item -> [sum of logits, views, video id, label, path]
    outputs: list[tuple[torch.Tensor, list[int], list[str], torch.Tensor, list[str]]] = []
    bar = tqdm(total=len(loader), desc=desc, unit="batch", disable=not (progress and dist.is_main),
               dynamic_ncols=True, leave=False)
    try:
        for batch in loader:
            with autocast(dist.device, amp_dtype):
                logits = forward_present(model, batch, modalities, dist.device)
            outputs.append((logits.float(), batch["index"].tolist(), batch["video_id"], batch["label"],
                            batch.get("path", batch["video_id"])))
            bar.update(1)
    finally:
        bar.close()
        model.train(was_training)
    # the logits stay on the device until the pass ends: one transfer, no wait per batch
    all_logits = torch.cat([o[0] for o in outputs]).cpu().numpy().astype(np.float64) if outputs else None
    row = 0
    for _, indices, video_ids, labels, paths in outputs:
        for i, (index, video_id) in enumerate(zip(indices, video_ids, strict=True)):
            entry = sums.setdefault(index // views, [0.0, 0, video_id, labels[i].numpy(), paths[i]])
            entry[0] = entry[0] + all_logits[row]
            entry[1] += 1
            row += 1
    merged: dict[int, list[Any]] = {}
    skipped: list[tuple[str, str]] = []
    damaged: list[tuple[str, str]] = []
    for local, local_skipped, local_damaged in all_gather_objects((sums, loader.skipped, loader.damaged), dist):
        skipped.extend(local_skipped)
        damaged.extend(local_damaged)
        for key, (total, count, video_id, label, path) in local.items():
            if key in merged:  # the views of one video were sharded over several processes
                merged[key][0] = merged[key][0] + total
                merged[key][1] += count
            else:
                merged[key] = [total, count, video_id, label, path]
    non_finite = [(merged[k][4], "the model's scores are NaN or infinite") for k in sorted(merged)
                  if not np.isfinite(merged[k][0]).all()]
    keys = [k for k in sorted(merged) if np.isfinite(merged[k][0]).all()]
    num_classes = getattr(dataset, "num_classes", None)
    logits_v = np.stack([merged[k][0] / merged[k][1] for k in keys]) if keys else np.zeros((0, num_classes or 0))
    labels_v = np.stack([merged[k][3] for k in keys]) if keys else np.zeros_like(logits_v)
    metrics = classification_metrics(
        logits_v, labels_v, multi_label=multi_label, class_splits=class_splits, split_names=split_names
    )
    counts = np.array([merged[k][1] for k in keys], dtype=np.int64)
    metrics["num_views"] = float(counts.sum())
    metrics["num_skipped"] = float(len(skipped))
    damaged = once_per_file(damaged)
    metrics["num_damaged_files"] = float(len(damaged))
    metrics["num_non_finite"] = float(len(non_finite))
    return EvalResult(metrics, [merged[k][2] for k in keys], logits_v, labels_v, counts, skipped, damaged,
                      non_finite)


def forward_present(model: nn.Module, batch: dict[str, Any], modalities: Sequence[str],
                    device: torch.device) -> torch.Tensor:
    """Logits of a batch with each clip run through the towers of the modalities its file
    has (`has_audio`, `has_rgb`), as `mbt.Predictor` runs a file: one forward per group of
    clips that have the same modalities. A clip with none of them is run on its filler
    inputs (silence, grey frames) rather than dropped from the metrics."""
    present = torch.stack([batch.get(PRESENCE_KEYS[m], torch.ones(len(batch[m]), dtype=torch.bool)).bool()
                           for m in modalities], dim=1)  # [B, M]
    present[~present.any(1)] = True
    groups = present.unique(dim=0)
    if len(groups) == 1 and bool(groups.all()):
        return model({m: batch[m].to(device, non_blocking=True) for m in modalities}).logits
    logits: torch.Tensor | None = None
    for group in groups:
        rows = (present == group).all(1).nonzero().squeeze(1)
        inputs = {m: batch[m][rows].to(device, non_blocking=True) for m, keep in zip(modalities, group, strict=True)
                  if keep}
        out = model(inputs).logits
        if logits is None:
            logits = out.new_empty(len(present), out.shape[1])
        logits[rows.to(device)] = out
    return logits


def _heads(num_classes: int, class_splits: Sequence[int] | None,
           split_names: Sequence[str] | None) -> list[tuple[str, int, int]]:
    """(name, first, end) of each head's logit columns: one head, or one per class split."""
    bounds = np.cumsum([0, *class_splits]).tolist() if class_splits else [0, num_classes]
    names = list(split_names) if (class_splits and split_names) else [f"head{i}" for i in range(len(bounds) - 1)]
    return [(name, lo, hi) for name, (lo, hi) in zip(names, itertools.pairwise(bounds), strict=True)]


def write_predictions(
    result: EvalResult,
    folder: str | Path,
    *,
    class_names: Sequence[str],
    multi_label: bool,
    class_splits: Sequence[int] | None = None,
    split_names: Sequence[str] | None = None,
    topk: int = 5,
) -> dict[str, str]:
    """Write `predictions.jsonl` (per video: id, views, true labels, top-k classes with
    probabilities per head) and `predictions.npz` (video ids, mean logits, labels) into
    `folder`; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    probs = class_probabilities(torch.from_numpy(result.logits), multi_label, class_splits).numpy()
    heads = _heads(len(class_names), class_splits, split_names)
    jsonl = folder / "predictions.jsonl"
    with open(jsonl, "w") as f:
        for i, video_id in enumerate(result.video_ids):
            record: dict[str, Any] = {
                "video_id": video_id,
                "num_views": int(result.num_views[i]),
                "labels": [class_names[k] for k in np.flatnonzero(result.labels[i] > 0.5)],
            }
            for head, lo, hi in heads:
                p = probs[i, lo:hi]
                top = np.argsort(-p, kind="stable")[:topk]
                key = "top" if len(heads) == 1 else f"top_{head}"
                record[key] = [[class_names[lo + k], round(float(p[k]), 6)] for k in top]
            f.write(json.dumps(record) + "\n")
    npz = folder / "predictions.npz"
    np.savez_compressed(npz, video_ids=np.array(result.video_ids), logits=result.logits.astype(np.float32),
                        labels=result.labels.astype(np.float32), num_views=result.num_views)
    return {"jsonl": str(jsonl), "npz": str(npz)}


def write_damaged(result: EvalResult, folder: str | Path) -> Path:
    """Write `damaged.csv` (path, damage): the evaluated files that decoded with concealed damage."""
    return _write_csv(Path(folder) / "damaged.csv", [{"path": p, "damage": r} for p, r in result.damaged],
                      ("path", "damage"))


def json_safe(metrics: dict[str, float]) -> dict[str, float | str | None]:
    """Metrics with NaN as null and infinities as strings, for strict JSON readers."""
    out: dict[str, float | str | None] = {}
    for k, v in metrics.items():
        if isinstance(v, float) and math.isnan(v):
            out[k] = None
        elif isinstance(v, float) and math.isinf(v):
            out[k] = "inf" if v > 0 else "-inf"
        else:
            out[k] = v
    return out


def write_eval_tables(
    result: EvalResult,
    folder: str | Path,
    *,
    class_names: Sequence[str],
    multi_label: bool,
    class_splits: Sequence[int] | None = None,
    split_names: Sequence[str] | None = None,
    top_confusions_listed: int = 100,
) -> dict[str, str]:
    """Write `per_class.csv` (see `metrics.per_class_metrics`) and, for softmax heads, the
    confusion picture `confusion.png` and the most frequent confusions `confusions.csv` (per
    head with several heads: `confusion_<head>.png`, `confusions_<head>.csv`); returns the paths."""
    from .metrics import confusion_matrix, per_class_metrics, top_confusions

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = per_class_metrics(result.logits, result.labels, multi_label=multi_label, class_names=class_names,
                             class_splits=class_splits, split_names=split_names)
    paths = {"per_class": str(_write_csv(folder / "per_class.csv", rows))}
    if multi_label or not len(result.logits):
        return paths
    heads = _heads(len(class_names), class_splits, split_names)
    for head, lo, hi in heads:
        suffix = f"_{head}" if len(heads) > 1 else ""
        names = list(class_names[lo:hi])
        matrix = confusion_matrix(result.logits[:, lo:hi], result.labels[:, lo:hi])
        paths[f"confusions{suffix}"] = str(_write_csv(folder / f"confusions{suffix}.csv",
                                                      top_confusions(matrix, names, top_confusions_listed),
                                                      ("true", "predicted", "count", "fraction_of_true")))
        paths[f"confusion{suffix}"] = str(_confusion_figure(matrix, names, folder / f"confusion{suffix}.png"))
    return paths


def _write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str] = ()) -> Path:
    import csv

    columns = list(columns or (rows[0] if rows else []))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
    return path


def _confusion_figure(matrix: np.ndarray, class_names: Sequence[str], path: Path) -> Path:
    """`confusion_figure` saved to `path`."""
    import matplotlib.pyplot as plt

    fig = confusion_figure(matrix, class_names)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


CELL_NUMBERS_UP_TO = 30
"""Classes up to which each cell of `confusion.png` shows its percentage."""


def confusion_figure(matrix: np.ndarray, class_names: Sequence[str]) -> Any:
    """Row-normalised confusion matrix with the classes sorted by accuracy (best first), so the
    weak classes and their confusions gather at the bottom right; the figure grows with the
    classes (about 8 points a class, at most 40 inches) so every name fits on the axes, in 5-7
    point type; beyond that the axes give positions (`confusions.csv` names the pairs). Up to
    `CELL_NUMBERS_UP_TO` classes each cell shows its percentage of the true class; the title
    wraps to the figure's width."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    support = matrix.sum(1)
    norm = matrix / np.maximum(support, 1)[:, None]
    order = np.lexsort((np.arange(len(matrix)), -np.diag(norm)))
    norm = norm[order][:, order]
    c = len(matrix)
    size = min(max(5.0, 4 + c * (0.4 if c <= CELL_NUMBERS_UP_TO else 0.12)), 40)
    fig, ax = plt.subplots(figsize=(size, size))
    # a square-root colour scale, so that confusions of a few percent stand out from zero
    image = ax.imshow(norm, cmap="viridis", norm=matplotlib.colors.PowerNorm(0.5, vmin=0, vmax=1),
                      interpolation="nearest")
    points = size * 72 / c  # room per class on an axis
    if points >= 5:
        fontsize = min(7.0, points * 0.8)
        ax.set_xticks(range(c), [class_names[k] for k in order], rotation=90, fontsize=fontsize)
        ax.set_yticks(range(c), [class_names[k] for k in order], fontsize=fontsize)
    if c <= CELL_NUMBERS_UP_TO:
        for i in range(c):
            for j in range(c):
                if support[order[i]]:
                    ax.text(j, i, f"{100 * norm[i, j]:.0f}", ha="center", va="center", fontsize=7,
                            color="black" if norm[i, j] > 0.5 else "white")
    ax.set_xlabel("predicted class" + ("" if points >= 5 else " (names in confusions.csv)"))
    ax.set_ylabel("true class (sorted by accuracy, best first)")
    title = (f"confusion matrix, {c} classes, rows normalised"
             + (" (% of the true class)" if c <= CELL_NUMBERS_UP_TO else "")
             + f"; mean-class accuracy {np.diag(norm)[support[order] > 0].mean():.1%}")
    ax.set_title("\n".join(textwrap.wrap(title, max(20, int(size * 72 / 6.5)))), fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.03)
    fig.tight_layout()
    return fig


def modality_subset_metrics(result: EvalResult, annotations: Any) -> dict[str, dict[str, float]]:
    """VGGSounder: multi-label metrics on each modality subset (`VGGSOUNDER_SUBSETS`): per subset,
    the videos with a label of those tags, targets restricted to those labels."""
    from ..data.annotations import VGGSOUNDER_SUBSETS, modality_subset_targets
    from .metrics import classification_metrics

    row_of = {v: i for i, v in enumerate(result.video_ids)}
    out = {}
    for subset in VGGSOUNDER_SUBSETS:
        positions, labels = modality_subset_targets(annotations, subset)
        pairs = [(row_of[annotations.items[p].video_id], lab) for p, lab in zip(positions, labels, strict=True)
                 if annotations.items[p].video_id in row_of]
        target = np.zeros((len(pairs), result.logits.shape[1]))
        for r, (_, lab) in enumerate(pairs):
            target[r, list(lab)] = 1.0
        rows = [row for row, _ in pairs]
        out[subset] = classification_metrics(result.logits[rows], target, multi_label=True)
    return out
