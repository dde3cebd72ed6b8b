"""The vial line's scoring options side by side, on a test kit: every patch
of the kit (the eval frames and the rank images) is reconstructed once, and
each score (``model.score``: the paper's 1 - SSIM, or the max of a smoothed
residual or 1 - SSIM map) on each image set (frames, rank images, both) is
calibrated on the kit's calibration products and reported on the others with
the run's decision rules (per-region thresholds, per-strip max, k of n).
Choose on the ``calibration`` columns; the ``reported`` ones are the result.

    python bench/line_scores.py --model runs/vials_demo --data demo_kit [--seed 0] [--out table.md]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

SCORES = {  # name: (model.score, score_sigma)
    "ssim": ("ssim", 0.0),
    "residual s1": ("residual", 1.0),
    "residual s2": ("residual", 2.0),
    "ssim_map s1": ("ssim_map", 1.0),
    "ssim_map s2": ("ssim_map", 2.0),
}


def score_kit(model, cfg, batch_size: int = 256):
    """Per patch: every score of SCORES, and the ids (one pass of G)."""
    import tensorflow as tf

    from tfanomaly import losses
    from tfanomaly.data.pipeline import Data
    from tfanomaly.models.grdnet import score_map

    w = model.cfg.ssim_window

    @tf.function
    def all_scores(x):
        x_hat = tf.cast(model.decoder(model.encoder(x)), tf.float32)
        out = {}
        for name, (kind, sigma) in SCORES.items():
            if kind == "ssim":
                out[name] = 1.0 - losses.ssim(x, x_hat, w)
            else:
                out[name] = tf.reduce_max(score_map(x, x_hat, kind, sigma, w), axis=[1, 2, 3])
        return out

    cols: dict[str, list] = {}
    for b in Data(cfg).eval_dataset("test", batch_size=batch_size):
        for k, v in all_scores(b["image"]).items():
            cols.setdefault(k, []).append(v.numpy())
        for k in ("label", "product", "run", "frame", "rank", "vial", "region"):
            cols.setdefault(k, []).append(b[k].numpy())
    return {k: np.concatenate(v) for k, v in cols.items()}


def evaluate_option(cols, score: str, keep: np.ndarray, cfg, seed: int) -> dict:
    from tfanomaly.evaluate import Scored, calibration_part, evaluate_split

    n = int(keep.sum())
    products = np.array([p.decode() if isinstance(p, bytes) else str(p) for p in cols["product"][keep]])
    s = Scored(
        cols[score][keep].astype(np.float64),
        cols["label"][keep].astype(int),
        products,
        cols["run"][keep],
        cols["frame"][keep],
        cols["vial"][keep],
        cols["region"][keep],
        np.zeros((n, 1, 1), np.float16),
        np.zeros((n, 1, 1), bool),
    )
    cal = calibration_part(s, cfg.eval.calibration_fraction, seed)
    out = {}
    for part, c, r in (("calibration", cal, cal), ("reported", cal, ~cal)):
        res = evaluate_split(s, cfg, cfg.eval.calibrate, c, r, cfg.eval.per_region)
        out[part] = {
            "patch_auroc": res["image"]["auroc"],
            "strip": res["strips"]["metrics"],
            "product": res["products"]["metrics"],
            "min_region_tpr": float(np.nanmin([v["at_threshold"]["tpr"] for v in res["regions"].values()])),
            "region_tpr": {k: v["at_threshold"]["tpr"] for k, v in res["regions"].items()},
            "patches_per_strip": res["strips"]["patches_per_strip"],
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="run folder of a vial-line GRD-Net (industrial)")
    ap.add_argument("--data", required=True, help="test kit folder (tfanomaly data synth kit)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the calibration/reported split of the kit's products")
    ap.add_argument("--ranks", default="1,16", help="rank images to score beside the frames (comma-separated)")
    ap.add_argument("--out", help="also write the table (markdown) here")
    a = ap.parse_args()

    from tfanomaly.config import load_config
    from tfanomaly.run import Run

    run = Run(a.model)
    ranks = [int(r) for r in a.ranks.split(",") if r]
    cfg = load_config(run.config_file, [f"data.root={a.data}", f"data.eval_ranks={ranks}"])
    model = run.load_model()
    t0 = time.perf_counter()
    cols = score_kit(model, cfg)
    took = time.perf_counter() - t0
    frames, ranks_all = cols["rank"] == 0, cols["rank"] > 0
    sets = {"frames": frames}
    for r in ranks:
        sets[f"rank {r}"] = cols["rank"] == r
    if len(ranks) > 1:
        sets["ranks " + "+".join(map(str, ranks))] = ranks_all
    if ranks:
        sets[f"frames + rank {ranks[0]}"] = frames | (cols["rank"] == ranks[0])
    head = (
        "| score | images | patches/strip | cal. patch AUROC | cal. strip acc | cal. strip TPR | rep. patch AUROC | rep. strip acc / TPR / TNR | rep. product acc / TPR / TNR | rep. min region TPR |"
    )
    lines = [
        f"{len(cols['label'])} patches scored in {took:.0f} s; kit {a.data}, split seed {a.seed}, rule {cfg.eval.calibrate}, per region {cfg.eval.per_region}, k of n {list(cfg.eval.k_of_n)}",
        "",
        head,
        "|" + "---|" * (head.count("|") - 1),
    ]
    for score in SCORES:
        for name, keep in sets.items():
            r = evaluate_option(cols, score, keep, cfg, a.seed)
            c, p = r["calibration"], r["reported"]

            def tri(m):
                return f"{m['accuracy']:.3f} / {m['tpr']:.3f} / {m['tnr']:.3f}"

            lines.append(
                f"| {score} | {name} | {p['patches_per_strip']} | {c['patch_auroc']:.3f} | {c['strip']['accuracy']:.3f} "
                f"| {c['strip']['tpr']:.3f} | {p['patch_auroc']:.3f} | {tri(p['strip'])} | {tri(p['product'])} "
                f"| {p['min_region_tpr']:.3f} |"
            )
            print(lines[-1], flush=True)
    text = "\n".join(lines)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
