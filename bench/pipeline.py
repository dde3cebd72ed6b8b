"""Input-pipeline throughput, and TF Perlin noise against perlin-numpy.

    python bench/pipeline.py --data demo_data [--config configs/vials_demo.yaml] [--batches 60]

Prints a table: training patches/s of the full pipeline (decode, patch, rank,
augment, Perlin) read from images and from TFRecord shards, and the time of
one 256x256 Perlin field in TF (batched in tf.data-style map) and in
perlin-numpy, measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfanomaly.config import load_config  # noqa: E402
from tfanomaly.data.perlin import perturb, stateless_perlin  # noqa: E402
from tfanomaly.data.pipeline import Data, pack  # noqa: E402


def patches_per_second(cfg, batches: int, batch_size: int) -> float:
    ds = Data(cfg).train_dataset(batch_size)
    it = iter(ds)
    for _ in range(3):  # warm up (tracing, first reads, shuffle buffer fill)
        next(it)
    t = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch_size / (time.perf_counter() - t)


def perlin_times(n: int = 200):
    from perlin_numpy import generate_perlin_noise_2d

    @tf.function
    def tf_one(i):
        return stateless_perlin((256, 256), (tf.constant(8), tf.constant(8)), tf.stack([tf.constant(0, tf.int64), i]))

    tf_one(tf.constant(0, tf.int64))
    t = time.perf_counter()
    for i in range(n):
        tf_one(tf.constant(i, tf.int64)).numpy()
    tf_s = (time.perf_counter() - t) / n

    ds = tf.data.Dataset.range(n).map(lambda i: stateless_perlin((256, 256), (tf.constant(8), tf.constant(8)), tf.stack([tf.constant(0, tf.int64), i])), num_parallel_calls=tf.data.AUTOTUNE)
    for _ in ds.take(4):
        pass
    t = time.perf_counter()
    for _ in ds:
        pass
    tf_ds_s = (time.perf_counter() - t) / n

    rng = np.random.default_rng(0)
    t = time.perf_counter()
    for _ in range(n):
        generate_perlin_noise_2d((256, 256), (8, 8), rng=rng)
    np_s = (time.perf_counter() - t) / n

    @tf.function
    def full(i):
        return perturb(tf.zeros([256, 256, 1]), tf.stack([tf.constant(1, tf.int64), i]), probability=1.0, max_scale=6)

    full(tf.constant(0, tf.int64))
    t = time.perf_counter()
    for i in range(n):
        [x.numpy() for x in full(tf.constant(i, tf.int64))]
    perturb_s = (time.perf_counter() - t) / n
    return tf_s, tf_ds_s, np_s, perturb_s


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="demo_data")
    ap.add_argument("--config", default="configs/vials_demo.yaml")
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    rows = []
    for size in (64, 256):
        over = [f"data.root={args.data}", f"data.image_size=[{size}, {size}]", "data.cache=false", "perturb.max_scale=4"]
        cfg = load_config(args.config, over)
        rows.append((f"pipeline from PNG strips, {size}px patches", patches_per_second(cfg, args.batches, args.batch_size), "patches/s"))
        with tempfile.TemporaryDirectory() as tmp:
            pack(cfg, tmp, shard_size=4096)
            cfg_tf = load_config(args.config, over + [f"data.tfrecords={tmp}"])
            rows.append((f"pipeline from TFRecord shards, {size}px patches", patches_per_second(cfg_tf, args.batches, args.batch_size), "patches/s"))
    tf_s, tf_ds_s, np_s, perturb_s = perlin_times()
    rows += [
        ("Perlin 256x256 res 8, TF tf.function, one call", tf_s * 1e3, "ms/image"),
        ("Perlin 256x256 res 8, TF in tf.data map (parallel)", tf_ds_s * 1e3, "ms/image"),
        ("Perlin 256x256 res 8, perlin-numpy", np_s * 1e3, "ms/image"),
        ("ratio perlin-numpy / TF (one call)", np_s / tf_s, "x"),
        ("ratio perlin-numpy / TF (tf.data)", np_s / tf_ds_s, "x"),
        ("full perturbation P_q (2 fields + blend), TF", perturb_s * 1e3, "ms/image"),
    ]
    print(f"{'measurement':<55}{'value':>12}  unit")
    for name, v, unit in rows:
        print(f"{name:<55}{v:>12.2f}  {unit}")


if __name__ == "__main__":
    main()
