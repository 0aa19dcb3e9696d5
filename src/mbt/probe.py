"""Linear probes: how much of a dataset's labels a linear classifier reads off frozen embeddings.

A logistic regression (softmax for single-label datasets, one softmax per head for EPIC's
verb / noun, sigmoid for multi-label ones, the losses training uses) is fitted on the
embeddings of one split (`mbt embed --format`) and scored on another with the dataset's
metrics (top-1 / mAP / action accuracy), so representations can be compared without training
the model. Features are standardised with the training split's mean and std; the weights are
fitted by full-batch L-BFGS with an L2 penalty, which leaves no learning rate or schedule to
tune and gives the same result on every run.
"""

from __future__ import annotations

from typing import Any

import torch

from ._lazy import callable_module
from .embed_dataset import Embeddings
from .train.losses import head_loss
from .train.metrics import classification_metrics, primary_metric


def _features(emb: Embeddings, feature: str, name: str) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(features, labels) of the rows that have `feature`; and the rows left out."""
    if feature not in emb.tensors or feature.startswith("has_") or feature in ("labels", "item", "num_views"):
        choices = ["fused", *emb.modalities]
        raise ValueError(f"{name}: no embedding {feature!r}; choose one of {choices}")
    x, y = emb.tensors[feature].float(), emb.tensors["labels"].float()
    keep = emb.tensors.get(f"has_{feature}", torch.ones(len(x), dtype=torch.bool))
    keep = keep & x.isfinite().all(1)  # `fused` of an item with no modality at all is NaN
    return x[keep], y[keep], int((~keep).sum())


def linear_probe(
    train: Embeddings,
    test: Embeddings,
    *,
    feature: str = "fused",
    weight_decay: float = 1e-4,
    max_iter: int = 500,
    device: str = "cpu",
) -> dict[str, Any]:
    """Fit a linear classifier on `train`'s `feature` ('fused', 'rgb' or 'spectrogram') and
    score it on `test`. Rows without the feature (a missing modality) are left out of both
    and counted. Returns the primary metric's name and value, all test and train metrics,
    and the weights (`weight` [C, D], `bias` [C], `mean`, `std` [D]) applied to raw embeddings
    as `((x - mean) / std) @ weight.T + bias`."""
    if train.class_names != test.class_names:
        raise ValueError(f"the two embeddings have different class lists ({len(train.class_names)} classes, first "
                         f"{train.class_names[:3]} vs {len(test.class_names)}, first {test.class_names[:3]})")
    x, y, train_left_out = _features(train, feature, "train embeddings")
    x_test, y_test, test_left_out = _features(test, feature, "test embeddings")
    if not len(x) or not len(x_test):
        raise ValueError(f"no rows with the {feature!r} embedding to fit or score on")
    if x.shape[1] != x_test.shape[1]:
        raise ValueError(f"embedding sizes differ: {x.shape[1]} (train) vs {x_test.shape[1]} (test)")
    dev = torch.device(device)
    mean, std = x.mean(0), x.std(0, correction=0).clamp_min(1e-6)
    x, y = ((x - mean) / std).to(dev), y.to(dev)
    weight = torch.zeros(y.shape[1], x.shape[1], device=dev, requires_grad=True)
    bias = torch.zeros(y.shape[1], device=dev, requires_grad=True)
    splits = train.class_splits or None
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=20,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = x @ weight.T + bias
        loss = head_loss(logits, y, multi_label=train.multi_label, class_splits=splits)
        loss = loss + weight_decay / 2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    weight, bias = weight.detach().cpu(), bias.detach().cpu()
    label_space = {"multi_label": train.multi_label, "class_splits": splits, "split_names": train.split_names or None}

    def score(features: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        logits = ((features.cpu() - mean) / std) @ weight.T + bias
        return classification_metrics(logits.double().numpy(), labels.cpu().double().numpy(), **label_space)

    name = primary_metric(train.multi_label, splits, train.split_names or None)
    metrics = score(x_test, y_test)
    return {
        "metric": name,
        "value": metrics[name],
        "feature": feature,
        "metrics": metrics,
        "train_metrics": score(x.cpu() * std + mean, y),
        "num_train": len(x),
        "num_test": len(x_test),
        "left_out": {"train": train_left_out, "test": test_left_out},
        "weights": {"weight": weight, "bias": bias, "mean": mean, "std": std},
    }


callable_module(__name__, "mbt.api:probe")  # mbt.probe(train, test, ...): the `mbt probe` verb
