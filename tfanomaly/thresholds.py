"""Threshold rules, calibrated on a calibration split.

A sample is flagged when score >= threshold. The rules that search the
calibration scores (youden, max_accuracy) try the distinct scores plus +inf
(flag nothing); among equal optima the highest threshold (fewest alarms) wins.
The threshold returned is then the midpoint between that score and the next
lower calibration score: the calibration verdicts are the same for any value
in that gap, and its middle leaves the widest margin on both sides for scores
that were not in the calibration set (at the gap's top edge, a defect scoring
a hair below the lowest calibrated defect is missed).

| rule          | threshold                                                  | needs       |
|---------------|------------------------------------------------------------|-------------|
| youden        | argmax TPR - FPR (middle of its gap)                       | both classes|
| max_accuracy  | argmax accuracy (middle of its gap)                        | both classes|
| zero_fn       | the lowest defective score (highest that flags them all)   | defective   |
| n_sigma       | mean + k * std of good scores (population std)             | good        |
| percentile    | the p-th percentile of good scores (linear interpolation)  | good        |
| iqr           | Q3 + k * (Q3 - Q1) of good scores                          | good        |
"""

from __future__ import annotations

import numpy as np

from tfanomaly.errors import UserError

RULES = ("youden", "max_accuracy", "zero_fn", "n_sigma", "percentile", "iqr")


class ThresholdError(UserError):
    pass


def _search(labels, scores, objective):
    cands = np.append(np.unique(scores), np.inf)
    best_t, best_v = None, -np.inf
    pos, neg = labels == 1, labels == 0
    for t in cands:  # ascending: ">=" keeps the highest threshold among ties
        pred = scores >= t
        tpr = np.mean(pred[pos])
        fpr = np.mean(pred[neg])
        v = objective(tpr, fpr, pred)
        if v >= best_v - 1e-12:
            best_t, best_v = t, v
    below = cands[cands < best_t]
    if np.isfinite(best_t) and below.size:
        return float((best_t + below[-1]) / 2)  # the middle of the gap that gives these verdicts
    return float(best_t)


def calibrate(rule: str, labels, scores, *, n_sigma=3.0, percentile=99.0, iqr_k=1.5, where: str = "") -> float:
    labels = np.asarray(labels).astype(int).ravel()
    scores = np.asarray(scores, np.float64).ravel()
    tag = f" ({where})" if where else ""
    good, bad = scores[labels == 0], scores[labels == 1]
    if rule not in RULES:
        raise ThresholdError(f"unknown threshold rule {rule!r}; expected one of {', '.join(RULES)}")
    if rule in ("youden", "max_accuracy", "zero_fn") and bad.size == 0:
        raise ThresholdError(f"rule {rule} needs defective calibration samples, got none{tag}")
    if rule in ("youden", "max_accuracy", "n_sigma", "percentile", "iqr") and good.size == 0:
        raise ThresholdError(f"rule {rule} needs good calibration samples, got none{tag}")
    if rule in ("youden", "max_accuracy") and np.ptp(scores) == 0:
        raise ThresholdError(f"rule {rule}: all {scores.size} calibration scores are equal ({scores[0]:.6g}); no threshold separates them{tag}")
    if rule == "youden":
        return _search(labels, scores, lambda tpr, fpr, pred: tpr - fpr)
    if rule == "max_accuracy":
        return _search(labels, scores, lambda tpr, fpr, pred: np.mean(pred == (labels == 1)))
    if rule == "zero_fn":
        return float(bad.min())
    if rule == "n_sigma":
        return float(good.mean() + n_sigma * good.std())
    if rule == "percentile":
        return float(np.percentile(good, percentile))
    q1, q3 = np.percentile(good, [25, 75])
    return float(q3 + iqr_k * (q3 - q1))


def calibrate_per_region(rule, labels, scores, regions, cover=(), **kw) -> tuple[dict, list[str]]:
    """One threshold per region id. A region whose calibration data cannot
    support the rule (typically: no defective sample there) falls back to the
    n_sigma rule on its own good scores, or, without good scores either, to
    the global threshold; each fallback is returned as a warning. Regions in
    ``cover`` without any calibration sample get the global threshold too."""
    regions = np.asarray(regions).ravel()
    labels = np.asarray(labels).ravel()
    scores = np.asarray(scores).ravel()
    global_t = calibrate(rule, labels, scores, where="all regions", **kw)
    out, warnings = {}, []
    for r in np.unique(regions):
        sel = regions == r
        try:
            out[int(r)] = calibrate(rule, labels[sel], scores[sel], where=f"region R{int(r)}", **kw)
        except ThresholdError as e:
            try:
                out[int(r)] = calibrate("n_sigma", labels[sel], scores[sel], **kw)
                warnings.append(f"{e}; region R{int(r)} uses n_sigma on its good scores ({out[int(r)]:.6g})")
            except ThresholdError:
                out[int(r)] = global_t
                warnings.append(f"{e}; region R{int(r)} uses the global threshold {global_t:.6g}")
    for r in cover:
        if int(r) not in out:
            out[int(r)] = global_t
            warnings.append(f"region R{int(r)} has no calibration sample; it uses the global threshold {global_t:.6g}")
    return out, warnings
