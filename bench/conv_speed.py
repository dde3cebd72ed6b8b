"""Stride-1 convolutions on CPU: keras' layers against tfanomaly's (``models/blocks.py``),
per layer and per train step, with the machine's roofline measured in the same run.

TF 2.21's CPU Conv2DBackpropInput (the input gradient of a conv, and the forward
of a transposed conv) is much slower than the forward conv on the narrow stages
of the line-sized models; blocks.Conv2D / Conv2DTranspose compute it as a forward
conv with the flipped kernel. Same weights, same function (tests/test_grdnet.py).

    python bench/conv_speed.py                                   # layers + the shipped GRD-Net configs
    python bench/conv_speed.py --configs configs/vials_demo.yaml --reps 20
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _common import cpu_model, interleaved_ms  # noqa: E402
from train_grdnet import conv3x3_peak, matmul_peak  # noqa: E402

from tfanomaly.batch import make  # noqa: E402
from tfanomaly.config import load_config  # noqa: E402
from tfanomaly.models import blocks, registry  # noqa: E402

FAST = (blocks.Conv2D, blocks.Conv2DTranspose)
KERAS = (keras.layers.Conv2D, keras.layers.Conv2DTranspose)


def median_ms(fn, reps: int) -> float:
    for _ in range(2):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def layer_row(kind: str, size: int, ch: int, reps: int, batch: int = 16) -> dict:
    x = tf.random.uniform([batch, size, size, ch])
    row = {"layer": f"{kind} 3x3 {ch}->{ch} @{size}px"}
    pair = []
    for name, (conv, tconv) in (("keras", KERAS), ("fast", FAST)):
        layer = (conv if kind == "conv" else tconv)(ch, 3, padding="same")
        layer(x)
        pair.append(layer)

        @tf.function
        def fwd_bwd(layer=layer):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(tf.square(layer(x)))
            return tape.gradient(loss, [x] + layer.trainable_variables)

        fwd = tf.function(lambda layer=layer: layer(x))
        row[f"{name} fwd"] = median_ms(lambda f=fwd: f().numpy(), reps)
        row[f"{name} fwd+bwd"] = median_ms(lambda f=fwd_bwd: f()[0].numpy(), reps)
    pair[1].set_weights(pair[0].get_weights())
    row["max |diff|"] = float(tf.reduce_max(tf.abs(pair[0](x) - pair[1](x))))
    return row


def step_row(path: str, reps: int) -> dict:
    cfg = load_config(path, ["data.root=unused"])
    b, (h, w), c = cfg.train.batch_size, cfg.data.image_size, cfg.data.channels
    x = tf.random.uniform([b, h, w, c])
    batch = make(x)
    steps = {}
    for name, classes in (("keras", KERAS), ("fast", FAST)):
        blocks.Conv2D, blocks.Conv2DTranspose = classes
        try:
            keras.utils.set_random_seed(0)
            m = registry.build(cfg)
            m.compile_for_training(cfg.train, 1000, b)
        finally:
            blocks.Conv2D, blocks.Conv2DTranspose = FAST
        steps[name] = tf.function(m.train_step)
    row = {"config": f"{path} (batch {b}, {h}x{w}x{c})"}
    for k, ms in interleaved_ms(steps, batch, reps).items():
        row[f"{k} ms/step"] = ms
    row["speed-up"] = row["keras ms/step"] / row["fast ms/step"]
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="*", default=["configs/vials_demo.yaml", "configs/grdnet_magnetic_tile_tiled.yaml"])
    ap.add_argument("--reps", type=int, default=10, help="timed repetitions per figure (median)")
    args = ap.parse_args()
    print(f"machine: {cpu_model()}")
    print(f"roofline in this run: matmul {matmul_peak():.1f} GFLOP/s (fp32 4096^2), 3x3 conv {conv3x3_peak():.1f} GFLOP/s (16x64x64x64)")
    print(f"\n{'layer (batch 16)':<30}{'keras fwd':>10}{'fast fwd':>10}{'keras f+b':>11}{'fast f+b':>10}{'f+b ratio':>10}{'max|diff|':>11}")
    for kind, size, ch in (("conv", 64, 8), ("conv", 32, 16), ("conv", 16, 32), ("tconv", 64, 8), ("tconv", 32, 16), ("tconv", 16, 32)):
        r = layer_row(kind, size, ch, args.reps * 3)
        print(
            f"{r['layer']:<30}{r['keras fwd']:>8.2f}ms{r['fast fwd']:>8.2f}ms{r['keras fwd+bwd']:>9.2f}ms{r['fast fwd+bwd']:>8.2f}ms"
            f"{r['keras fwd+bwd'] / r['fast fwd+bwd']:>9.2f}x{r['max |diff|']:>11.1e}"
        )
    print(f"\n{'train step':<70}{'keras':>10}{'fast':>10}{'speed-up':>10}")
    for path in args.configs:
        r = step_row(path, args.reps)
        print(f"{r['config']:<70}{r['keras ms/step']:>8.0f}ms{r['fast ms/step']:>8.0f}ms{r['speed-up']:>9.2f}x")


if __name__ == "__main__":
    main()
