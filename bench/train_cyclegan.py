"""CycleGAN-AD train-step and score speed at 64 and 256 px.

One train step updates G, F, D_Y and D_X on a batch of good and a batch of
defective images (six generator passes and four discriminator passes forward);
images/s counts the good images (one per pair). Score speed is G(x) plus the
SSE, or plus the per-image FID on InceptionV3 (weights none: the same cost).
Each case runs in its own process, so peak memory does not mix.

    python bench/train_cyclegan.py                 # the shipped 64 and 256 px configs + the Magnetic Tile config
    python bench/train_cyclegan.py --steps 5 --cases 64
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

CASES = {
    "64": ("configs/cyclegan_64.yaml", []),
    "256": ("configs/cyclegan_256.yaml", []),
    "mt64": ("configs/cyclegan_magnetic_tile.yaml", []),
}


def timed(fn, steps):
    fn()  # trace
    fn()  # warm
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t) / steps


def one(case: str, steps: int, score_batch: int) -> dict:
    import keras
    import tensorflow as tf

    from tfanomaly.config import load_config
    from tfanomaly.models import registry

    config, over = CASES[case]
    cfg = load_config(config, [*over, "model.fid_weights=none"], family="cyclegan")
    h, w = cfg.data.image_size
    c = cfg.data.channels
    bs = cfg.train.batch_size
    keras.utils.set_random_seed(0)
    m = registry.build(cfg)
    m.compile_for_training(cfg.train, 1000, bs)
    batch = {"image": tf.random.uniform([bs, h, w, c]), "abnormal": tf.random.uniform([bs, h, w, c])}
    step = tf.function(m.train_step)
    train_s = timed(lambda: step(batch)["g_loss"].numpy(), steps)
    x = tf.random.uniform([score_batch, h, w, c])
    sse = tf.function(m.score)
    score_s = timed(lambda: sse(x)["score"].numpy(), steps)
    fid_cfg = load_config(config, [*over, "model.score=fid", "model.fid_weights=none"], family="cyclegan")
    mf = registry.build(fid_cfg)
    mf.gen_g.set_weights(m.gen_g.get_weights())
    fid = tf.function(mf.score)
    fid_s = timed(lambda: fid(x)["score"].numpy(), max(1, steps // 2))
    gen = sum(int(v.numpy().size) for v in m.gen_g.trainable_variables)
    disc = sum(int(v.numpy().size) for v in m.disc_y.trainable_variables)
    return {
        "case": case,
        "config": config,
        "size": h,
        "channels": c,
        "batch": bs,
        "n_res": m.n_res,
        "gen_base": cfg.model.gen_base,
        "G_params_M": gen / 1e6,
        "D_params_M": disc / 1e6,
        "train_img_s": bs / train_s,
        "step_ms": 1000 * train_s,
        "score_sse_img_s": score_batch / score_s,
        "score_fid_img_s": score_batch / fid_s,
        "peak_mb": peak_rss_mb(),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--score-batch", type=int, default=8)
    ap.add_argument("--cases", default="64,256,mt64")
    ap.add_argument("--child", default="")
    a = ap.parse_args()
    if a.child:
        print(json.dumps(one(a.child, a.steps, a.score_batch)))
        return
    rows = []
    for case in a.cases.split(","):
        cmd = [sys.executable, __file__, "--steps", str(a.steps), "--score-batch", str(a.score_batch), "--child", case]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            sys.exit(f"{case}: failed\n{out.stderr[-2000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"CycleGAN-AD, {os.cpu_count()} CPU threads, {a.steps} timed steps after a trace and a warm-up step")
    print("| config | px | C | batch | res blocks | G params (M) | D params (M) | train step (ms) | train images/s | score SSE images/s | score FID images/s | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['config']} | {r['size']} | {r['channels']} | {r['batch']} | {r['n_res']} | {r['G_params_M']:.2f} | {r['D_params_M']:.2f} | "
            f"{r['step_ms']:.0f} | {r['train_img_s']:.2f} | {r['score_sse_img_s']:.1f} | {r['score_fid_img_s']:.1f} | {r['peak_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()
