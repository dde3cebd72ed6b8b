"""Line-scale input: stream >= 1,000,000 distinct small patches from TFRecord shards through the
training input pipeline (shuffle, augmentation, Perlin perturbation, batching) and show that memory
stays flat: peak RSS at 10% and at 100% of the stream, with the patches/s sustained.

    python bench/stream.py --pack /tmp/pack_1m [--patches 1000000] [--config configs/vials_demo.yaml] [--workers 2]

The pack is written first when PACK has no index.json: N distinct 64x64 gray patches (a smooth field
shifted per patch plus noise: like a line's patches, they compress to about 2-3 kB as PNG), in the
format of `tfanomaly data pack`, with --workers setting the shard count (a multiple of it). Then one
input pipeline (``Data.train_dataset``, shard 0 of 1) reads them all once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from _common import cpu_model, peak_rss_mb, status_mb  # noqa: E402

from tfanomaly.config import load_config  # noqa: E402
from tfanomaly.data.pipeline import ID_KEYS, Data, serialize_patch, shard_bounds, write_shards  # noqa: E402
from tfanomaly.files import atomic_write_text  # noqa: E402


def write_pack(out: Path, n: int, size: int, workers: int, shard_size: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0 : size * 2, 0 : size * 2]
    field = (120 + 50 * np.sin(yy / 9.0) * np.cos(xx / 13.0)).astype(np.float32)
    blank = cv2.imencode(".png", np.zeros((size, size), np.uint8))[1].tobytes()
    ids = dict.fromkeys(ID_KEYS[1:], 0)  # run, frame, rank, vial, region

    def records():
        for i in range(n):
            dy, dx = rng.integers(0, size, 2)
            img = field[dy : dy + size, dx : dx + size] + rng.normal(0, 4, (size, size))
            png = cv2.imencode(".png", np.clip(img, 0, 255).astype(np.uint8))[1].tobytes()
            yield serialize_patch({"image": png, "mask": blank, "label": 0, "product": f"S{i // 1200:06d}".encode(), **ids})

    _, shards = write_shards(out, "train", records(), shard_bounds(n, shard_size, workers))
    index = {"image_size": [size, size], "channels": 1, "source": "synthetic", "workers": workers, "subsets": {"train": {"patches": n, "shards": shards}}}
    atomic_write_text(out / "index.json", json.dumps(index, indent=2))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pack", required=True)
    ap.add_argument("--patches", type=int, default=1_000_000)
    ap.add_argument("--config", default="configs/vials_demo.yaml")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shard-size", type=int, default=4096)
    args = ap.parse_args()
    pack = Path(args.pack)
    cfg = load_config(args.config, [f"data.tfrecords={pack}", "data.root=unused"])
    size = cfg.data.image_size[0]
    if not (pack / "index.json").exists():
        t = time.perf_counter()
        write_pack(pack, args.patches, size, args.workers, args.shard_size)
        print(f"wrote {args.patches} patches in {time.perf_counter() - t:.0f} s -> {pack}")
    n = json.loads((pack / "index.json").read_text())["subsets"]["train"]["patches"]
    disk = sum(p.stat().st_size for p in pack.glob("train-*.tfrecord")) / 2**20
    batch = cfg.train.batch_size
    steps = -(-n // batch)
    print(f"CPU: {cpu_model()}")
    print(f"{args.config}: {n} patches ({disk:.0f} MB in {len(list(pack.glob('train-*.tfrecord')))} shards), batch {batch}, shuffle buffer {cfg.data.shuffle_buffer}, {steps} batches\n")
    ds = Data(cfg).train_dataset(batch)
    marks = {max(1, steps // 10): "10%", max(1, steps // 2): "50%", steps: "100%"}
    rows = []
    t0 = time.perf_counter()
    for i, b in enumerate(ds.take(steps), start=1):
        if i == 1:
            start_rss = status_mb("VmRSS")
        if i in marks:
            rows.append((marks[i], i * batch, status_mb("VmRSS"), peak_rss_mb(), i * batch / (time.perf_counter() - t0)))
    print("| point of the stream | patches | RSS MB | peak RSS MB | patches/s so far |\n|---|---|---|---|---|")
    print(f"| first batch | {batch} | {start_rss:.0f} | | |")
    for mark, p, rss, peak, rate in rows:
        print(f"| {mark} | {p:,} | {rss:.0f} | {peak:.0f} | {rate:.0f} |")
    ten, full = rows[0][3], rows[-1][3]
    print(f"\npeak RSS at 100% / at 10%: {full / ten:.3f}")


if __name__ == "__main__":
    main()
