"""Trains one family's tiny configuration and prints its loss trajectories (one
optimizer step per epoch) as JSON; run by tests/test_distribute.py as a child
process (the CPU must be split before TensorFlow first uses it, one process holds
one strategy's collectives, and a multi-worker job is several processes).

    python tests/_distributed_run.py MODE FAMILY DATA_ROOT OUT_DIR [KEY=VALUE ...]

MODE ``mirrored``: the default strategy, then MirroredStrategy over two logical CPU
devices, in this process (``mirrored-only``: the latter only). ``single``: the default strategy only. ``worker``: one
worker of a MultiWorkerMirroredStrategy job (``TF_CONFIG`` set by the caller); the
chief prints its trajectory, the others print ``{}``. Extra ``resume`` among the
KEY=VALUEs continues the run in OUT_DIR/worker.
"""

from __future__ import annotations

import csv
import json
import sys

from tfanomaly import runtime

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


def overrides(family: str, root: str, dist: str = "default", *extra: str) -> list[str]:
    """The tiny configuration every mode trains (``--set`` items)."""
    return [
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
    ]


def trajectory(run) -> dict:
    from tfanomaly.run import Run

    rows = list(csv.DictReader(Run(run).history_file.open()))
    return {k: [float(r[k]) for r in rows] for k in rows[0] if k != "epoch" and not k.startswith("mon_")}


def main(mode: str, family: str, root: str, out: str, *extra: str) -> None:
    if mode.startswith("mirrored"):
        runtime.split_cpu(2)
    from tfanomaly.config import load_config
    from tfanomaly.train import train

    resume = "resume" in extra
    extra = tuple(e for e in extra if e != "resume")
    dists = {"mirrored": ("default", "mirrored"), "mirrored-only": ("mirrored",), "single": ("default",), "worker": ("multi_worker",)}[mode]
    result = {"replicas": len(runtime.local_devices())} if mode.startswith("mirrored") else {}  # (before a multi-worker strategy, any TF op is too early)
    for dist in dists:
        cfg = load_config(None, overrides(family, root, dist, *extra))
        run = train(cfg, f"{out}/{'worker' if mode == 'worker' else dist}", resume=resume, verbose=0, echo=lambda m: None)
        if runtime.worker_role(cfg)[0]:
            result[dist] = trajectory(run)
    print(json.dumps(result if any(k in result for k in ("default", "mirrored", "multi_worker")) else {}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
