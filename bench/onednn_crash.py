"""Map where TF 2.21's oneDNN kernels crash or compute wrong values on this CPU.

Default: the strided 1x1 weight gradient (Conv2DBackpropFilter). ``--matmul``: a
batched matmul whose 2-D operand is broadcast over the batch
(``tf.matmul([B, C, H, W], [W', W], transpose_b=True)``, what tfanomaly's
gaussian blur used to do), against numpy, next to the forms that replace it.
Each case runs in its own process (a crash kills it) and the table shows the
result: ok, WRONG (max abs error against numpy), SEGFAULT (-11) or ABORT (-6).

    python bench/onednn_crash.py            # the conv grid
    python bench/onednn_crash.py --isa AVX2 # the same grid with ONEDNN_MAX_CPU_ISA=AVX2
    python bench/onednn_crash.py --matmul   # the broadcast batched matmul grid
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

CASE = r"""
import sys, tensorflow as tf
mb, h, ic, oc, k, s = map(int, sys.argv[1:7])
x = tf.random.uniform([mb, h, h, ic]); w = tf.zeros([k, k, ic, oc])
dy = tf.random.uniform([mb, (h + s - 1) // s, (h + s - 1) // s, oc])
r = tf.function(lambda: tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=tf.shape(w), out_backprop=dy,
                strides=[1, s, s, 1], padding="SAME"))()
print(float(tf.reduce_sum(r)))
"""

MATMUL_CASE = r"""
import sys, numpy as np, tensorflow as tf
kind = sys.argv[1]; b, c, h, w, wo = map(int, sys.argv[2:7])
rng = np.random.default_rng(0)
xn = rng.uniform(size=(b, c, h, w)).astype(np.float32); mn = rng.uniform(size=(wo, w)).astype(np.float32)
x, m = tf.constant(xn), tf.constant(mn)
forms = {
    "broadcast right": lambda: tf.matmul(x, m, transpose_b=True),
    "broadcast left": lambda: tf.transpose(tf.matmul(m, tf.transpose(x, [0, 1, 3, 2])), [0, 1, 3, 2]),
    "flat 2-D": lambda: tf.reshape(tf.matmul(tf.reshape(x, [-1, w]), m, transpose_b=True), [b, c, h, wo]),
}
err = np.abs(tf.function(forms[kind])().numpy() - np.einsum("bchw,ow->bcho", xn, mn)).max()
print("ok" if err < 1e-3 else f"WRONG (max error {err:.3g})")
"""

MATMUL_GRID = [  # batch, channels, height, width, output width
    (1, 1, 64, 64, 54),
    (2, 1, 64, 64, 54),
    (16, 1, 64, 64, 54),
    (16, 1, 64, 64, 64),
    (16, 1, 54, 64, 54),
    (4, 1, 8, 8, 4),
    (16, 3, 64, 64, 64),
    (16, 1, 128, 128, 118),
]

GRID = [
    # batch, size, in_ch, out_ch, kernel, stride
    (8, 256, 8, 8, 1, 2),
    (1, 64, 8, 8, 1, 2),
    (1, 32, 8, 8, 1, 2),
    (1, 64, 1, 8, 1, 2),
    (1, 64, 4, 4, 1, 2),
    (1, 64, 8, 16, 1, 2),
    (1, 64, 8, 1, 1, 2),
    (1, 64, 16, 8, 1, 2),
    (1, 64, 16, 16, 1, 2),
    (1, 64, 24, 24, 1, 2),
    (1, 64, 8, 8, 3, 2),
    (1, 64, 8, 8, 2, 2),
    (1, 64, 8, 8, 1, 1),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--isa", default="", help="value for ONEDNN_MAX_CPU_ISA (empty = default, AVX-512 here)")
    ap.add_argument("--matmul", action="store_true", help="map the broadcast batched matmul instead of the conv")
    args = ap.parse_args()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if args.isa:
        env["ONEDNN_MAX_CPU_ISA"] = args.isa
    print(f"ONEDNN_MAX_CPU_ISA={args.isa or '(default)'}")
    if args.matmul:
        print(f"{'form':16} {'batch':>5} {'ch':>3} {'h':>4} {'w':>4} {'w_out':>5}  result")
        for kind in ("broadcast right", "broadcast left", "flat 2-D"):
            for case in MATMUL_GRID:
                p = subprocess.run([sys.executable, "-c", MATMUL_CASE, kind, *map(str, case)], env=env, capture_output=True, text=True, timeout=600)
                result = p.stdout.strip() if p.returncode == 0 else {-11: "SEGFAULT", -6: "ABORT (heap corruption)"}.get(p.returncode, f"exit {p.returncode}")
                print(f"{kind:16} {case[0]:>5} {case[1]:>3} {case[2]:>4} {case[3]:>4} {case[4]:>5}  {result}", flush=True)
        return
    print(f"{'batch':>5} {'size':>5} {'in_ch':>5} {'out_ch':>6} {'kernel':>6} {'stride':>6}  result")
    for case in GRID:
        p = subprocess.run([sys.executable, "-c", CASE, *map(str, case)], env=env, capture_output=True, timeout=600)
        result = {0: "ok", -11: "SEGFAULT", -6: "ABORT (heap corruption)"}.get(p.returncode, f"exit {p.returncode}")
        print(f"{case[0]:>5} {case[1]:>5} {case[2]:>5} {case[3]:>6} {case[4]:>6} {case[5]:>6}  {result}", flush=True)


if __name__ == "__main__":
    main()
