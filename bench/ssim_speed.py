"""SSIM on CPU: TensorFlow's ``tf.image.ssim`` (a depthwise 2-D gaussian
convolution) against tfanomaly's separable banded-matmul SSIM
(``tfanomaly.losses.ssim``), alone (value + gradient) and inside the GRD-Net
demo train step and score, all measured in one run with the machine's
roofline (a 4096 matmul and a 3x3 conv).

    python bench/ssim_speed.py [--config configs/vials_demo.yaml] [--reps 10]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from train_grdnet import conv3x3_peak, matmul_peak, timed  # noqa: E402

from tfanomaly import losses  # noqa: E402
from tfanomaly.config import load_config  # noqa: E402
from tfanomaly.models import registry  # noqa: E402


def tf_ssim(x, y, window: int = 11, sigma: float = 1.5):
    return tf.image.ssim(tf.cast(x, tf.float32), tf.cast(y, tf.float32), max_val=1.0, filter_size=window, filter_sigma=sigma)


def ssim_grad_s(fn, x, y, reps):
    @tf.function
    def step():
        with tf.GradientTape() as t:
            t.watch(y)
            v = tf.reduce_sum(fn(x, y, 11))
        return v, t.gradient(v, y)

    return timed(lambda: [a.numpy() for a in step()], reps)


def grdnet_step_s(cfg, reps):
    keras.utils.set_random_seed(0)
    m = registry.build(cfg)
    b = cfg.train.batch_size
    m.compile_for_training(cfg.train, 1000, b)
    h, w = cfg.data.image_size
    x = tf.random.uniform([b, h, w, cfg.data.channels])
    batch = {"image": x, "perturbed": x, "perturb_mask": tf.zeros([b, h, w, 1]), "noise": tf.zeros_like(x)}
    step = tf.function(m.train_step)
    xs = tf.random.uniform([60, h, w, cfg.data.channels])
    score = tf.function(m.score)
    return timed(lambda: [v.numpy() for v in step(batch).values()], reps), timed(lambda: score(xs)["score"].numpy(), reps)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/vials_demo.yaml")
    ap.add_argument("--reps", type=int, default=10)
    a = ap.parse_args()
    peak, conv = matmul_peak(), conv3x3_peak()
    cfg = load_config(a.config, ["data.root=unused"])
    h, w = cfg.data.image_size
    x = tf.random.uniform([16, h, w, cfg.data.channels])
    y = tf.clip_by_value(x + tf.random.normal(x.shape, stddev=0.1), 0.0, 1.0)
    diff = float(np.abs(tf_ssim(x, y).numpy() - losses.ssim(x, y, 11).numpy()).max())
    rows = [("SSIM value + gradient, batch 16", ssim_grad_s(tf_ssim, x, y, a.reps), ssim_grad_s(losses.ssim, x, y, a.reps))]
    mine = losses.ssim
    losses.ssim = tf_ssim  # the models call losses.ssim at trace time
    try:
        old_step, old_score = grdnet_step_s(cfg, a.reps)
    finally:
        losses.ssim = mine
    new_step, new_score = grdnet_step_s(cfg, a.reps)
    rows += [(f"GRD-Net train step, batch {cfg.train.batch_size} ({a.config})", old_step, new_step), ("GRD-Net score, 60 patches (one strip)", old_score, new_score)]
    print(f"matmul peak {peak:.1f} GFLOP/s, 3x3 conv {conv:.1f} GFLOP/s (measured in this run); max |tf.image.ssim - losses.ssim| = {diff:.1e}")
    print(f"{'what':<60}{'tf.image.ssim ms':>18}{'banded matmul ms':>18}{'ratio':>8}")
    for name, old, new in rows:
        print(f"{name:<60}{old * 1e3:>18.1f}{new * 1e3:>18.1f}{old / new:>8.2f}")


if __name__ == "__main__":
    main()
