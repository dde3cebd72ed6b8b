"""Trains one family's tiny configuration twice in this process, on the default
strategy and under MirroredStrategy over two logical CPU devices, and prints both
loss trajectories (one optimizer step per epoch) as JSON. Run by
tests/test_distribute.py in a subprocess: the CPU must be split before TensorFlow
first uses it, and one process can hold one mirrored strategy's collectives.

    python tests/_replicas.py FAMILY DATA_ROOT OUT_DIR [KEY=VALUE ...]
"""

from __future__ import annotations

import csv
import json
import sys

from tfanomaly import runtime

runtime.split_cpu(2)

from tfanomaly.config import load_config  # noqa: E402
from tfanomaly.run import Run  # noqa: E402
from tfanomaly.train import train  # noqa: E402

TINY = {
    "grdnet": [
        "model.variant=full",
        "model.widths=[8, 16]",
        "model.stem_width=8",
        "model.disc_widths=[8, 16]",
        "model.unet_widths=[8, 16]",
        "model.latent_dim=8",
        "perturb.max_scale=3",
        "model.ssim_window=7",
    ],
    "ganomaly": ["model.base_width=8", "model.latent_dim=16", "perturb.enabled=false"],
    "autoencoder": ["model.variant=sdc", "perturb.enabled=false", "corrupt.enabled=true", "model.sdc_width=8", "model.dilations=[1, 2, 4]", "model.ssim_window=7"],
    "adgan": ["model.objective=wgan_gp", "model.base_width=8", "model.latent_dim=8", "model.search_steps=5", "perturb.enabled=false"],
    "cyclegan": ["model.gen_base=8", "model.disc_base=8", "model.n_res=1", "model.disc_layers=2", "perturb.enabled=false", "data.split.mode=balanced"],
}


def main(family: str, root: str, out: str, *extra: str) -> None:
    result = {"replicas": len(runtime.local_devices())}
    for dist in ("default", "mirrored"):
        cfg = load_config(
            None,
            [
                f"family={family}",
                "data.source=folder",
                f"data.root={root}",
                "data.good_dirs=[good]",
                "data.defect_dirs=[bad]",
                "data.image_size=[32, 32]",
                "train.batch_size=4",
                "train.epochs=4",
                "train.steps_per_epoch=1",
                "train.validation_fraction=0",
                f"train.distribute={dist}",
                *TINY[family],
                *extra,
            ],
        )
        run = train(cfg, f"{out}/{dist}", verbose=0, echo=lambda m: None)
        rows = list(csv.DictReader(Run(run).history_file.open()))
        result[dist] = {k: [float(r[k]) for r in rows] for k in rows[0] if k != "epoch" and not k.startswith("mon_")}
    print(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:])
