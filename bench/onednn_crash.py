"""Map where TF's oneDNN strided 1x1 weight-gradient kernel crashes.

Each case runs Conv2DBackpropFilter in its own process (a crash kills it) and
the table shows the exit code: 0 ok, -11 segfault, -6 abort (heap corruption).

    python bench/onednn_crash.py            # the default grid
    python bench/onednn_crash.py --isa AVX2 # the same grid with ONEDNN_MAX_CPU_ISA=AVX2
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
    args = ap.parse_args()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if args.isa:
        env["ONEDNN_MAX_CPU_ISA"] = args.isa
    print(f"ONEDNN_MAX_CPU_ISA={args.isa or '(default)'}")
    print(f"{'batch':>5} {'size':>5} {'in_ch':>5} {'out_ch':>6} {'kernel':>6} {'stride':>6}  result")
    for case in GRID:
        p = subprocess.run([sys.executable, "-c", CASE, *map(str, case)], env=env, capture_output=True, timeout=600)
        result = {0: "ok", -11: "SEGFAULT", -6: "ABORT (heap corruption)"}.get(p.returncode, f"exit {p.returncode}")
        print(f"{case[0]:>5} {case[1]:>5} {case[2]:>5} {case[3]:>6} {case[4]:>6} {case[5]:>6}  {result}", flush=True)


if __name__ == "__main__":
    main()
