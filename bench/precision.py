"""Train-step time in float32 against mixed_bfloat16, one shipped config per family, interleaved in one
process (the same weights, the same batch), with the machine's roofline measured in the same run
(a 4096 matmul in float32 and in bfloat16, and a 3x3 conv) and its CPU model and vector ISA.

    python bench/precision.py [--configs configs/vials_demo.yaml ...] [--reps 10]

bf16 pays where the CPU has bf16 arithmetic (AVX-512 BF16, AMX); an AVX2-only host converts in software.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).parent))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from _common import cpu_model, interleaved_ms  # noqa: E402
from train_grdnet import conv3x3_peak, matmul_peak  # noqa: E402

from tfanomaly.batch import ABNORMAL, make  # noqa: E402
from tfanomaly.config import load_config  # noqa: E402
from tfanomaly.models import registry  # noqa: E402

CONFIGS = [
    "configs/vials_demo.yaml",
    "configs/grdnet_magnetic_tile_tiled.yaml",
    "configs/ganomaly_magnetic_tile_tiled.yaml",
    "configs/ae_sdc_magnetic_tile_tiled.yaml",
    "configs/adgan_wgan_gp.yaml",
    "configs/cyclegan_64.yaml",
]


def build(path: str, policy: str):
    keras.mixed_precision.set_global_policy(policy)
    try:
        cfg = load_config(path, ["data.root=unused", f"train.mixed_precision={policy}"])
        keras.utils.set_random_seed(0)
        model = registry.build(cfg)
        model.compile_for_training(cfg.train, 1000, cfg.train.batch_size)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return cfg, model


def row(path: str, reps: int) -> dict:
    cfg, m32 = build(path, "float32")
    _, m16 = build(path, "mixed_bfloat16")
    m16.set_weights(m32.get_weights())
    b, (h, w), c = cfg.train.batch_size, cfg.data.image_size, cfg.data.channels
    x = tf.random.stateless_uniform([b, h, w, c], [1, 2])
    batch = make(x)
    if registry.model_class(cfg.family).trains_on_defects:
        batch[ABNORMAL] = tf.random.stateless_uniform([b, h, w, c], [3, 4])
    steps = {"float32": tf.function(m32.train_step), "mixed_bfloat16": tf.function(m16.train_step)}
    ms = interleaved_ms(steps, batch, reps)
    return {"config": f"{path} ({cfg.family}, batch {b}, {h}x{w}x{c})", **ms, "ratio": ms["float32"] / ms["mixed_bfloat16"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=CONFIGS)
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    print(f"CPU: {cpu_model()}; TensorFlow {tf.__version__}, Keras {keras.__version__}")
    print(f"roofline: matmul 4096 float32 {matmul_peak():.1f} GFLOP/s, bfloat16 {matmul_peak(dtype=tf.bfloat16):.1f} GFLOP/s; 3x3 conv (16x64x64x64, float32) {conv3x3_peak():.1f} GFLOP/s")
    print("\n| config | float32 ms/step | mixed_bfloat16 ms/step | float32 / bf16 |\n|---|---|---|---|")
    for path in args.configs:
        r = row(path, args.reps)
        print(f"| {r['config']} | {r['float32']:.1f} | {r['mixed_bfloat16']:.1f} | {r['ratio']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
