"""AUROC of each defect class against the good images, from an evaluation's
``patches.csv``, on one part of the split (``calibration`` by default: the
part settings may be chosen on; ``reported`` for the figures one reports).
The class is the folder name after ``MT_`` (Magnetic Tile) or the first
folder of the image id otherwise. Prints a table.

    python bench/per_class_auroc.py RUN/eval/patches.csv [--part calibration|reported]
"""

from __future__ import annotations

import argparse
import csv
import re

from sklearn.metrics import roc_auc_score


def class_name(product: str) -> str:
    """A defective image's class: the folder after ``MT_`` (Magnetic Tile), else its first folder."""
    m = re.search(r"MT_([A-Za-z]+)/", product)
    return m.group(1) if m else product.split("/")[0]


def per_class(rows: list[dict], part: str) -> dict[str, tuple[int, float]]:
    rows = [r for r in rows if r["split"] == part]
    good = [float(r["score"]) for r in rows if r["label"] == "0"]
    classes: dict[str, list[float]] = {}
    for r in rows:
        if r["label"] == "1":
            classes.setdefault(class_name(r["product"]), []).append(float(r["score"]))
    out = {"good": (len(good), float("nan"))}
    for name, bad in sorted(classes.items()):
        out[name] = (len(bad), float(roc_auc_score([0] * len(good) + [1] * len(bad), good + bad)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("patches_csv")
    ap.add_argument("--part", default="calibration", choices=["calibration", "reported"])
    a = ap.parse_args()
    res = per_class(list(csv.DictReader(open(a.patches_csv))), a.part)
    print(f"{a.part} part: {res.pop('good')[0]} good images")
    print("| class | images | AUROC vs good |\n|---|---|---|")
    for name, (n, auc) in res.items():
        print(f"| {name} | {n} | {auc:.3f} |")


if __name__ == "__main__":
    main()
