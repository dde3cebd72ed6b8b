"""GRD-Net speed: train-step images/s, score() patches/s, GFLOP per patch
(counted from the graph), achieved GFLOP/s against a matmul peak measured in
the same run, and the line budget (500 ms per strip of 60 patches).

    python bench/train_grdnet.py                       # vials, demo and the budget candidates
    python bench/train_grdnet.py --configs configs/vials_demo.yaml --steps 5
    python bench/train_grdnet.py --configs configs/grdnet_magnetic_tile_tiled.yaml --no-candidates --set model.unet_widths=[32,64,128,128]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2  # noqa: E402

from tfanomaly.config import load_config  # noqa: E402
from tfanomaly.models import registry  # noqa: E402

BUDGET_MS, STRIP = 500.0, 60


def matmul_peak(n: int = 4096, reps: int = 10, dtype=tf.float32) -> float:
    a = tf.cast(tf.random.uniform([n, n]), dtype)
    b = tf.cast(tf.random.uniform([n, n]), dtype)
    f = tf.function(lambda: tf.matmul(a, b))
    f().numpy()
    t = time.perf_counter()
    for _ in range(reps):
        f().numpy()
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def conv3x3_peak(batch: int = 16, size: int = 64, channels: int = 64, reps: int = 10) -> float:
    """GFLOP/s of a plain 3x3 SAME conv (NHWC, float32): the roofline of the small convolutions these models are made of."""
    x = tf.random.uniform([batch, size, size, channels])
    k = tf.random.uniform([3, 3, channels, channels])
    f = tf.function(lambda: tf.nn.conv2d(x, k, 1, "SAME"))
    f().numpy()
    t = time.perf_counter()
    for _ in range(reps):
        f().numpy()
    return 2 * batch * size * size * 9 * channels * channels * reps / (time.perf_counter() - t) / 1e9


def graph_gflop(fn, spec) -> float:
    concrete = tf.function(fn).get_concrete_function(spec)
    frozen = convert_variables_to_constants_v2(concrete)
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    prof = tf.compat.v1.profiler.profile(graph=frozen.graph, options=opts)
    return prof.total_float_ops / 1e9


def timed(fn, reps):
    fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def bench(name, cfg, train_batch, steps, score_batch):
    h, w = cfg.data.image_size
    c = cfg.data.channels
    keras.utils.set_random_seed(0)
    m = registry.build(cfg)
    m.compile_for_training(cfg.train, 1000, train_batch)
    params = m.count_params()
    spec = tf.TensorSpec([1, h, w, c], tf.float32)
    score_gf = graph_gflop(lambda x: m.score(x)["score"], spec)
    # train step: forward of G_E, G_D, G_E2 and two discriminator passes, plus ~2x for the backward
    gen_gf = graph_gflop(lambda x: m.decoder(m.encoder(x)), spec) + graph_gflop(lambda x: m.encoder2(x), spec)
    disc_gf = graph_gflop(lambda x: m.discriminator(x)[0], spec)
    train_gf = 3 * (gen_gf + 2 * disc_gf) + 2 * disc_gf * 3

    x = tf.random.uniform([train_batch, h, w, c])
    batch = {"image": x, "perturbed": x, "perturb_mask": tf.zeros([train_batch, h, w, 1]), "noise": tf.zeros_like(x)}
    step = tf.function(m.train_step)
    step_s = timed(lambda: [v.numpy() for v in step(batch).values()], steps)
    xs = tf.random.uniform([score_batch, h, w, c])
    score = tf.function(m.score)
    score_s = timed(lambda: score(xs)["score"].numpy(), max(2, steps))
    return {
        "name": name,
        "params_M": params / 1e6,
        "train_img_s": train_batch / step_s,
        "train_gflop_img": train_gf,
        "train_gflops": train_gf * train_batch / step_s,
        "score_patch_s": score_batch / score_s,
        "score_gflop_patch": score_gf,
        "score_gflops": score_gf * score_batch / score_s,
        "strip_ms": STRIP / (score_batch / score_s) * 1e3,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="*", default=["configs/vials.yaml", "configs/vials_demo.yaml"])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--no-candidates", action="store_true", help="skip the line-budget candidates")
    ap.add_argument("--set", action="append", default=[], help="config override key=value for --configs (repeatable)")
    args = ap.parse_args()
    peak = matmul_peak()
    conv_peak = conv3x3_peak()
    rows = []
    for path in args.configs:
        cfg = load_config(path, ["data.root=unused", *args.set])
        big = cfg.model.widths[-1] >= 512
        rows.append(bench(" ".join([path, *args.set]), cfg, 2 if big else cfg.train.batch_size, 1 if big else args.steps, 4 if big else 60))
    if not args.no_candidates:
        for widths, size in (([8, 16, 32, 64], 256), ([8, 16, 32, 64], 128), ([16, 32, 64, 128], 128), ([8, 16, 32], 64), ([16, 32, 64], 64)):
            over = [
                "data.root=unused",
                f"data.image_size=[{size}, {size}]",
                f"model.widths={widths}",
                f"model.stem_width={widths[0]}",
                f"model.disc_widths={widths}",
                "perturb.max_scale=3",
                "model.bottleneck=conv",
                "model.latent_dim=32",
            ]
            cfg = load_config("configs/vials.yaml", over)
            rows.append(bench(f"vials.yaml widths={widths} {size}px", cfg, 8, args.steps, 60))
    print(f"matmul peak measured in this run: {peak:.1f} GFLOP/s (fp32, 4096x4096); 3x3 conv: {conv_peak:.1f} GFLOP/s (16x64x64x64 -> 64)")
    hdr = f"{'config':<44}{'params M':>9}{'train img/s':>12}{'train GF/img':>13}{'train % peak':>13}{'score patch/s':>14}{'score GF/patch':>15}{'score % peak':>13}{'strip ms':>10}{'vs 500ms':>9}"
    print(hdr)
    for r in rows:
        print(
            f"{r['name']:<44}{r['params_M']:>9.2f}{r['train_img_s']:>12.2f}{r['train_gflop_img']:>13.2f}{100 * r['train_gflops'] / peak:>12.0f}%"
            f"{r['score_patch_s']:>14.1f}{r['score_gflop_patch']:>15.3f}{100 * r['score_gflops'] / peak:>12.0f}%{r['strip_ms']:>10.0f}{r['strip_ms'] / BUDGET_MS:>8.1f}x"
        )


if __name__ == "__main__":
    main()
