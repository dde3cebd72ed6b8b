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
