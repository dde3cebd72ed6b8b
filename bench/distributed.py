"""Multi-worker training on one host: one process against a MultiWorkerMirroredStrategy job of N
worker processes on loopback (TF_CONFIG with free 127.0.0.1 ports), the same config and global batch,
timed by the run's own train_summary.json (seconds of fit, images/s). Every process it starts is
stopped when it ends, fails or is interrupted.

    python bench/distributed.py --config configs/vials_demo.yaml --data demo_data [--workers 2] [--steps 50] \\
        [--pack PACK_DIR]      # read a pack written by `tfanomaly data pack --workers N`, sharded by file

On a host with 2 cores, two workers share the cores one process already uses: this measures the cost
of the collectives and of the split, not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tfanomaly.runtime import loopback_tf_configs

ROOT = Path(__file__).resolve().parent.parent


def run_job(args, run_dir: Path, workers: int) -> dict:
    sets = [f"data.root={args.data}", "train.epochs=1", f"train.steps_per_epoch={args.steps}", "train.validation_fraction=0"]
    if args.pack:
        sets.append(f"data.tfrecords={args.pack}")
    if workers > 1:
        sets.append("train.distribute=multi_worker")
    cmd = [sys.executable, "-m", "tfanomaly.cli.app", "train", args.family, "--config", args.config, "--run-dir", str(run_dir)]
    for s in sets:
        cmd += ["--set", s]
    confs = loopback_tf_configs(workers) if workers > 1 else [None]
    procs = []
    try:
        for conf in confs:
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **({"TF_CONFIG": conf} if conf else {}))
            procs.append(subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        deadline = time.monotonic() + args.timeout
        for p in procs:
            _, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            if p.returncode != 0:
                raise SystemExit(f"a worker failed (exit {p.returncode}):\n{err[-2000:]}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return json.loads((run_dir / "train_summary.json").read_text())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/vials_demo.yaml")
    ap.add_argument("--family", default="")
    ap.add_argument("--data", default="demo_data")
    ap.add_argument("--pack", default="")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--timeout", type=float, default=1800)
    args = ap.parse_args()
    if not args.family:
        import yaml

        args.family = yaml.safe_load(Path(args.config).read_text())["family"]
    sys.path.insert(0, str(Path(__file__).parent))
    from _common import cpu_model

    print(f"CPU: {cpu_model()}")
    print(f"{args.config}, {args.steps} steps, data {args.pack or args.data}{' (pack, sharded by file)' if args.pack else ''}\n")
    print("| job | seconds | images/s | ratio to one process |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        one = run_job(args, Path(tmp) / "one", 1)
        print(f"| one process | {one['seconds']:.1f} | {one['images_per_second']:.1f} | 1.00 |", flush=True)
        many = run_job(args, Path(tmp) / "many", args.workers)
        ratio = one["seconds"] / many["seconds"]
        print(f"| {args.workers} workers on loopback | {many['seconds']:.1f} | {many['images_per_second']:.1f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
