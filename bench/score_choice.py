"""Score options and test-time flips of one trained model, side by side, on the
calibration part only: the numbers such a setting may be chosen on.

Each ``--variant`` is one set of config overrides (space-separated key=value),
e.g. ``--variant "data.tiling.flips=[h] model.score_pool=4"``; ``--variant ""``
is the run's own scoring. Every variant is a full evaluation (written to
``OUT/v<i>/``, with its thresholds), but the table printed here holds the
calibration part of the first ``--seeds`` seed and the per-class AUROC there,
never the reported part: read that for the chosen variant only, from its folder.

    python bench/score_choice.py --model RUN/checkpoints/step_0005000.keras --config RUN/config.yaml \\
        --out R/choice --variant "" --variant "data.tiling.flips=[h]" --variant "model.score_pool=2"
"""

from __future__ import annotations

import argparse
import csv
import os
import shlex
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a run folder or a .keras checkpoint")
    ap.add_argument("--config", help="the run's config (needed with a checkpoint file)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--variant", action="append", default=[], help="config overrides of one variant (space-separated key=value)")
    ap.add_argument("--seeds", default="0")
    a = ap.parse_args()

    from _common import cpu_model
    from per_class_auroc import per_class

    import tfanomaly
    from tfanomaly.evaluate import evaluate
    from tfanomaly.run import load_model

    model_path = Path(a.model)
    config = a.config or str(model_path / "config.yaml")
    seeds = [int(s) for s in a.seeds.split(",")]
    rows = []
    for i, variant in enumerate(a.variant or [""]):
        cfg = tfanomaly.load_config(config, shlex.split(variant))
        model = load_model(model_path / "model.keras" if model_path.is_dir() else model_path)
        t0 = time.time()
        summary = evaluate(model, cfg, a.out / f"v{i}", seeds=seeds)
        classes = per_class(list(csv.DictReader(open(a.out / f"v{i}" / "patches.csv"))), "calibration")
        classes.pop("good")
        sel = summary["selection"]
        row = {"variant": variant or "(the run's scoring)", "image": sel["image_auroc"], "pixel": sel.get("pixel_auroc", float("nan")), "seconds": time.time() - t0}
        rows.append(row | {k: v[1] for k, v in classes.items()})
        print(f"v{i} {rows[-1]['variant']}: calibration image AUROC {sel['image_auroc']:.3f}, pixel {sel.get('pixel_auroc', float('nan')):.3f}", flush=True)
    names = [k for k in rows[0] if k not in ("variant", "image", "pixel", "seconds")]
    print(f"\nmachine: {cpu_model()}; calibration part of seed {seeds[0]} ({summary['selection']['n_images']} images)\n")
    print("| variant | image AUROC | pixel AUROC | " + " | ".join(names) + " | eval s |")
    print("|---" * (len(names) + 4) + "|")
    for r in rows:
        print(f"| {r['variant']} | {r['image']:.3f} | {r['pixel']:.3f} | " + " | ".join(f"{r[k]:.3f}" for k in names) + f" | {r['seconds']:.0f} |")


if __name__ == "__main__":
    main()
