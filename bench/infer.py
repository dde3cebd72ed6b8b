"""Line inference: Python SavedModel signature vs the C++ binary, same model, same run.

    python bench/infer.py --configs configs/vials_demo.yaml configs/vials.yaml --reps 5 [--patches 60 20]

For each config a model (random weights: latency does not depend on them) is
saved, exported, and fed strips of random PNG patches through serve_png, in a
fresh Python process and in tfanomaly-infer (built into a temp dir unless
--binary is given). Each side reports model load time, time to the first
result, per-strip latency (median of --reps strips) and peak RSS. Strips of
--patches patches (60 on the line); a config whose strip would take minutes
can be run with fewer patches (the table says how many).
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

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

PY_SIDE = r"""
import json, os, sys, time
t0 = time.perf_counter()
import tensorflow as tf
model_dir, files, reps = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])
t1 = time.perf_counter()
m = tf.saved_model.load(model_dir)
fn = m.signatures["serve_png"]
t2 = time.perf_counter()
pngs = tf.constant([open(f, "rb").read() for f in files])
fn(png=pngs)["score"].numpy()
t3 = time.perf_counter()
times = []
for _ in range(reps):
    a = time.perf_counter(); fn(png=pngs)["score"].numpy(); times.append(time.perf_counter() - a)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_s": t3 - t0, "strip_ms": sorted(times)[len(times) // 2] * 1e3,
                  "rss_mb": int(hwm) / 1024}))
"""


def run_measured(cmd):
    """Run cmd; return (stdout, wall seconds, peak RSS in MB).

    Peak RSS is the child's VmHWM, polled from /proc: getrusage/wait4 would
    report at least this (large) parent's RSS, which a forked child inherits."""
    import threading

    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]

    def poll():
        while p.poll() is None:
            try:
                for line in open(f"/proc/{p.pid}/status"):
                    if line.startswith("VmHWM"):
                        peak[0] = max(peak[0], int(line.split()[1]))
            except OSError:
                pass
            time.sleep(0.02)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    out, err = p.communicate()
    th.join()
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {err[-2000:]}")
    return out, wall, peak[0] / 1024


def build_binary(build: Path) -> Path:
    subprocess.run(["cmake", "-S", str(ROOT / "cpp_inference"), "-B", str(build)], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "-j2"], check=True, capture_output=True)
    return build / "tfanomaly-infer"


def export_random(config: str, tmp: Path) -> tuple[Path, tuple]:
    import keras

    from tfanomaly.config import load_config
    from tfanomaly.export import export
    from tfanomaly.models import registry
    from tfanomaly.run import Run

    cfg = load_config(config, ["data.root=unused"])
    keras.utils.set_random_seed(0)
    run = Run.write(tmp / "run", registry.build(cfg), cfg)
    out = export(run.path, tmp / "sm")
    return out, (cfg.data.image_size[0], cfg.data.image_size[1], cfg.data.channels)


def measure(binary, model, work: Path, shape, config: str, n: int, reps: int) -> list[tuple]:
    """One strip size: the Python serve_png side and the C++ binary, same patches."""
    h, w, c = shape
    g = np.random.default_rng(0)
    files = []
    for j in range(n):
        f = work / f"p{n}_{j}.png"
        cv2.imwrite(str(f), g.integers(0, 256, (h, w, c) if c > 1 else (h, w), dtype=np.uint8))
        files.append(str(f))
    out, wall, rss = run_measured([sys.executable, "-c", PY_SIDE, str(model), ",".join(files), str(reps)])
    py = json.loads(out)
    cpp_files = files * (reps + 1)  # first strip warms up, like the Python side
    out, cwall, crss = run_measured([str(binary), str(model), *cpp_files, "--batch", str(n), "--json"])
    cj = json.loads(out)
    strips = sorted(s["ms"] for s in cj["strips"][1:])
    first_ms = cj["load_ms"] + cj["strips"][0]["ms"]
    return [
        (config, n, "python serve_png", py["strip_ms"], n / py["strip_ms"] * 1e3, py["load_s"] * 1e3, py["first_s"] * 1e3, py["rss_mb"]),
        (config, n, "C++ tfanomaly-infer", strips[len(strips) // 2], n / strips[len(strips) // 2] * 1e3, cj["load_ms"], first_ms, crss),
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="*", default=["configs/vials_demo.yaml", "configs/vials.yaml"])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--patches", type=int, nargs="+", default=[60], help="patches per strip (several: one row each)")
    ap.add_argument("--big-patches", type=int, default=4, help="patches per strip for configs with >= 512-wide stages")
    ap.add_argument("--binary", type=Path, default=None)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from train_grdnet import conv3x3_peak, matmul_peak

    print(f"roofline in this run: matmul {matmul_peak():.1f} GFLOP/s, 3x3 conv {conv3x3_peak():.1f} GFLOP/s", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        binary = args.binary or build_binary(tmp / "build")
        for i, config in enumerate(args.configs):
            work = tmp / f"c{i}"
            model, (h, w, c) = export_random(config, work)
            big = "vials.yaml" in config and not config.endswith("demo.yaml")
            for n in [args.big_patches] if big else args.patches:
                rows += measure(binary, model, work, (h, w, c), config, n, 1 if big else args.reps)
    print(f"{'config':<26}{'patches':>8}  {'runner':<21}{'strip ms':>10}{'patches/s':>11}{'load ms':>9}{'first result ms':>16}{'peak RSS MB':>12}{'60-patch strip vs 500 ms':>26}")
    for cfg, n, who, ms, ps, load, first, rss in rows:
        strip60 = ms * 60 / n
        print(f"{cfg:<26}{n:>8}  {who:<21}{ms:>10.1f}{ps:>11.1f}{load:>9.0f}{first:>16.0f}{rss:>12.0f}{strip60:>16.0f} ms ({strip60 / 500:.2f}x)")


if __name__ == "__main__":
    main()
