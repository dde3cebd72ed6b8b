"""ADGAN's one-class protocol on scikit-learn's bundled handwritten digits
(offline): each digit in turn is the normal class, the other nine are
anomalous. Images (8x8, 0-16) are upscaled to 32x32 (bicubic) and written as
PNG folders; 80% of the normal class trains (the protocol split, seed 0); the
test set is the other 20% plus ``--anomalous`` images drawn from the other
digits (seeded). Every digit trains for ``--minutes`` per objective; the
table gives AUROC and optimal accuracy (TPR = TNR) per digit and objective.

    python bench/adgan_digits.py --minutes 0.5 --objectives gan,wgan_gp --out /tmp/digits
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402


def write_digits(out: Path, digit: int, n_anomalous: int, seed: int = 0) -> Path:
    from sklearn.datasets import load_digits

    d = load_digits()
    root = out / f"digit_{digit}"
    if root.exists():
        shutil.rmtree(root)
    rng = np.random.default_rng(seed)
    others = np.flatnonzero(d.target != digit)
    pick = set(rng.choice(others, size=min(n_anomalous, len(others)), replace=False).tolist())
    for i, (img, y) in enumerate(zip(d.images, d.target)):
        if y != digit and i not in pick:
            continue
        big = cv2.resize((img / 16.0 * 255).astype(np.float32), (32, 32), interpolation=cv2.INTER_CUBIC)
        folder = root / ("normal" if y == digit else "anomalous")
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{i:04d}.png"), np.clip(big, 0, 255).astype(np.uint8))
    return root


def run(root: Path, objective: str, minutes: float, work: Path) -> dict:
    from tfanomaly.config import load_config
    from tfanomaly.evaluate import evaluate
    from tfanomaly.run import Run
    from tfanomaly.train import train

    over = [
        f"data.root={root}",
        "data.image_size=[32, 32]",
        "data.channels=1",
        "data.mask_suffix=.none",
        f"model.objective={objective}",
        "model.base_width=32",
        "model.latent_dim=32",
        f"train.time_budget_minutes={minutes}",
        "train.epochs=10000",
        "train.steps_per_epoch=20",
        "train.batch_size=64",
        "train.samples_every=100000",
        "eval.calibration_fraction=0.5",
        "eval.calibrate=max_accuracy",
    ]
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / f"adgan_{'dcgan' if objective == 'gan' else objective}.yaml", over)
    run_dir = work / f"{root.name}_{objective}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run = Run(train(cfg, run_dir, verbose=0))
    steps = run.summary()["global_step"]
    s = evaluate(run.load_model(), cfg, run.eval_dir, seeds=[0, 1, 2])
    return {"auroc": s["image_auroc"]["mean"], "opt_acc": s["optimal_accuracy"]["mean"], "steps": steps}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/adgan_digits")
    ap.add_argument("--minutes", type=float, default=0.5)
    ap.add_argument("--objectives", default="gan,wgan_gp")
    ap.add_argument("--digits", default="0,1,2,3,4,5,6,7,8,9")
    ap.add_argument("--anomalous", type=int, default=200)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    objectives = a.objectives.split(",")
    rows = {}
    for digit in map(int, a.digits.split(",")):
        root = write_digits(out / "data", digit, a.anomalous)
        rows[digit] = {o: run(root, o, a.minutes, out / "runs") for o in objectives}
        print(json.dumps({"digit": digit, **rows[digit]}), flush=True)
    print(f"\nsklearn digits, 32x32, {a.minutes} min training per digit and objective, AUROC / optimal accuracy (mean over 3 seeded calibration/report splits of the test set)")
    print(f"{'digit':<7}" + "".join(f"{o + ' AUROC':>14}{o + ' opt.acc':>16}{'steps':>7}" for o in objectives))
    for digit, r in rows.items():
        print(f"{digit:<7}" + "".join(f"{r[o]['auroc']:>14.3f}{r[o]['opt_acc']:>16.3f}{r[o]['steps']:>7}" for o in objectives))
    print(f"{'mean':<7}" + "".join(f"{np.mean([r[o]['auroc'] for r in rows.values()]):>14.3f}{np.mean([r[o]['opt_acc'] for r in rows.values()]):>16.3f}{'':>7}" for o in objectives))


if __name__ == "__main__":
    main()
