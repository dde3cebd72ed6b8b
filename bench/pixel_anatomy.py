"""Where a tiled model's pixel AUROC goes, on the calibration part only: each
defect class's share of the defect pixels and its pixel AUROC (its pixels
against every pixel of the good images), and pixel AUROC / AUPRO when the
stitched heatmaps are smoothed by a gaussian of each ``--sigmas`` value
(edges mirrored, as ``model.heatmap_sigma`` does per tile). One scoring pass;
the smoothing is applied afterwards. Prints a table.

    python bench/pixel_anatomy.py --model RUN/checkpoints/step_0002500.keras --config RUN/config.yaml \\
        --set model.score_pool=1 --set "data.tiling.flips=[h,v,hv]" --sigmas 0,2,4,8,16
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a .keras checkpoint or model file")
    ap.add_argument("--config", required=True, help="the run's config")
    ap.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
    ap.add_argument("--sigmas", default="0,2,4,8,16", help="gaussian sigmas (pixels of the scored image) to smooth the heatmaps by")
    a = ap.parse_args()

    import cv2
    import numpy as np
    from _common import cpu_model
    from per_class_auroc import class_name
    from sklearn.metrics import roc_auc_score

    import tfanomaly
    from tfanomaly import metrics
    from tfanomaly.data.pipeline import Data
    from tfanomaly.evaluate import _ragged, apply_score_options, calibration_part, score_test_set
    from tfanomaly.filters import gaussian_window
    from tfanomaly.run import load_model

    cfg = tfanomaly.load_config(a.config, a.set)
    model = load_model(a.model)
    apply_score_options(model, cfg)
    s = score_test_set(model, cfg, Data(cfg))
    idx = np.where(calibration_part(s, cfg.eval.calibration_fraction, cfg.seed))[0]
    heat = [s.heatmaps[i].astype(np.float32) for i in idx]
    masks = [s.masks[i] for i in idx]
    classes = [class_name(s.products[i]) if s.labels[i] else "good" for i in idx]
    names = sorted(set(classes) - {"good"})
    total = sum(int(m.sum()) for m in masks)
    print(f"machine: {cpu_model()}; calibration part of seed {cfg.seed}: {len(idx)} images, {total} defect pixels\n")
    print("| class | images | mean mask fraction | share of the defect pixels |")
    print("|---|---|---|---|")
    for c in names:
        sel = [j for j, k in enumerate(classes) if k == c]
        print(f"| {c} | {len(sel)} | {np.mean([masks[j].mean() for j in sel]):.3f} | {sum(int(masks[j].sum()) for j in sel) / total:.3f} |")

    def smooth(h, sigma):
        if sigma <= 0:
            return h
        k = gaussian_window(sigma)
        return cv2.GaussianBlur(h, (k, k), sigma, borderType=cv2.BORDER_REFLECT)

    def pixel(hs, sel):
        return roc_auc_score(np.concatenate([masks[j].ravel() for j in sel]), np.concatenate([hs[j].ravel() for j in sel]))

    print("\n| heatmap sigma | pixel AUROC | AUPRO@30% | " + " | ".join(f"{c} pixel AUROC" for c in names) + " |")
    print("|---" * (len(names) + 3) + "|")
    for sigma in [float(v) for v in a.sigmas.split(",")]:
        hs = [smooth(h, sigma) for h in heat]
        per = [pixel(hs, [j for j, k in enumerate(classes) if k in (c, "good")]) for c in names]
        whole = metrics.pixel_auroc(_ragged(masks), _ragged(hs))
        pro = metrics.aupro(_ragged(masks), _ragged(hs))
        print(f"| {sigma:g} | {whole:.3f} | {pro:.3f} | " + " | ".join(f"{v:.3f}" for v in per) + " |", flush=True)


if __name__ == "__main__":
    main()
