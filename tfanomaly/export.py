"""``tfanomaly.export``: a SavedModel for the line, wrapping exactly ``model.score``.

Signatures (outputs are a dict, looked up by name in C++):
    serving_default(images float32 [B, H, W, C] in [0, 1] [, region int32 [B]])
    serve_png(png string [B] [, region int32 [B]])  -- PNG bytes, decoded in the graph
    -> score [B], heatmap [B, H, W, 1], reconstruction [B, H, W, C]
       (+ is_anomalous bool [B] when thresholds were calibrated)
The ``region`` input exists when thresholds are per region. ``tfanomaly.json``
beside the model holds the family, size, channels, preprocessing, thresholds,
aggregation rule, versions and a checksum of the variables. The directory is
written under a temporary name and renamed, so a crash never leaves half a
model where the line loads from.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import types
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfanomaly.decision import FORMAT_VERSION as DECISION_FORMAT
from tfanomaly.decision import RULES_TEXT as DECISION_RULES
from tfanomaly.decision import Decision
from tfanomaly.errors import UserError
from tfanomaly.run import Run
from tfanomaly.version import __version__


def variables_checksum(saved_model_dir: Path) -> str:
    """SHA-256 of the variable *values* of a SavedModel: the same weights give
    the same hash on every export (the variables files themselves are not
    byte-stable: they embed object-graph details)."""
    reader = tf.train.load_checkpoint(str(Path(saved_model_dir) / "variables" / "variables"))
    # The checkpoint's keys number the variables in an order that changes from one
    # export to the next, so the hash is over the sorted set of the values' digests.
    digests = set()
    for name in reader.get_variable_to_shape_map():
        if name.startswith("_CHECKPOINTABLE_OBJECT_GRAPH"):
            continue
        value = np.asarray(reader.get_tensor(name))
        digests.add(hashlib.sha256(f"{value.dtype}{value.shape}".encode() + value.tobytes()).hexdigest())
    return hashlib.sha256("".join(sorted(digests)).encode()).hexdigest()


def _clean_stale_temporaries(out: Path) -> None:
    """Remove what a killed export of ``out`` left behind (``.NAME.*`` folders beside it)."""
    for p in out.parent.glob(f".{out.name}.*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def strip_images(cfg) -> dict:
    """What one strip verdict takes on the vial line: the frames and rank images
    of an acquisition that are scored, and the patches they give."""
    from tfanomaly.data.sources import strip_boxes

    d = cfg.data
    n = len(d.eval_frames) + len(d.eval_ranks)
    return {"frames": list(d.eval_frames), "rank_images": list(d.eval_ranks), "patches_per_strip": n * len(strip_boxes(cfg))}


def build_archive(model: keras.Model, image_shape, decision: Decision | None, include_png: bool = True, tiling=None) -> keras.export.ExportArchive:
    """The export archive; ``tiling`` (stride, scale, interpolation and chunk,
    see :func:`export`) adds the whole-image signatures ``serve_image`` and
    ``serve_image_png``."""
    h, w, c = image_shape
    per_region = decision is not None and decision.per_region
    archive = keras.export.ExportArchive()
    # Only the networks the score path runs are saved (not discriminators,
    # frozen loss networks or optimizer state).
    for module in model.export_modules():
        archive.track(module)

    def decide(res, score, region):
        """The rules of :class:`~tfanomaly.decision.Decision`, in the graph: a
        region without a threshold is an InvalidArgument error (never a default
        threshold), and a non-finite score is anomalous."""
        if decision is None:
            return res
        table, known = decision.region_table()
        if per_region:
            ok = (region >= 0) & (region < len(table))
            ok = ok & tf.gather(tf.constant(known), tf.clip_by_value(region, 0, len(table) - 1))
            check = tf.debugging.Assert(tf.reduce_all(ok), ["region id without a threshold; known regions:", tf.constant([i for i, k in enumerate(known) if k])])
            with tf.control_dependencies([check]):
                t = tf.gather(tf.constant(table, tf.float32), tf.clip_by_value(region, 0, len(table) - 1))
        else:
            t = tf.constant(table[0], tf.float32)
        res["is_anomalous"] = (score >= t) | ~tf.math.is_finite(score)
        return res

    def outputs(images, region=None):
        out = model.score(images)
        res = {"score": out["score"], "heatmap": out["heatmap"], "reconstruction": out["reconstruction"]}
        return decide(res, out["score"], region)

    if tiling is not None:
        from tfanomaly import tiling as tiling_mod

        def whole(image, region=None):
            x = tiling_mod.rescale(image, tiling.scale, tiling.interpolation)
            o = tiling_mod.score_image(model.score, x, (h, w), tiling.stride, tiling.chunk, tiling.flips)
            res = {"score": o["score"][None], "heatmap": o["heatmap"][None], "reconstruction": o["reconstruction"][None]}
            return decide(res, res["score"], None if region is None else region[None])

        def decode_any(png):
            return tf.cast(tf.io.decode_png(png, channels=c, dtype=tf.uint8), tf.float32) / 255.0

        one_spec = tf.TensorSpec([None, None, c], tf.float32, name="image")
        one_png = tf.TensorSpec([], tf.string, name="png")
        one_reg = tf.TensorSpec([], tf.int32, name="region")
        if per_region:
            archive.add_endpoint("serve_image", lambda image, region: whole(image, region), [one_spec, one_reg])
            archive.add_endpoint("serve_image_png", lambda png, region: whole(decode_any(png), region), [one_png, one_reg])
        else:
            archive.add_endpoint("serve_image", lambda image: whole(image), [one_spec])
            archive.add_endpoint("serve_image_png", lambda png: whole(decode_any(png)), [one_png])

    def decode(png):
        def one(b):
            img = tf.io.decode_png(b, channels=c, dtype=tf.uint8)
            img = tf.ensure_shape(img, [h, w, c])  # wrong size: InvalidArgument, no silent resize
            return tf.cast(img, tf.float32) / 255.0

        return tf.map_fn(one, png, fn_output_signature=tf.TensorSpec([h, w, c], tf.float32))

    img_spec = tf.TensorSpec([None, h, w, c], tf.float32, name="images")
    png_spec = tf.TensorSpec([None], tf.string, name="png")
    reg_spec = tf.TensorSpec([None], tf.int32, name="region")
    if per_region:
        archive.add_endpoint("serving_default", lambda images, region: outputs(images, region), [img_spec, reg_spec])
        if include_png:
            archive.add_endpoint("serve_png", lambda png, region: outputs(decode(png), region), [png_spec, reg_spec])
    else:
        archive.add_endpoint("serving_default", lambda images: outputs(images), [img_spec])
        if include_png:
            archive.add_endpoint("serve_png", lambda png: outputs(decode(png)), [png_spec])
    return archive


def export(run_dir: str | os.PathLike, out: str | os.PathLike, thresholds_file: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Write the SavedModel of a run to ``out``. A non-empty ``out`` is refused
    unless ``force``; then the new model replaces it in one rename, and the old
    one is removed only after the new one is complete."""
    run = Run(run_dir)
    target = Path(out)
    if target.exists() and (not target.is_dir() or any(target.iterdir())) and not force:
        raise UserError(f"{target}: already exists and is not empty; export to a new folder, or pass --force to replace it")
    cfg = run.config()
    model = run.load_model()
    th_path = Path(thresholds_file) if thresholds_file else run.thresholds_file
    if thresholds_file and not th_path.exists():
        raise UserError(f"{th_path}: no such thresholds file")
    decision = Decision.load(th_path) if th_path.exists() else None
    if decision is not None:
        decision.apply_to(model, cfg)  # score (and tile) as the thresholds were calibrated
    shape = (cfg.data.image_size[0], cfg.data.image_size[1], cfg.data.channels)
    tiling = None
    if cfg.data.tiling.enabled:
        t = cfg.data.tiling
        tiling = types.SimpleNamespace(stride=list(t.stride), scale=t.scale, interpolation=cfg.data.interpolation, chunk=cfg.eval.batch_size, flips=list(t.flips))
    archive = build_archive(model, shape, decision, cfg.export.include_png, tiling)

    out = target
    out.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale_temporaries(out)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        archive.write_out(str(tmp / "model"), verbose=False)
        staged = tmp / "model"
        per_region = decision is not None and decision.per_region
        meta = {
            "family": cfg.family,
            "image_size": list(cfg.data.image_size),
            "channels": cfg.data.channels,
            "preprocessing": "serving_default: float32 [B, H, W, C] scaled to [0, 1] (pixel / 255), no normalisation; serve_png: 8-bit PNG of exactly H x W with C channels",
            "signatures": {
                "serving_default": ["images"] + (["region"] if per_region else []),
                "serve_png": (["png"] + (["region"] if per_region else [])) if cfg.export.include_png else None,
            },
            "outputs": ["score", "heatmap", "reconstruction"] + (["is_anomalous"] if decision else []),
            "tiling": None
            if tiling is None
            else {
                "tile": list(cfg.data.image_size),
                "stride": list(tiling.stride),
                "scale": tiling.scale,
                "interpolation": tiling.interpolation,
                "flips": list(tiling.flips),
                "signatures": {
                    "serve_image": ["image"] + (["region"] if per_region else []),
                    "serve_image_png": ["png"] + (["region"] if per_region else []),
                },
                "rule": "a whole image of any size, float32 [H, W, C] in [0, 1] (or one 8-bit PNG), is resized by "
                "scale, cut into tiles at stride (the last tile flush with the border), scored by tiles; score = max "
                "over tiles, heatmap [1, round(H*scale), round(W*scale), 1] stitched with overlaps averaged; with flips, "
                "each tile's score and heatmap are the mean over the tile and its flips (inside the graph)",
            },
            "thresholds": None
            if decision is None
            else {
                "format_version": DECISION_FORMAT,
                "rule": decision.rule,
                "per_region": per_region,
                "values": [decision.thresholds.get(i) for i in range(max(decision.thresholds) + 1)] if per_region else float(decision.thresholds),
                "known_regions": sorted(decision.thresholds) if per_region else None,
                "rules": DECISION_RULES,
                "region_names": cfg.data.strip.region_names if cfg.data.source == "vials" else None,
            },
            "score_options": model.score_options(),
            "aggregation": {
                "per_run": "max over patches",
                "k_of_n": list(decision.k_of_n if decision else cfg.eval.k_of_n),
                **(strip_images(cfg) if cfg.data.source == "vials" else {}),
            },
            "versions": {"tfanomaly": __version__, "tensorflow": tf.__version__, "keras": keras.__version__},
            "variables_sha256": variables_checksum(staged),
        }
        (staged / "tfanomaly.json").write_text(json.dumps(meta, indent=2))
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
        os.replace(staged, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
