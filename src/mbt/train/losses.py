"""Training losses and mixup, as Scenic's MBT trainer computes them (spec §4.4, §5).

The official step turns the batch labels into a dict `{modality: y_m, 'all': y}` (mixed
per modality with `mixmod`), then each head's loss is taken against its own targets and
the losses are averaged over heads. Label smoothing is applied inside the loss, after
mixup: `y_s = y (1 - ls) + ls / C`, with C the width of the softmax (per split for
several heads).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

ALL = "all"
"""Key of the targets used by a head that pools all modalities jointly ('gap' etc.)."""


def smooth_labels(targets: Tensor, label_smoothing: float) -> Tensor:
    """`y (1 - ls) + ls / C` over the last axis (Scenic's `apply_label_smoothing`)."""
    if not label_smoothing:
        return targets
    return targets * (1.0 - label_smoothing) + label_smoothing / targets.shape[-1]


def sigmoid_cross_entropy(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Multi-label loss: binary cross-entropy summed over classes, averaged over examples."""
    targets = smooth_labels(targets, label_smoothing)
    loss = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="sum")
    return loss / logits.shape[0]


def softmax_cross_entropy(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Single-label loss: `-sum_c y_s log softmax`, averaged over examples. Soft targets
    (mixup) are used as given."""
    targets = smooth_labels(targets, label_smoothing)
    return -(targets.float() * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean()


def split_softmax_cross_entropy(
    logits: Tensor, targets: Tensor, class_splits: Sequence[int], label_smoothing: float = 0.0
) -> Tensor:
    """Several softmax heads sharing one output (EPIC verb / noun): the logits and targets
    are cut at `class_splits`, each part gets its softmax CE (smoothed over its own
    classes), and the parts are averaged (Scenic's `MBTMultiHeadClassificationModel`)."""
    parts = zip(logits.split(list(class_splits), -1), targets.split(list(class_splits), -1), strict=True)
    return torch.stack([softmax_cross_entropy(lg, y, label_smoothing) for lg, y in parts]).mean()


def head_loss(
    logits: Tensor,
    targets: Tensor,
    *,
    multi_label: bool,
    class_splits: Sequence[int] | None = None,
    label_smoothing: float = 0.0,
) -> Tensor:
    """The loss of one head, chosen by the label space."""
    if multi_label:
        return sigmoid_cross_entropy(logits, targets, label_smoothing)
    if class_splits:
        return split_softmax_cross_entropy(logits, targets, class_splits, label_smoothing)
    return softmax_cross_entropy(logits, targets, label_smoothing)


def mbt_loss(
    logits: Tensor,
    modality_logits: Mapping[str, Tensor],
    targets: Mapping[str, Tensor],
    *,
    multi_label: bool,
    class_splits: Sequence[int] | None = None,
    label_smoothing: float = 0.0,
) -> Tensor:
    """The official training loss of an MBT output.

    With per-modality logits (token head) each modality's head is scored against that
    modality's targets and the losses are averaged over modalities; otherwise (pooling
    heads) the joint logits are scored against `targets['all']`.
    """
    kw = {"multi_label": multi_label, "class_splits": class_splits, "label_smoothing": label_smoothing}
    if modality_logits:
        losses = [head_loss(lg, targets[m], **kw) for m, lg in modality_logits.items()]
        return torch.stack(losses).mean()
    if ALL not in targets:
        raise ValueError("mixmod gives one target per modality and needs a per-modality (token) head")
    return head_loss(logits, targets[ALL], **kw)


def mixup(
    inputs: Mapping[str, Tensor],
    labels: Tensor,
    alpha: float,
    rng: np.random.Generator,
    mixmod: bool = False,
) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, float]]:
    """Mixup with the official pairing: each example is mixed with the example at the
    mirrored position of the (per-process) batch, `x[::-1]`, with one
    `lambda ~ Beta(alpha, alpha)` shared by the whole batch; with `mixmod` every modality
    draws its own lambda (and gets its own mixed targets).

    Returns the mixed inputs, the targets `{modality: y_m}` (plus `'all'` unless
    `mixmod`) and the lambdas used. With `alpha == 0` nothing is mixed and every target
    is `labels` (the official step still builds the dict).
    """
    modalities = list(inputs)
    if not alpha:
        targets = {m: labels for m in modalities}
        targets[ALL] = labels
        return dict(inputs), targets, {}
    if mixmod:
        lambdas = {m: float(rng.beta(alpha, alpha)) for m in modalities}
    else:
        shared = float(rng.beta(alpha, alpha))
        lambdas = dict.fromkeys(modalities, shared)
    mixed, targets = {}, {}
    flipped_labels = labels.flip(0)
    for m in modalities:
        lam = lambdas[m]
        mixed[m] = lam * inputs[m] + (1.0 - lam) * inputs[m].flip(0)
        targets[m] = lam * labels + (1.0 - lam) * flipped_labels
    if not mixmod:
        targets[ALL] = targets[modalities[0]]
    return mixed, targets, lambdas


def drop_modality(inputs: Mapping[str, Tensor], p: float, rng: np.random.Generator) -> dict[str, Tensor]:
    """`train.modality_dropout`: with probability `p`, the inputs without one modality
    (chosen uniformly), so that tower does not run for this batch."""
    inputs = dict(inputs)
    if len(inputs) > 1 and p > 0 and rng.random() < p:
        del inputs[list(inputs)[int(rng.integers(len(inputs)))]]
    return inputs
