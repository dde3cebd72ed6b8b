"""Learning curve of one configuration: image AUROC, pixel AUROC and AUPRO
against optimizer steps and wall time.

Train with a checkpoint every N epochs, then score every checkpoint:

    python bench/learning_curve.py --config configs/grdnet_magnetic_tile_tiled.yaml --run-dir R \
        --every 5 [--set train.time_budget_minutes=55 ...]

or score the ``checkpoints/step_*.keras`` of a run that was trained with
``train.checkpoint_every`` (also one still being resumed across sessions):

    python bench/learning_curve.py --run-dir R

A checkpoint scored before (its ``learning_curve/step_N/metrics.json`` newer
than the checkpoint, with the same ``--seeds`` and tiling) is read back, not
scored again, so a curve extended by a resumed training scores only its new
checkpoints; ``--rescore`` scores all (after changing other eval settings).
Writes ``R/learning_curve/curve.csv`` and ``curve.png`` (and a full evaluation
report per checkpoint in ``R/learning_curve/step_N/``); the final ``model.keras``
is the last point. Checkpoints are scored
after training, each with the run's calibration split (``--seeds``); nothing
here picks a checkpoint by its test numbers (the ``calibration_*`` columns are
the calibration part of the first seed: choose a step count on those). Wall time of a checkpoint is its
file's modification time minus that of the run's ``config.yaml`` (written when
training starts; for a resumed run it counts the pauses between sessions too,
so the CSV also gives the steps).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def earlier_summary(folder: Path, checkpoint: Path, seeds: list[int], cfg) -> dict | None:
    """The metrics.json of an earlier scoring of this checkpoint, if it was written
    after the checkpoint, with the same calibration seeds and the same tiling;
    else None (score it again)."""
    import dataclasses
    import json

    f = folder / "metrics.json"
    if not f.exists() or f.stat().st_mtime < checkpoint.stat().st_mtime:
        return None
    try:
        summary = json.loads(f.read_text())
    except (OSError, ValueError):
        return None
    tiling = dataclasses.asdict(cfg.data.tiling) if cfg.data.tiling.enabled else None
    if summary.get("seeds") != seeds or summary.get("tiling") != tiling:
        return None
    return summary


def score_checkpoints(run: Path, seeds: list[int], out: Path, rescore: bool = False) -> list[dict]:
    from tfanomaly.data.pipeline import Data
    from tfanomaly.evaluate import evaluate
    from tfanomaly.run import Run, load_model

    run = Run(run)
    cfg = run.config()
    data = None  # built at the first checkpoint that needs scoring
    t0 = run.config_file.stat().st_mtime
    rows = []
    points = run.step_checkpoints()
    if run.finished:  # the final model, where training stopped between two kept checkpoints
        final = run.summary()["global_step"]
        if final not in {s for s, _ in points}:
            points.append((final, run.model_file))
    for step, path in points:
        folder = out / f"step_{step:07d}"
        summary = None if rescore else earlier_summary(folder, path, seeds, cfg)
        if summary is None:
            data = data or Data(cfg)
            summary = evaluate(load_model(path), cfg, folder, seeds=seeds, data=data)
        wall = path.stat().st_mtime - t0  # negative: a run resumed by older code rewrote config.yaml's time
        row = {
            "step": step,
            "wall_minutes": round(wall / 60.0, 2) if wall >= 0 else float("nan"),
            "image_auroc": summary["image_auroc"]["mean"],
            "image_auroc_std": summary["image_auroc"]["std"],
            "pixel_auroc": summary.get("pixel_auroc", float("nan")),
            "aupro": summary.get("aupro", float("nan")),
            "accuracy_at_threshold": summary["accuracy_at_threshold"]["mean"],
            # the calibration part of the first seed: the only columns to choose a step count on
            "calibration_image_auroc": summary["selection"]["image_auroc"],
            "calibration_pixel_auroc": summary["selection"].get("pixel_auroc", float("nan")),
        }
        rows.append(row)
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    return rows


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, x, label in ((axes[0], "step", "optimizer steps"), (axes[1], "wall_minutes", "wall time (min)")):
        for key, name in (("image_auroc", "image AUROC"), ("pixel_auroc", "pixel AUROC"), ("aupro", "AUPRO@30%")):
            ax.plot([r[x] for r in rows], [r[key] for r in rows], "o-", label=name)
        # the calibration part: what a step count is chosen on
        ax.plot([r[x] for r in rows], [r["calibration_image_auroc"] for r in rows], "o--", color="C0", alpha=0.5, label="image AUROC, calibration part")
        ax.axhline(0.5, color="k", ls=":", lw=0.8)
        ax.set(xlabel=label, ylim=(0, 1))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test metric (solid: reported split)")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", type=Path, required=True)
    ap.add_argument("--config", help="train this config first (else: score an existing run)")
    ap.add_argument("--every", type=int, default=5, help="checkpoint every N epochs (with --config)")
    ap.add_argument("--set", action="append", default=[], help="config override key=value (with --config)")
    ap.add_argument("--resume", action="store_true", help="continue the run's training first (with --config)")
    ap.add_argument("--seeds", default="0", help="calibration seeds of each evaluation")
    ap.add_argument("--replot", action="store_true", help="redraw curve.png from the run's curve.csv (no scoring)")
    ap.add_argument("--rescore", action="store_true", help="score every checkpoint again (else one scored before, with the same seeds and tiling, is read back)")
    a = ap.parse_args()
    out = a.run_dir / "learning_curve"
    if a.replot:
        with open(out / "curve.csv", newline="") as f:
            rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]
        plot(rows, out / "curve.png", f"{a.run_dir}: learning curve")
        print(f"-> {out / 'curve.png'}")
        return
    if a.config:
        import tfanomaly

        cfg = tfanomaly.load_config(a.config, [*a.set, f"train.checkpoint_every={a.every}"])
        tfanomaly.train(cfg, a.run_dir, resume=a.resume)
    from tfanomaly.run import Run

    if not Run(a.run_dir).step_checkpoints():
        sys.exit(f"{a.run_dir}: no checkpoints/step_*.keras (train with train.checkpoint_every > 0)")
    out.mkdir(parents=True, exist_ok=True)
    rows = score_checkpoints(a.run_dir, [int(s) for s in a.seeds.split(",")], out, a.rescore)
    with open(out / ".curve.csv.tmp", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    os.replace(out / ".curve.csv.tmp", out / "curve.csv")
    plot(rows, out / "curve.png", f"{a.run_dir}: learning curve")
    print(f"-> {out / 'curve.csv'}, {out / 'curve.png'}")


if __name__ == "__main__":
    main()
