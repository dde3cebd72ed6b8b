"""ADGAN scoring speed: scored samples per second of the latent search
(n_seed 3, k 19 by default) at the shipped configs' sizes, searched as one
batch ([B * n_seed, latent] in one graph) against one sample at a time, and
the exact per-sample generator adaptation (lr_theta > 0), all in one run.

    python bench/score_adgan.py                      # configs/adgan_dcgan.yaml, batch 32
    python bench/score_adgan.py --config configs/adgan_rgbd.yaml --batch 16
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfanomaly.config import load_config  # noqa: E402
from tfanomaly.models import registry  # noqa: E402


def rate(fn, x, n_items, reps):
    fn(x)  # trace
    t = time.perf_counter()
    for _ in range(reps):
        fn(x)
    return n_items * reps / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/adgan_dcgan.yaml")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--adapt-samples", type=int, default=2, help="samples scored with generator adaptation (slow)")
    a = ap.parse_args()
    base = load_config(a.config, ["model.lr_theta=0"])
    h, w = base.data.image_size
    c = base.data.channels
    keras.utils.set_random_seed(0)
    m = registry.build(base)
    x = tf.constant(np.random.default_rng(0).uniform(size=(a.batch, h, w, c)).astype(np.float32))
    score = tf.function(lambda v: m.score(v)["score"])

    batched = rate(lambda v: score(v).numpy(), x, a.batch, a.reps)

    def singles(v):
        for i in range(v.shape[0]):
            score(v[i : i + 1]).numpy()

    single = rate(singles, x, a.batch, max(1, a.reps // 3))
    adapt_cfg = load_config(a.config, ["model.lr_theta=6e-9"])
    ma = registry.build(adapt_cfg)
    ma.set_weights(m.get_weights())
    score_a = tf.function(lambda v: ma.score(v)["score"])
    xa = x[: a.adapt_samples]
    adapt = rate(lambda v: score_a(v).numpy(), xa, a.adapt_samples, 1)
    mc = base.model
    print(f"config {a.config}: {h}x{w}x{c}, latent {mc.latent_dim}, n_seed {mc.n_seed}, k {mc.search_steps}, generator {m.generator.count_params() / 1e6:.2f} M parameters")
    print(f"{'mode':<44}{'samples/s':>10}{'ratio':>8}")
    print(f"{'batched (B=' + str(a.batch) + ', one graph)':<44}{batched:>10.2f}{batched / single:>8.2f}")
    print(f"{'one sample at a time':<44}{single:>10.2f}{1.0:>8.2f}")
    print(f"{'exact generator adaptation (lr_theta 6e-9)':<44}{adapt:>10.3f}{adapt / single:>8.3f}")


if __name__ == "__main__":
    main()
