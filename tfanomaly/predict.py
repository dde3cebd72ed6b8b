"""``tfanomaly predict``: scores, decisions and heatmaps for new images.

For a vial-strip model every input is a strip image, cut into its 20 patches
(5 vials x 4 regions) by the run's ``data.strip`` boxes; a strip is flagged
when any patch is. Other models take each image whole, resized (data.interpolation) to
the model's input size, or, when the run tiles its images (``data.tiling``), at
their own size: resized by the tiling scale only, scored by tiles (max over
tiles), with the heatmap stitched over the whole image.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import cv2
import numpy as np
import tensorflow as tf

from tfanomaly.data.sources import strip_boxes
from tfanomaly.errors import DataError, UserError
from tfanomaly.files import atomic_write_text, write_png
from tfanomaly.run import Run
from tfanomaly.tiling import TiledScorer, rescale


def _read(path: Path, channels: int) -> np.ndarray:
    """The image as uint8 [H, W, C] (RGB order), or a DataError saying how it
    differs from what the model takes (8-bit, ``channels``): nothing is
    converted, as the training data is not (an RGB file for a grayscale model
    is refused, not turned gray)."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DataError(f"{path}: not a readable image")
    if img.ndim == 2:
        img = img[..., None]
    if img.dtype != np.uint8:
        raise DataError(f"{path}: {img.dtype} samples, expected an 8-bit image")
    if img.shape[-1] != channels:
        raise DataError(f"{path}: {img.shape[-1]} channel(s), expected {channels}")
    if channels >= 3:
        img = np.concatenate([img[..., 2::-1], img[..., 3:]], -1)  # BGR(A) -> RGB(A)
    return img


def _read_all(paths: list[Path], channels: int) -> list[np.ndarray]:
    """Every image read, or one DataError naming every file that does not fit."""
    images, bad = [], []
    for p in paths:
        try:
            images.append(_read(p, channels))
        except DataError as e:
            bad.append(str(e))
    if bad:
        raise DataError(f"{len(bad)} of {len(paths)} images do not fit the model: " + "; ".join(bad))
    return images


def _resize(img, h, w, method="bilinear"):
    out = tf.image.resize(tf.constant(img, tf.float32), [h, w], method)
    return tf.clip_by_value(tf.round(out), 0, 255).numpy() / 255.0


def predict(run_dir, images, out: Path | None = None, heatmaps: Path | None = None, region: int | None = None) -> list[dict]:
    run = Run(run_dir)
    cfg = run.config()
    model = run.load_model()
    decision = run.decision()
    if decision is not None:
        decision.apply_to(model, cfg)  # score (and tile) as the thresholds were calibrated
    h, w = cfg.data.image_size
    c = cfg.data.channels
    strips = cfg.data.source == "vials"
    tiled = cfg.data.tiling.enabled
    boxes = strip_boxes(cfg) if strips else None
    patches, meta = [], []
    paths = [Path(p) for p in images]
    for p, img in zip(paths, _read_all(paths, c)):
        if strips:
            need = (max(b[2][2] for b in boxes), max(b[2][3] for b in boxes))
            if img.shape[0] < need[0] or img.shape[1] < need[1]:
                raise DataError(f"{p}: strip image is {img.shape[1]}x{img.shape[0]}, smaller than the boxes of data.strip ({need[1]}x{need[0]})")
            for v, r, (y0, x0, y1, x1) in boxes:
                patches.append(_resize(img[y0:y1, x0:x1], h, w, cfg.data.interpolation))
                meta.append({"file": str(p), "vial": v, "region": r})
        else:
            patches.append(img.astype(np.float32) / 255.0 if tiled else _resize(img, h, w, cfg.data.interpolation))
            meta.append({"file": str(p), "vial": 0, "region": region if region is not None else 0})
    if not patches:
        raise UserError("predict: no images given")
    results = []
    if tiled:
        scorer = TiledScorer.from_config(model, cfg)
        for img in patches:
            o = scorer(rescale(tf.constant(img, tf.float32), cfg.data.tiling.scale, cfg.data.interpolation))
            results.append((float(o["score"]), o["heatmap"].numpy()))
    else:
        x = np.stack(patches).astype(np.float32)
        score = tf.function(model.score)
        for i in range(0, len(x), 64):
            o = score(tf.constant(x[i : i + 64]))
            for j in range(o["score"].shape[0]):
                results.append((float(o["score"][j]), o["heatmap"][j].numpy()))
    rows = []
    for m, (s, hm) in zip(meta, results):
        finite = bool(np.isfinite(s))
        row = dict(m, score=s if finite else None)  # None: valid JSON, where NaN is not
        if not finite:
            row["error"] = "non-finite score (does the image hold NaN or inf values?): judged anomalous"
        if decision is not None:
            row["threshold"] = float(decision.threshold_for([m["region"]])[0])
            row["is_anomalous"] = bool(decision.flags([s], [m["region"]])[0])
        rows.append(row)
        if heatmaps:
            name = Path(m["file"]).stem + (f"_v{m['vial']}_r{m['region']}" if strips else "") + "_heatmap.png"
            rgb = cv2.applyColorMap((np.clip(hm[..., 0], 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
            write_png(Path(heatmaps) / name, np.ascontiguousarray(rgb))
    if out:
        out = Path(out)
        if out.suffix.lower() == ".csv":
            buf = io.StringIO()
            wr = csv.DictWriter(buf, fieldnames=list(rows[0]))
            wr.writeheader()
            wr.writerows(rows)
            atomic_write_text(out, buf.getvalue())
        else:
            atomic_write_text(out, json.dumps(rows, indent=2))
    return rows
