"""One markdown table row per evaluated run directory: training steps, images/s,
peak memory, trainable parameters, and the evaluation's image AUROC, precision,
recall and F1 at the calibrated threshold (mean +- std over the calibration
seeds), pixel AUROC, and, after `eval --shift`, the shifted image and pixel AUROC.

    python bench/summarize_runs.py runs/mt_baseline runs/mt_relu3_3 [--eval-dir eval]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def ms(values):
    v = np.asarray([x for x in values if x is not None], float)
    return f"{v.mean():.3f} ± {v.std():.3f}" if v.size else "n/a"


def trainable_millions(run: Path) -> float:
    from tfanomaly.run import load_model

    m = load_model(run)
    skip = {"vgg16_taps"}  # frozen loss network: not trained
    return sum(int(np.prod(v.shape)) for v in m.trainable_variables if not any(s in v.path for s in skip)) / 1e6


def row(run: Path, eval_dir: str) -> str:
    from tfanomaly.run import Run

    t = Run(run).summary()
    e = json.loads((run / eval_dir / "metrics.json").read_text())
    at = [r["image"]["at_threshold"] for r in e["runs"]]
    cells = [
        run.name,
        f"{trainable_millions(run):.2f} M",
        f"{t['global_step']}",
        f"{t['images_per_second']:.1f}",
        f"{1000 * t['seconds'] / max(t['steps_this_session'], 1):.0f} ms",
        f"{t['peak_rss_mb'] / 1024:.1f} GB",
        ms([r["image"]["auroc"] for r in e["runs"]]),
        ms([a["precision"] for a in at]),
        ms([a["recall"] for a in at]),
        ms([a["f1"] for a in at]),
        ms([a["accuracy"] for a in at]),
        f"{e['pixel_auroc']:.3f}" if "pixel_auroc" in e else "n/a",
    ]
    if "shift" in e:
        sh = e["shift"]
        cells += [ms([sh["image_auroc"]["mean"]]).split(" ±")[0], f"{sh['pixel_auroc']:.3f}" if sh.get("pixel_auroc") is not None else "n/a"]
    return "| " + " | ".join(cells) + " |"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--eval-dir", default="eval")
    a = ap.parse_args()
    head = ["run", "trainable", "steps", "img/s", "s/step", "peak RSS", "image AUROC", "precision", "recall", "F1", "accuracy", "pixel AUROC"]
    if any((r / a.eval_dir / "metrics.json").exists() and "shift" in json.loads((r / a.eval_dir / "metrics.json").read_text()) for r in a.runs):
        head += ["shifted image AUROC", "shifted pixel AUROC"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in a.runs:
        print(row(r, a.eval_dir))


if __name__ == "__main__":
    main()
