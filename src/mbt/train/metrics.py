"""Evaluation metrics (spec §6), in numpy, computed on all of a pass's (video-level) logits.

- Multi-label: mAP as Scenic computes it (per-class average precision, the same numbers as
  `sklearn.metrics.average_precision_score`, averaged over the classes that have a
  positive), mean ROC AUC over classes with positives and negatives, and d-prime
  `sqrt(2) * Phi^-1(mAUC)` (the AudioSet convention; not in the official code), plus
  `prec@1` (is the top class a positive).
- Single-label: top-1 / top-5 accuracy (top-5 only with more than 5 classes, where it is not
  trivially 1) and mean-class accuracy (the mean over classes of their recall).
- Several softmax heads (EPIC verb / noun): the same per head and for the joint
  (action) prediction `P(a, b) = softmax(a)[a] * softmax(b)[b]` (ViViT's
  `get_joint_logits_labels`).
- Per class (`per_class_metrics`, `per_class.csv` of `mbt eval`): AP and AUC (multi-label),
  accuracy (recall), precision (single-label), support; `top_confusions` for single-label.
All values are fractions in [0, 1] (multiply by 100 for the paper's tables).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

_CHUNK = 64  # classes per vectorised block: bounds memory to N x 64 per temporary


def average_precision(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Average precision of each class (column); NaN for classes without positives.

    Precision is taken at every distinct score threshold and weighted by the recall
    gained there (sklearn's step-wise definition, so tied scores form one threshold).
    """
    scores, positive = _check(scores, labels)
    n, c = scores.shape
    out = np.full(c, np.nan)
    for lo in range(0, c, _CHUNK):
        s, y = scores[:, lo : lo + _CHUNK], positive[:, lo : lo + _CHUNK]
        order = np.argsort(-s, axis=0, kind="stable")
        s, y = np.take_along_axis(s, order, 0), np.take_along_axis(y, order, 0)
        tps = np.cumsum(y, axis=0)
        precision = tps / np.arange(1, n + 1)[:, None]
        end = _group_end(s)  # every position takes the precision at the end of its tie group
        npos = tps[-1]
        ap = (y * np.take_along_axis(precision, end, 0)).sum(0) / np.maximum(npos, 1)
        out[lo : lo + _CHUNK] = np.where(npos > 0, ap, np.nan)
    return out


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """ROC AUC of each class (the Mann-Whitney statistic, ties counting one half, equal to
    sklearn's `roc_auc_score`); NaN where a class lacks positives or negatives."""
    scores, positive = _check(scores, labels)
    n, c = scores.shape
    out = np.full(c, np.nan)
    for lo in range(0, c, _CHUNK):
        s, y = scores[:, lo : lo + _CHUNK], positive[:, lo : lo + _CHUNK]
        order = np.argsort(s, axis=0, kind="stable")
        s, y = np.take_along_axis(s, order, 0), np.take_along_axis(y, order, 0)
        end = _group_end(s)
        start = _group_start(s)
        ranks = (start + end) / 2.0 + 1.0  # average 1-based rank of each tie group
        npos = y.sum(0)
        nneg = n - npos
        u = (ranks * y).sum(0) - npos * (npos + 1) / 2.0
        valid = (npos > 0) & (nneg > 0)
        out[lo : lo + _CHUNK] = np.where(valid, u / np.maximum(npos * nneg, 1), np.nan)
    return out


def d_prime(auc: float) -> float:
    """Sensitivity index of an AUC: `sqrt(2) * Phi^-1(AUC)` (infinite at AUC = 1)."""
    if auc >= 1.0:
        return float("inf")
    if auc <= 0.0:
        return float("-inf")
    return float(np.sqrt(2.0) * NormalDist().inv_cdf(auc))


