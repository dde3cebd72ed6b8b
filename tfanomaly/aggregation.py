"""From patch decisions to product verdicts.

per acquisition (product, run): the max over its patches (frames x vials x
regions; 60 on the line) -- a run flags its product when any patch does;
per product over runs: defective when at least k of its n runs flag it
(7 of 10 on the line). With m != n runs present, k scales to ceil(k * m / n).
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np


def per_run_max(products, runs, values) -> dict[tuple[str, int], float]:
    """Max of ``values`` (scores, or 0/1 decisions) per (product, run). A NaN
    counts as +inf: a patch that could not be scored raises its run's maximum,
    it is never dropped from it (fail closed)."""
    out: dict[tuple[str, int], float] = {}
    for p, r, v in zip(products, runs, np.asarray(values, np.float64)):
        key = (str(p), int(r))
        out[key] = max(out.get(key, -np.inf), np.inf if np.isnan(v) else float(v))
    return out


def k_of_n(run_flags: dict[tuple[str, int], bool], k: int, n: int) -> dict[str, dict]:
    """Product verdicts from per-run flags: defective when flagged runs >= k
    (scaled to the runs present)."""
    by_product = defaultdict(list)
    for (p, _), flag in sorted(run_flags.items()):
        by_product[p].append(bool(flag))
    out = {}
    for p, flags in by_product.items():
        need = math.ceil(k * len(flags) / n) if len(flags) != n else k
        out[p] = {"runs": len(flags), "flagged_runs": int(sum(flags)), "needed": need, "defective": sum(flags) >= need}
    return out


def knapp(verdicts: dict[str, dict], visible_runs: dict[str, int], zones: tuple[float, float] = (0.3, 0.7)) -> dict:
    """A Knapp-style reading of product verdicts against a test kit's reference.

    A test kit's reference is how often each product's defect can be seen: here
    the fraction of its runs in which a defect is visible in any scored patch
    (``visible_runs / runs``), the detection rate of an inspector who sees every
    visible defect. Products fall into the **reject zone** (reference rate >=
    ``zones[1]``), the **grey zone** (between) and the **accept zone** (below
    ``zones[0]``; every good product). The quality factors are the summed
    detection rates over the reject zone: FQM for the reference, FQA for the
    machine (its flagged runs / runs); the machine does at least as well as the
    reference where it must when FQA / FQM >= 1. ``verdicts`` are
    :func:`k_of_n`'s; accuracy, TPR and TNR are those of its verdicts over the
    reject zone (truth defective) and the accept zone (truth good), the grey
    zone left out, as a Knapp test leaves out units the reference itself
    decides either way."""
    lo, hi = zones
    zone, fqm, fqa = {}, 0.0, 0.0
    tp = fn = tn = fp = 0
    for p, v in verdicts.items():
        ref = visible_runs.get(p, 0) / v["runs"]
        z = "reject" if ref >= hi else "accept" if ref < lo else "grey"
        zone[p] = z
        if z == "reject":
            fqm += ref
            fqa += v["flagged_runs"] / v["runs"]
            tp, fn = tp + bool(v["defective"]), fn + (not v["defective"])
        elif z == "accept":
            fp, tn = fp + bool(v["defective"]), tn + (not v["defective"])
    n = tp + fn + tn + fp
    return {
        "zones": [lo, hi],
        "zone": zone,
        "counts": {z: sum(1 for v in zone.values() if v == z) for z in ("reject", "grey", "accept")},
        "fqm": fqm,
        "fqa": fqa,
        "ratio": fqa / fqm if fqm else float("nan"),
        "accuracy": (tp + tn) / n if n else float("nan"),
        "tpr": tp / (tp + fn) if tp + fn else float("nan"),
        "tnr": tn / (tn + fp) if tn + fp else float("nan"),
    }
