"""Image and pixel metrics. Convention: a sample is flagged anomalous when
its score is >= the threshold; label 1 = defective (the positive class)."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from tfanomaly.errors import UserError


def _check(labels, scores):
    labels = np.asarray(labels).astype(int).ravel()
    scores = np.asarray(scores, np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"{labels.shape} labels for {scores.shape} scores")
    return labels, scores


def both_classes(labels) -> bool:
    u = np.unique(labels)
    return len(u) == 2


def roc_auc(labels, scores) -> float:
    labels, scores = _check(labels, scores)
    if not both_classes(labels):
        return float("nan")
    return float(skm.roc_auc_score(labels, scores))


def pr_auc(labels, scores) -> float:
    labels, scores = _check(labels, scores)
    if not both_classes(labels):
        return float("nan")
    return float(skm.average_precision_score(labels, scores))


def at_threshold(labels, scores, threshold) -> dict:
    """Confusion matrix and rates when flagging scores >= threshold."""
    labels, scores = _check(labels, scores)
    pred = scores >= threshold
    tp = int(np.sum(pred & (labels == 1)))
    fp = int(np.sum(pred & (labels == 0)))
    fn = int(np.sum(~pred & (labels == 1)))
    tn = int(np.sum(~pred & (labels == 0)))

    def div(a, b):
        return float(a / b) if b else float("nan")

    precision, recall = div(tp, tp + fp), div(tp, tp + fn)
    return {
        "threshold": float(threshold),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "accuracy": div(tp + tn, len(labels)),
        "precision": precision,
        "recall": recall,
        "tpr": recall,
        "tnr": div(tn, tn + fp),
        "f1": div(2 * tp, 2 * tp + fp + fn),
    }


def optimal_accuracy(labels, scores) -> dict:
    """The equal-error operating point: the threshold where TPR and TNR are
    closest (TPR = TNR), and the accuracy (TPR + TNR) / 2 there."""
    labels, scores = _check(labels, scores)
    if not both_classes(labels):
        return {"threshold": float("nan"), "accuracy": float("nan")}
    fpr, tpr, thr = skm.roc_curve(labels, scores, drop_intermediate=False)
    i = int(np.argmin(np.abs(tpr - (1 - fpr))))
    return {"threshold": float(thr[i]), "accuracy": float((tpr[i] + 1 - fpr[i]) / 2), "tpr": float(tpr[i]), "tnr": float(1 - fpr[i])}


def max_accuracy(labels, scores) -> float:
    """The best accuracy any threshold reaches on these samples (the CycleGAN-AD
    paper's ACC; an oracle: the threshold is chosen on the reported data)."""
    labels, scores = _check(labels, scores)
    if not both_classes(labels):
        return float("nan")
    fpr, tpr, _ = skm.roc_curve(labels, scores, drop_intermediate=False)
    p, n = labels.sum(), labels.size - labels.sum()
    return float(np.max((tpr * p + (1 - fpr) * n) / labels.size))


def zfn_accuracy(labels, scores) -> float:
    """Accuracy at the zero-false-negative threshold of these samples (the
    lowest defective score; flag scores >= it): the paper's ZFN accuracy."""
    labels, scores = _check(labels, scores)
    if not both_classes(labels):
        return float("nan")
    t = scores[labels == 1].min()
    return float(np.mean((scores >= t) == (labels == 1)))


def _per_image(masks, heatmaps):
    """Pairs (mask bool [H, W], heatmap float32 [H, W]) of a stacked array
    [N, H, W(, 1)] or of sequences of per-image arrays of different sizes."""
    for m, h in zip(masks, heatmaps):
        m = np.asarray(m) > 0.5
        h = np.asarray(h, np.float32)
        m = m.reshape(m.shape[0], m.shape[1])
        yield m, h.reshape(m.shape)


def pixel_auroc(masks, heatmaps, max_pixels: int = 20_000_000, seed: int = 0) -> float:
    """ROC-AUC over all pixels of all images (a fixed random subset above
    max_pixels). Images may differ in size (sequences of per-image arrays)."""
    pairs = list(_per_image(masks, heatmaps))
    y = np.concatenate([m.ravel() for m, _ in pairs])
    s = np.concatenate([h.ravel() for _, h in pairs])
    if y.size > max_pixels:
        keep = np.random.default_rng(seed).choice(y.size, max_pixels, replace=False)
        y, s = y[keep], s[keep]
    return roc_auc(y, s)


def aupro(masks, heatmaps, fpr_limit: float = 0.3, steps: int = 200) -> float:
    """Area under the per-region-overlap curve up to ``fpr_limit``, normalised
    to [0, 1] (Bergmann et al., MVTec AD). Regions are the connected
    components of the ground-truth masks; images may differ in size."""
    import cv2

    good, regions = [], []
    for m, h in _per_image(masks, heatmaps):
        good.append(h[~m])
        n, lab = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)
        regions.extend(np.sort(h[lab == r]) for r in range(1, n))
    good = np.sort(np.concatenate(good)) if good else np.zeros(0, np.float32)
    if not regions or good.size == 0:
        return float("nan")
    lo = min(good[0], min(r[0] for r in regions))
    hi = max(good[-1], max(r[-1] for r in regions))
    thresholds = np.linspace(hi, lo, steps)
    # fraction of values >= t, from sorted arrays
    fprs = 1.0 - np.searchsorted(good, thresholds, "left") / good.size
    pros = np.mean([1.0 - np.searchsorted(r, thresholds, "left") / r.size for r in regions], axis=0)
    keep = fprs <= fpr_limit
    if keep.sum() < 2:
        return float("nan")
    f, p = fprs[keep], pros[keep]
    # close the curve exactly at the limit
    if f[-1] < fpr_limit and (~keep).any():
        j = np.argmax(~keep)
        f1, p1 = fprs[j], pros[j]
        p_lim = p[-1] + (p1 - p[-1]) * (fpr_limit - f[-1]) / max(f1 - f[-1], 1e-12)
        f, p = np.append(f, fpr_limit), np.append(p, p_lim)
    return float(np.trapezoid(p, f) / fpr_limit)


def image_metrics(labels, scores, threshold=None) -> dict:
    labels, scores = _check(labels, scores)
    if labels.size == 0:
        raise UserError("no samples to evaluate")
    out = {
        "n": int(labels.size),
        "n_defective": int(labels.sum()),
        "auroc": roc_auc(labels, scores),
        "pr_auc": pr_auc(labels, scores),
        "optimal_accuracy": optimal_accuracy(labels, scores)["accuracy"],
        "max_accuracy": max_accuracy(labels, scores),
        "zfn_accuracy": zfn_accuracy(labels, scores),
    }
    if threshold is not None:
        out["at_threshold"] = at_threshold(labels, scores, threshold)
    return out