def topk_accuracy(scores: np.ndarray, label_index: np.ndarray, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Fraction of examples whose label is among the k highest scores, for each k."""
    k_max = min(max(ks), scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k_max]
    hit = top == np.asarray(label_index)[:, None]
    return {k: float(hit[:, : min(k, k_max)].any(1).mean()) for k in ks}


def joint_topk_accuracy(
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    index_a: np.ndarray,
    index_b: np.ndarray,
    ks: Sequence[int] = (1, 5),
) -> dict[int, float]:
    """Top-k accuracy of the pair (a, b) ranked by `softmax(a)[i] * softmax(b)[j]`.

    A pair in the joint top k has each member in its own head's top k (the product is
    increasing in both factors), so only k x k candidates per example are ranked.
    """
    pa, pb = _softmax(scores_a), _softmax(scores_b)
    k_max = max(ks)
    ka, kb = min(k_max, pa.shape[1]), min(k_max, pb.shape[1])
    top_a = np.argsort(-pa, axis=1, kind="stable")[:, :ka]
    top_b = np.argsort(-pb, axis=1, kind="stable")[:, :kb]
    joint = np.take_along_axis(pa, top_a, 1)[:, :, None] * np.take_along_axis(pb, top_b, 1)[:, None, :]
    order = np.argsort(-joint.reshape(len(joint), -1), axis=1, kind="stable")
    cand_a = np.repeat(top_a, kb, axis=1)  # candidate pairs in the same flattened order
    cand_b = np.tile(top_b, (1, ka))
    hit = (np.take_along_axis(cand_a, order, 1) == np.asarray(index_a)[:, None]) & (
        np.take_along_axis(cand_b, order, 1) == np.asarray(index_b)[:, None]
    )
    return {k: float(hit[:, :k].any(1).mean()) for k in ks}


def classification_metrics(
    logits: np.ndarray,
    labels: np.ndarray,
    *,
    multi_label: bool,
    class_splits: Sequence[int] | None = None,
    split_names: Sequence[str] | None = None,
) -> dict[str, float]:
    """All metrics of a pass for the given label space.

    `logits` [N, C] are (clip-averaged) logits, `labels` [N, C] multi-hot, one-hot, or
    concatenated one-hots for `class_splits`. Also reports the loss without label
    smoothing (summed over classes for sigmoid, as the official eval).
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if logits.shape != labels.shape or logits.ndim != 2:
        raise ValueError(f"logits {logits.shape} and labels {labels.shape} must both be [N, C]")
    out: dict[str, float] = {"num_examples": float(len(logits))}
    if not len(logits):
        return out
    if multi_label:
        ap = average_precision(logits, labels)
        auc = roc_auc(logits, labels)
        m_auc = float(np.nanmean(auc)) if np.isfinite(auc).any() else float("nan")
        out["mAP"] = float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")
        out["AUC"] = m_auc
        out["d_prime"] = d_prime(m_auc) if np.isfinite(m_auc) else float("nan")
        out["prec@1"] = float(labels[np.arange(len(labels)), logits.argmax(1)].mean())
        # log(1 + e^-|x|) + max(x, 0) - x y: binary cross-entropy with logits, stably
        bce = np.logaddexp(0.0, logits) - logits * labels
        out["loss"] = float(bce.sum(1).mean())
        return out
    if class_splits:
        names = list(split_names) if split_names else [f"head{i}" for i in range(len(class_splits))]
        parts = np.cumsum(class_splits)[:-1]
        heads = list(zip(np.split(logits, parts, axis=1), np.split(labels, parts, axis=1), strict=True))
        losses = []
        for name, (lg, y) in zip(names, heads, strict=True):
            out.update(_single_label(lg, y.argmax(1), f"{name}_"))
            losses.append(_softmax_ce(lg, y))
        if len(heads) == 2:
            (la, ya), (lb, yb) = heads
            joint_name = joint_head_name(names)
            ks = (1, 5) if la.shape[1] * lb.shape[1] > 5 else (1,)
            acc = joint_topk_accuracy(la, lb, ya.argmax(1), yb.argmax(1), ks)
            out.update({f"{joint_name}_top{k}": v for k, v in acc.items()})
            action = ya.argmax(1) * lb.shape[1] + yb.argmax(1)
            hit = (la.argmax(1) == ya.argmax(1)) & (lb.argmax(1) == yb.argmax(1))
            out[f"{joint_name}_mean_class_acc"] = _mean_class(hit, action)
        out["loss"] = float(np.mean(losses))
        return out
    out.update(_single_label(logits, labels.argmax(1)))
    out["loss"] = _softmax_ce(logits, labels)
    return out


def joint_head_name(names: Sequence[str]) -> str:
    """Name of the joint prediction of two heads ('action' for EPIC's verb and noun)."""
    return "action" if set(names) == {"verb", "noun"} else f"{names[0]}-{names[1]}"


def _single_label(logits: np.ndarray, label_index: np.ndarray, prefix: str = "") -> dict[str, float]:
    """top1, top5 (more than 5 classes only) and mean-class accuracy of one softmax head."""
    acc = topk_accuracy(logits, label_index, (1, 5) if logits.shape[1] > 5 else (1,))
    out = {f"{prefix}top{k}": v for k, v in acc.items()}
    out[f"{prefix}mean_class_acc"] = _mean_class(logits.argmax(1) == label_index, label_index)
    return out


def _mean_class(hit: np.ndarray, label_index: np.ndarray) -> float:
    """Mean over the classes present of the fraction of their examples predicted right."""
    _, inverse = np.unique(label_index, return_inverse=True)
    return float((np.bincount(inverse, weights=hit.astype(np.float64)) / np.bincount(inverse)).mean())


