"""How a small model's train step uses 2 CPU cores: TensorFlow's thread pools vs
one process per core.

Each setting runs in a fresh child process (thread pools are fixed when
TensorFlow starts): the demo's train step on a random batch, median of --reps
steps after two warm-up steps. "2 processes" runs two children at once, each
pinned to one core, and reports their combined patches/s: the throughput two
trainings (two seeds, two products) get from one machine.

    python bench/threads.py                                     # configs/vials_demo.yaml
    python bench/threads.py --config configs/grdnet_magnetic_tile_tiled.yaml --reps 10
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

SETTINGS = [  # (name, intra-op threads, inter-op threads, cores the process may use)
    ("TF default (2 cores)", 0, 0, None),
    ("intra 2, inter 1", 2, 1, None),
    ("intra 1, inter 2", 1, 2, None),
    ("intra 1, inter 1, 1 core", 1, 1, [0]),
    ("MirroredStrategy over 2 logical CPUs (half the batch each), intra 1, inter 2", 1, 2, "mirrored"),
]


def child(config: str, reps: int, intra: int, inter: int, cores) -> None:
    mirrored = cores == "mirrored"
    if isinstance(cores, list):
        os.sched_setaffinity(0, cores)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)
    from tfanomaly import runtime
    from tfanomaly.batch import make
    from tfanomaly.config import load_config
    from tfanomaly.models import registry

    if mirrored:
        runtime.split_cpu(2)
    cfg = load_config(config, ["data.root=unused"] + (["train.distribute=mirrored"] if mirrored else []))
    b, (h, w), c = cfg.train.batch_size, cfg.data.image_size, cfg.data.channels
    keras.utils.set_random_seed(0)
    batch = make(tf.random.uniform([b, h, w, c]))
    strategy = runtime.strategy_for(cfg)
    with strategy.scope():
        m = registry.build(cfg)
        m.compile_for_training(cfg.train, 1000, b)
    if mirrored:  # as keras' fit runs it: the global batch split over the replicas, one step each
        it = iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(batch).repeat()))
        run = tf.function(lambda: strategy.run(m.train_step, args=(next(it),)))

        def step(_):
            return {k: strategy.experimental_local_results(v)[0] for k, v in run().items()}
    else:
        step = tf.function(m.train_step)
    for _ in range(2):
        [v.numpy() for v in step(batch).values()]
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        [v.numpy() for v in step(batch).values()]
        times.append(time.perf_counter() - t)
    print(json.dumps({"ms": float(np.median(times) * 1e3), "batch": b}), flush=True)


def spawn(config: str, reps: int, intra: int, inter: int, cores) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--child", json.dumps([intra, inter, cores]), "--config", config, "--reps", str(reps)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def collect(procs: list[subprocess.Popen], timeout: float) -> list[dict]:
    out = []
    try:
        for p in procs:
            stdout, _ = p.communicate(timeout=timeout)
            if p.returncode != 0:
                raise SystemExit(f"a timing child failed (exit {p.returncode})")
            out.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for p in procs:  # a failed or timed-out sibling must not outlive the benchmark
            if p.poll() is None:
                p.kill()
                p.wait()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/vials_demo.yaml")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds a timing child may take")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        intra, inter, cores = json.loads(args.child)
        child(args.config, args.reps, intra, inter, cores)
        return

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _common import cpu_model
    from train_grdnet import conv3x3_peak, matmul_peak

    print(f"machine: {cpu_model()}")
    print(f"roofline in this run: matmul {matmul_peak():.1f} GFLOP/s (fp32 4096^2), 3x3 conv {conv3x3_peak():.1f} GFLOP/s (16x64x64x64)")
    print(f"config: {args.config}, median of {args.reps} train steps per process\n")
    print("| setting | ms per step | patches/s (all processes) | ratio to TF default |\n|---|---|---|---|")
    base = None
    plans = [(name, [(i, j, cores)]) for name, i, j, cores in SETTINGS]
    plans.append(("2 processes, 1 core each (intra 1, inter 1)", [(1, 1, [0]), (1, 1, [1])]))
    for name, children in plans:  # one setting at a time; the children of one setting at once
        res = collect([spawn(args.config, args.reps, *c) for c in children], args.timeout)
        rate = sum(r["batch"] / r["ms"] * 1e3 for r in res)
        base = base or rate
        ms = " / ".join(f"{r['ms']:.0f}" for r in res)
        print(f"| {name} | {ms} | {rate:.1f} | {rate / base:.2f} |", flush=True)


if __name__ == "__main__":
    main()
