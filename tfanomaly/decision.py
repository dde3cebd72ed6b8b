"""The decision policy: one owner for "is this sample anomalous?".

A :class:`Decision` holds the calibrated thresholds (one global value, or one
per region id), the product rule (per-run max, then k of n runs) and the rules
for the two cases a line must never let through silently:

- **a non-finite score** (NaN or inf, e.g. from a NaN or inf pixel) is anomalous:
  the decision fails closed, never passes;
- **a region id without a threshold** is refused with an error naming the id and
  the known ones. Calibration (``thresholds.calibrate_per_region``) gives every
  region seen in the calibration or reported data a threshold of its own (a
  fallback rule where it has no calibration defects), so this only meets ids
  the model was never calibrated for.

Evaluation computes its verdicts through :meth:`Decision.flags`, writes the
decision to ``thresholds.json`` (:meth:`save`, with a format version), and
``predict`` and ``export`` read it back with :meth:`load`; the SavedModel bakes
:meth:`region_table` into its graph with the same two rules, and
``tfanomaly.json`` states them for C++.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tfanomaly.errors import UserError
from tfanomaly.files import atomic_write_text

FORMAT_VERSION = 1
FILE_NAME = "thresholds.json"  # inside an evaluation folder (RUN/eval/ by default)
RULES_TEXT = {
    "flag": "anomalous when score >= threshold, or when the score is not finite (fail closed)",
    "missing_region": "a region id without a threshold is an error (never a default threshold)",
    "product": "a run is flagged when any of its patches is; a product is defective when >= k of its n runs are",
    "calibration": "with eval.product_level, each region's threshold is calibrated on per-run maxima of that region's patches",
}


@dataclass
class Decision:
    rule: str
    thresholds: float | dict[int, float]
    k_of_n: list[int] = field(default_factory=lambda: [7, 10])
    seed: int = 0
    source: str = ""  # where it was loaded from (for messages)
    # the model's score options these thresholds were calibrated for (e.g. GRD-Net's
    # model.score); export and predict score with them, so every door gives one verdict
    score_options: dict = field(default_factory=dict)
    # the tiling's test-time flips these thresholds were calibrated with (None: untiled, or a
    # file from before they were recorded); export and predict tile with them
    flips: list[str] | None = None

    @property
    def per_region(self) -> bool:
        return isinstance(self.thresholds, dict)

    def threshold_for(self, regions) -> np.ndarray:
        """Thresholds of each region id (the global one without regions)."""
        regions = np.asarray(regions if regions is not None else [], np.int64).ravel()
        if not self.per_region:
            return np.full(regions.shape if regions.size else (1,), float(self.thresholds))
        unknown = sorted({int(r) for r in regions} - set(self.thresholds))
        if unknown:
            where = f"{self.source}: " if self.source else ""
            raise UserError(f"{where}no threshold for region {unknown[0]}; the model knows regions {', '.join(map(str, sorted(self.thresholds)))}")
        return np.array([self.thresholds[int(r)] for r in regions], np.float64)

    def flags(self, scores, regions=None) -> np.ndarray:
        """Per-sample verdicts: score >= threshold, or a non-finite score."""
        scores = np.asarray(scores, np.float64)
        t = self.threshold_for(regions if self.per_region else None)
        if self.per_region:
            t = t.reshape(scores.shape)
        return (scores >= t) | ~np.isfinite(scores)

    def region_table(self) -> tuple[list[float], list[bool]]:
        """Dense (threshold, known) tables indexed by region id 0..max, for the
        SavedModel graph: an id that is not ``known`` must be refused there."""
        if not self.per_region:
            return [float(self.thresholds)], [True]
        size = max(self.thresholds) + 1
        return [float(self.thresholds.get(i, math.nan)) for i in range(size)], [i in self.thresholds for i in range(size)]

    # -- file format ------------------------------------------------------
    def to_json(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "rule": self.rule,
            "per_region": self.per_region,
            "thresholds": {str(k): float(v) for k, v in sorted(self.thresholds.items())} if self.per_region else float(self.thresholds),
            "k_of_n": list(self.k_of_n),
            "seed": self.seed,
            "score": "raw model score",
            "score_options": dict(self.score_options),
            "flips": None if self.flips is None else list(self.flips),
            "rules": RULES_TEXT,
        }

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_json(), indent=2))

    @classmethod
    def from_json(cls, d: dict, source: str = "") -> Decision:
        where = source or "thresholds"
        if not isinstance(d, dict) or "thresholds" not in d:
            raise UserError(f"{where}: not a thresholds file (expected a mapping with 'thresholds')")
        version = d.get("format_version", 1)
        if version > FORMAT_VERSION:
            raise UserError(f"{where}: format_version {version} is newer than this tfanomaly reads ({FORMAT_VERSION})")
        th = d["thresholds"]
        try:
            if d.get("per_region") or isinstance(th, dict):
                th = {int(k): float(v) for k, v in th.items()}
            else:
                th = float(th)
        except (TypeError, ValueError, AttributeError):
            raise UserError(f"{where}: thresholds: expected a number or a mapping region -> number, got {th!r}") from None
        flips = d.get("flips")
        if flips is not None:  # checked by the config's own field check of data.tiling.flips
            from tfanomaly.config import TilingConfig, from_dict

            flips = from_dict(TilingConfig, {"flips": flips}, "data.tiling", where).flips
        return cls(
            rule=d.get("rule", ""),
            thresholds=th,
            k_of_n=list(d.get("k_of_n", [7, 10])),
            seed=int(d.get("seed", 0)),
            source=source,
            score_options=dict(d.get("score_options") or {}),
            flips=flips,
        )

    def apply_to(self, model, cfg=None) -> None:
        """Give ``model`` the score options these thresholds were calibrated for,
        and ``cfg`` (a run's config, changed in place) the tiling flips they were
        calibrated with."""
        if self.score_options:
            model.set_score_options(self.score_options, where=f"{self.source or 'thresholds'}: score_options")
        if cfg is not None and self.flips is not None and cfg.data.tiling.enabled:
            cfg.data.tiling.flips = list(self.flips)

    @classmethod
    def load(cls, path: str | Path) -> Decision:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise UserError(f"{path}: no such thresholds file") from None
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
        return cls.from_json(data, str(path))