def per_class_metrics(
    logits: np.ndarray,
    labels: np.ndarray,
    *,
    multi_label: bool,
    class_names: Sequence[str],
    class_splits: Sequence[int] | None = None,
    split_names: Sequence[str] | None = None,
) -> list[dict[str, object]]:
    """One row per class. Multi-label: AP and AUC (NaN where undefined) and support (positives).
    Single-label: accuracy (recall: right among its examples), precision (right among the
    videos predicted as it; NaN when never predicted) and support. With two heads, also one row
    per (a, b) pair present in the labels (EPIC's actions: `head` 'action')."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if multi_label:
        ap, auc = average_precision(logits, labels), roc_auc(logits, labels)
        support = (labels > 0.5).sum(0)
        return [{"class": n, "AP": float(ap[k]), "AUC": float(auc[k]), "support": int(support[k])}
                for k, n in enumerate(class_names)]
    splits = list(class_splits) if class_splits else [logits.shape[1]]
    names = list(split_names) if (class_splits and split_names) else [f"head{i}" for i in range(len(splits))]
    bounds = np.cumsum([0, *splits])
    rows: list[dict[str, object]] = []
    preds, truths = [], []
    for h, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        pred, truth = logits[:, lo:hi].argmax(1), labels[:, lo:hi].argmax(1)
        preds.append(pred)
        truths.append(truth)
        for k in range(hi - lo):
            support, predicted = int((truth == k).sum()), int((pred == k).sum())
            right = int(((truth == k) & (pred == k)).sum())
            row: dict[str, object] = {"head": names[h]} if class_splits else {}
            row.update({"class": class_names[lo + k], "accuracy": right / support if support else float("nan"),
                        "precision": right / predicted if predicted else float("nan"), "support": support})
            rows.append(row)
    if len(splits) == 2:
        (pa, pb), (ta, tb) = preds, truths
        hit = (pa == ta) & (pb == tb)
        for a, b in sorted(set(zip(ta.tolist(), tb.tolist(), strict=True))):
            mask = (ta == a) & (tb == b)
            rows.append({"head": joint_head_name(names), "class": f"{class_names[a]} / {class_names[bounds[1] + b]}",
                         "accuracy": float(hit[mask].mean()), "precision": float("nan"),
                         "support": int(mask.sum())})
    return rows


def confusion_matrix(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """[C, C] counts of (true class, predicted class) of a single-label head."""
    c = logits.shape[1]
    idx = np.asarray(labels).argmax(1) * c + np.asarray(logits).argmax(1)
    return np.bincount(idx, minlength=c * c).reshape(c, c)


def top_confusions(matrix: np.ndarray, class_names: Sequence[str], n: int = 50) -> list[dict[str, object]]:
    """The `n` most frequent (true, predicted) pairs with true != predicted, most first, with the
    share of the true class's examples they take."""
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:n]
    support = matrix.sum(1)
    rows = []
    for f in flat:
        t, p = divmod(int(f), matrix.shape[1])
        if off[t, p] == 0:
            break
        rows.append({"true": class_names[t], "predicted": class_names[p], "count": int(off[t, p]),
                     "fraction_of_true": float(off[t, p] / support[t])})
    return rows


def primary_metric(multi_label: bool, class_splits: Sequence[int] | None, split_names: Sequence[str] | None) -> str:
    """The number a run is judged by (and the best model chosen on)."""
    if multi_label:
        return "mAP"
    if class_splits and len(class_splits) == 2:
        return f"{joint_head_name(list(split_names) if split_names else ['head0', 'head1'])}_top1"
    if class_splits:
        names = list(split_names) if split_names else ["head0"]
        return f"{names[0]}_top1"
    return "top1"


# ---------------------------------------------------------------------- helpers
def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim == 1:
        scores, labels = scores[:, None], labels.reshape(-1, 1)
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ in shape")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")
    return scores, (labels > 0.5).astype(np.float64)


def _group_end(sorted_scores: np.ndarray) -> np.ndarray:
    """For each position of a column-sorted array, the last index of its run of equal values."""
    n = len(sorted_scores)
    last = np.ones_like(sorted_scores, dtype=bool)
    last[:-1] = sorted_scores[1:] != sorted_scores[:-1]
    idx = np.where(last, np.arange(n)[:, None], n)
    return np.minimum.accumulate(idx[::-1], axis=0)[::-1]


def _group_start(sorted_scores: np.ndarray) -> np.ndarray:
    """For each position of a column-sorted array, the first index of its run of equal values."""
    first = np.ones_like(sorted_scores, dtype=bool)
    first[1:] = sorted_scores[1:] != sorted_scores[:-1]
    idx = np.where(first, np.arange(len(sorted_scores))[:, None], -1)
    return np.maximum.accumulate(idx, axis=0)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _softmax_ce(logits: np.ndarray, labels: np.ndarray) -> float:
    shifted = logits - logits.max(1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    return float(-(labels * log_p).sum(1).mean())
