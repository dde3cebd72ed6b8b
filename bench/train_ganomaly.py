"""GANomaly train-step time for the baseline (pixel L1), perceptual relu3_3
and ResNet50 encoders at batch 16, measured in one run, as ratios to the
baseline (the CargoX study's A40 ratios: relu3_3 1.10, ResNet50 1.25), with
trainable parameter counts and the peak memory of each configuration (each
one runs in its own process, so peaks do not mix).

    python bench/train_ganomaly.py                                  # 256 px, latent 512 (the study's shape)
    python bench/train_ganomaly.py --config configs/ganomaly_magnetic_tile.yaml --steps 10
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from _common import peak_rss_mb  # noqa: E402  (bench/ is on sys.path when run as a script)

VARIANTS = {
    "baseline": ["model.encoder=dcgan", "model.recon_loss=l1"],
    "relu3_3": ["model.encoder=dcgan", "model.recon_loss=perceptual", "model.perceptual_taps=[relu3_3]"],
    "resnet50": ["model.encoder=resnet50", "model.recon_loss=l1"],
    "resnet50+relu3_3": ["model.encoder=resnet50", "model.recon_loss=perceptual", "model.perceptual_taps=[relu3_3]"],
}


def one(config: str, variant: str, batch: int, steps: int, overrides: list[str]) -> dict:
    import keras
    import tensorflow as tf

    from tfanomaly.config import load_config
    from tfanomaly.models import registry

    over = [*overrides, *VARIANTS[variant], "model.vgg_weights=none", "model.resnet_weights=none", f"train.batch_size={batch}"]
    cfg = load_config(config, over, family="ganomaly")
    h, w = cfg.data.image_size
    keras.utils.set_random_seed(0)
    m = registry.build(cfg)
    m.compile_for_training(cfg.train, 1000, batch)
    trainable = sum(int(v.numpy().size) for v in m.generator_variables + m.discriminator.trainable_variables)
    x = tf.random.uniform([batch, h, w, cfg.data.channels])
    step = tf.function(m.train_step)
    t = time.perf_counter()
    step({"image": x})["g_loss"].numpy()
    trace_s = time.perf_counter() - t
    step({"image": x})["g_loss"].numpy()
    t = time.perf_counter()
    for _ in range(steps):
        step({"image": x})["g_loss"].numpy()
    s = (time.perf_counter() - t) / steps
    return {"variant": variant, "size": h, "trainable_M": trainable / 1e6, "step_ms": 1000 * s, "img_s": batch / s, "trace_s": trace_s, "peak_mb": peak_rss_mb()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/cargox_baseline.yaml")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--variants", default="baseline,relu3_3,resnet50")
    ap.add_argument("--set", action="append", default=[], help="extra config overrides")
    ap.add_argument("--child", default="")
    a = ap.parse_args()
    if a.child:
        print(json.dumps(one(a.config, a.child, a.batch, a.steps, a.set)))
        return
    rows = []
    for v in a.variants.split(","):
        cmd = [sys.executable, __file__, "--config", a.config, "--batch", str(a.batch), "--steps", str(a.steps), "--child", v]
        for s in a.set:
            cmd += ["--set", s]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        rows.append(json.loads(out))
    base = rows[0]["step_ms"]
    print(f"config {a.config}, batch {a.batch}, {a.steps} timed steps after 2 warm-up steps, weights none")
    print(f"{'variant':<18}{'px':>5}{'trainable M':>13}{'step ms':>10}{'img/s':>8}{'ratio':>7}{'trace s':>9}{'peak MB':>9}")
    for r in rows:
        print(f"{r['variant']:<18}{r['size']:>5}{r['trainable_M']:>13.1f}{r['step_ms']:>10.0f}{r['img_s']:>8.1f}{r['step_ms'] / base:>7.2f}{r['trace_s']:>9.1f}{r['peak_mb']:>9.0f}")


if __name__ == "__main__":
    main()
