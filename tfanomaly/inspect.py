"""``tfanomaly data inspect``: counts and a picture of what the pipeline feeds a model."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfanomaly.data import perlin
from tfanomaly.data.pipeline import Data, to_float
from tfanomaly.data.sources import summarize
from tfanomaly.files import tile_grid, write_png


def _region_table(data: Data, cfg) -> str:
    names = cfg.data.strip.region_names if cfg.data.source == "vials" else ["all"]
    counts = Counter()
    for e in data.patches("test", training=False).as_numpy_iterator():
        counts[(int(e["region"]), int(e["label"]))] += 1
    lines = [f"{'region':<10}{'good':>8}{'defective':>11}"]
    for r, name in enumerate(names):
        lines.append(f"{name:<10}{counts[(r, 0)]:>8}{counts[(r, 1)]:>11}")
    return "\n".join(lines)


def sample_grid(data: Data, cfg, rows: int = 8) -> np.ndarray:
    """Rows of train patches: the patch, its rank images (vials), and its
    Perlin perturbation X_n with the map M and the noise N. A dataset with no
    training images (a test kit) shows its test images in the same layout."""
    per = {}
    n_needed = rows * ((data.source.images_per_acquisition(True) if data.source is not None else 1) + 1)
    has_train = data.index is None or bool(data.index.subset("train"))
    subset, labels = ("train", (0,)) if has_train else ("test", (0, 1))
    for e in data.patches(subset, training=True, labels=labels).take(n_needed).as_numpy_iterator():
        key = (int(e["vial"]), int(e["region"]))
        slot = per.setdefault(key, {"frame": None, "ranks": {}})
        if e["rank"] == 0 and slot["frame"] is None:
            slot["frame"] = e["image"]
        elif e["rank"] > 0:
            slot["ranks"][int(e["rank"])] = e["image"]
        if len(per) > rows:
            break
    for slot in per.values():  # trained on rank images only (data.train_frames: []): perturb the first
        if slot["frame"] is None and slot["ranks"]:
            slot["frame"] = slot["ranks"][min(slot["ranks"])]
    keys = [k for k in per if per[k]["frame"] is not None][:rows]
    cols: dict[str, list] = {"patch": []}
    p = cfg.perturb
    for i, k in enumerate(keys):
        x = to_float(per[k]["frame"])
        cols["patch"].append(x)
        for r, img in sorted(per[k]["ranks"].items()):
            cols.setdefault(f"rank {r}", []).append(to_float(img))
        other = None
        if p.other > 0:  # perturb.other: the next row's patch, at this one's size
            other = tf.image.resize(to_float(per[keys[(i + 1) % len(keys)]]["frame"]), tf.shape(x)[:2])
        xn, m, n = perlin.perturb(
            x,
            tf.constant([cfg.seed, i], tf.int64),
            **p.kwargs(probability=1.0, other_image=other),
        )
        cols.setdefault("X_n", []).append(xn)
        cols.setdefault("M", []).append(m)
        cols.setdefault("N", []).append(n)
    return tile_grid({k: np.stack(v) for k, v in cols.items() if len(v) == len(keys)}, rows)


def inspect(cfg, out: Path) -> str:
    data = Data(cfg)
    lines = []
    if data.index is not None:
        s = summarize(data.index)
        lines.append(f"source {s['source']}: {s['items']} items ({s['train_good']} train good, {s['test_good']} test good, {s['test_defective']} test defective), {s['skipped']} skipped")
    lines.append(f"patches: {data.count('train', True)} train, {data.count('test', False)} test")
    lines.append(_region_table(data, cfg))
    write_png(Path(out), sample_grid(data, cfg))
    lines.append(f"sample grid -> {out}")
    return "\n".join(lines)
