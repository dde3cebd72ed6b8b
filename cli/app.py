"""The ``tfanomaly`` command line: a thin layer over the Python API.

Installed as ``tfanomaly.cli`` (from the top-level ``cli/`` folder). User
mistakes raise :class:`tfanomaly.errors.UserError`: ``main`` prints that one
line and exits with code 2, without a traceback. TensorFlow is imported only
inside the commands that need it, so ``--help`` is instant.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

# Before anything imports TensorFlow: its C++ log lines, errors included, are not for the user of a command
# (e.g. "oneDNN supports DT_UINT8 only on platforms with AVX-512" while scoring, on an AVX-512 host); a
# failure still raises in Python and is reported as such. TF_CPP_MIN_LOG_LEVEL set by the user wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tfanomaly.errors import UserError  # noqa: E402
from tfanomaly.models import registry  # noqa: E402

app = typer.Typer(
    help="Reconstruction- and GAN-based visual anomaly detection: train, evaluate, export.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Make, pack and inspect datasets.", no_args_is_help=True)
synth_app = typer.Typer(help="Generate synthetic demo datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
data_app.add_typer(synth_app, name="synth")

CONFIG = typer.Option(..., "--config", "-c", help="YAML config file (see configs/).")
SET = typer.Option(None, "--set", "-s", help="Override a config value: key.path=value (repeatable).")


def _load(config: Path, overrides, family: str | None = None):
    from tfanomaly.config import load_config

    return load_config(config, overrides or [], family)


def _echo(msg: str) -> None:
    typer.echo(msg, err=True)


def _seeds(text: str | None, option: str):
    if not text:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{option}: expected comma-separated integers, got {text!r}") from None


@app.command()
def train(
    family: str = typer.Argument(..., help="Model family: " + ", ".join(registry.names()) + "."),
    config: Path = CONFIG,
    set_: Optional[List[str]] = SET,
    resume: bool = typer.Option(False, "--resume", help="Continue the run in the run directory where it stopped."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Run directory (default: train.out_dir/<config name>)."),
    split_seeds: Optional[str] = typer.Option(
        None,
        "--split-seeds",
        help="Repeated data splits: one run per seed (sets seed and data.split.seed) in RUN_DIR/split_<seed>; "
        "finished splits are skipped, unfinished ones resumed. Evaluate them all with `tfanomaly eval --model RUN_DIR`.",
    ),
):
    """Train a model family on the data of a config; writes a run directory."""
    from tfanomaly.models import registry

    if family not in registry.names():
        raise UserError(f"train: unknown family {family!r}; expected one of {', '.join(registry.names())}")
    cfg = _load(config, set_, family)
    from tfanomaly import runtime
    from tfanomaly.run import Run
    from tfanomaly.train import train as run_train
    from tfanomaly.train import train_splits

    def report(path):
        if not runtime.worker_role(cfg)[0]:
            return  # a multi-worker job's other workers stay quiet: the chief writes (and may still be writing) the run
        run = Run(path)
        summary = run.summary()
        _echo(f"trained {family}: {summary['global_step']} steps, {summary['images_per_second']} images/s -> {run.model_file}")

    seeds = _seeds(split_seeds, "--split-seeds")
    if not seeds:
        report(run_train(cfg, run_dir, resume, echo=_echo))
        return
    for path in train_splits(cfg, seeds, run_dir, resume, echo=_echo):
        report(path)


@app.command("eval")
def eval_(
    model: Path = typer.Option(..., "--model", "-m", help="Run directory of a trained model."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Config (default: the run's config.yaml)."),
    calibrate: Optional[str] = typer.Option(None, "--calibrate", help="Threshold rule: youden, max_accuracy, zero_fn, n_sigma, percentile, iqr."),
    seeds: Optional[str] = typer.Option(
        None,
        "--seeds",
        help="Comma-separated seeds of repeated calibration/report splits, e.g. 0,1,2. For a folder of split_<seed> runs "
        "(train --split-seeds): the splits to evaluate (default all), each calibrated with its own seed.",
    ),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Eval directory (default: RUN/eval)."),
    force: bool = typer.Option(False, "--force", help="Allow calibrating on the reported split (eval.calibration_fraction: 0)."),
    shift: bool = typer.Option(False, "--shift", help="Also evaluate under the test-time domain shift of eval.shift (report in OUT/shift)."),
    data: Optional[Path] = typer.Option(
        None,
        "--data",
        help="Evaluate on this dataset folder instead of the run's data.root, e.g. a test kit (`tfanomaly data synth kit`); same as --set data.root=DIR.",
    ),
    set_: Optional[List[str]] = SET,
):
    """Score the test set, calibrate thresholds, write metrics, tables, plots and an HTML report.

    MODEL may also be a folder of split_<seed> runs (train --split-seeds): each is
    evaluated on its own test split and the table gives the mean and std over splits."""
    from tfanomaly.config import load_config
    from tfanomaly.run import Run, split_runs

    run = Run(model)
    seed_list = _seeds(seeds, "--seeds")
    if not run.model_file.exists() and not config:
        from tfanomaly.evaluate import evaluate_splits, splits_table

        if split_runs(model):
            if set_ or shift:
                raise UserError("--set and --shift apply to one run; evaluate a split_<seed> run on its own for them")
            summary = evaluate_splits(model, calibrate, seed_list, force, out)
            typer.echo(splits_table(summary))
            _echo(f"per-split reports -> {model}/split_*/eval/; table -> {out or run.eval_dir}/splits.md")
            return
    cfg = load_config(config or run.config_file, [*(set_ or []), *([f"data.root={data}"] if data else [])])
    from tfanomaly.evaluate import evaluate
    from tfanomaly.report import console_summary

    out_dir = out or run.eval_dir
    summary = evaluate(run.load_model(), cfg, out_dir, calibrate, seed_list, force, shift=shift)
    typer.echo(console_summary(summary))
    _echo(f"report -> {out_dir}/report.html")


@app.command()
def export(
    model: Path = typer.Option(..., "--model", "-m", help="Run directory of a trained model."),
    out: Path = typer.Option(..., "--out", "-o", help="SavedModel directory to write, e.g. saved_models/vials."),
    thresholds: Optional[Path] = typer.Option(None, "--thresholds", help="thresholds.json (default: RUN/eval/thresholds.json if present)."),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty --out (atomically; the old model stays until the new one is complete)."),
):
    """Export a SavedModel (serving_default + serve_png) with tfanomaly.json, atomically."""
    from tfanomaly.export import export as run_export

    path = run_export(model, out, thresholds, force=force)
    _echo(f"exported -> {path}")


@app.command()
def predict(
    images: List[Path] = typer.Argument(..., help="Image files (strip images for a vial-line model)."),
    model: Path = typer.Option(..., "--model", "-m", help="Run directory of a trained model."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write results to .json or .csv."),
    heatmaps: Optional[Path] = typer.Option(None, "--heatmaps", help="Folder for heatmap PNGs."),
    region: Optional[int] = typer.Option(None, "--region", help="Region id of whole-image inputs (per-region thresholds)."),
):
    """Scores, decisions and heatmaps for new images."""
    from tfanomaly.predict import predict as run_predict

    rows = run_predict(model, images, out, heatmaps, region)
    if not out:
        typer.echo(json.dumps(rows, indent=2))
    else:
        flagged = sum(1 for r in rows if r.get("is_anomalous"))
        _echo(f"{len(rows)} patches scored, {flagged} flagged -> {out}")


def _synthesize(make, what: str, out, good, defective, runs, frames, seed) -> dict:
    """Run a vial-strip generator with a progress bar (on a terminal)."""
    from rich.progress import Progress

    with Progress(transient=True, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task(f"synthesizing {what}", total=(good + defective) * runs * frames)
        return make(out, good, defective, runs, frames, seed, progress=lambda d, t: bar.update(task, completed=d))


RUNS = typer.Option(10, min=1, help="Acquisition runs per product.")
FRAMES = typer.Option(16, min=1, help="Frames per acquisition.")


@synth_app.command("vials")
def synth_vials(
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    good: int = typer.Option(10, min=1, help="Good products."),
    defective: int = typer.Option(12, min=0, help="Defective products (defect types cycle)."),
    runs: int = RUNS,
    frames: int = FRAMES,
    seed: int = typer.Option(0, help="Random seed (output is deterministic for a seed)."),
):
    """Synthetic Blow-Fill-Seal vial strips: 5 vials x 4 regions, bubbles and drops, six defect types with masks."""
    from tfanomaly.data.synth import synth_vials as make

    info = _synthesize(make, "strips", out, good, defective, runs, frames, seed)
    _echo(f"wrote {info['images']} strip images of {info['products']} products ({info['defective']} defective) to {out}")


@synth_app.command("kit")
def synth_kit(
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (keep it apart from the training data)."),
    good: int = typer.Option(120, min=1, help="Good products."),
    defective: int = typer.Option(140, min=1, help="Defective products (defect types cycle)."),
    runs: int = RUNS,
    frames: int = FRAMES,
    seed: int = typer.Option(1000, help="Random seed of the kit (the training data's default is 0)."),
):
    """A vial-line test kit: the demo generator with its own seed, products K001..., all for evaluation
    (`tfanomaly eval --model RUN --data KIT`)."""
    from tfanomaly.data.synth import synth_kit as make

    if seed == 0:
        raise UserError("--seed 0 is the training data's seed: a kit needs its own (default 1000)")
    info = _synthesize(make, "the test kit", out, good, defective, runs, frames, seed)
    _echo(
        f"wrote a test kit of {info['products']} products ({info['good']} good, {info['defective']} defective), "
        f"{info['images']} strip images, to {out}; evaluate with `tfanomaly eval --model RUN --data {out}`"
    )


@data_app.command("pack")
def data_pack(
    config: Path = CONFIG,
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the TFRecord shards."),
    shard_size: int = typer.Option(4096, min=1, help="Patches per shard (at most; training shards are evened out)."),
    workers: int = typer.Option(1, min=1, help="Workers of the jobs that will read the pack: the training shards are a multiple of it, each worker reading its own files."),
    set_: Optional[List[str]] = SET,
):
    """Write the train and test patches as sharded TFRecords (set data.tfrecords to read them back)."""
    cfg = _load(config, set_)
    from tfanomaly.data.pipeline import pack

    info = pack(cfg, out, shard_size, workers=workers)
    parts = ", ".join(f"{k}: {v['patches']} patches in {v['shards']} shards" for k, v in info["subsets"].items())
    _echo(f"packed {parts} -> {out}")


@data_app.command("inspect")
def data_inspect(
    config: Path = CONFIG,
    out: Path = typer.Option(Path("inspect.png"), "--out", "-o", help="PNG grid of sample patches."),
    set_: Optional[List[str]] = SET,
):
    """Print dataset counts (images, patches, labels, regions) and write a grid of sample patches."""
    cfg = _load(config, set_)
    from tfanomaly.inspect import inspect

    report = inspect(cfg, out)
    typer.echo(report)


def _quiet_tensorflow() -> None:
    """Import TensorFlow with the C++ runtime's start-up lines (CUDA probes on
    a CPU-only machine: "Could not find cuda drivers", "failed call to cuInit")
    kept off the terminal. They are written to file descriptor 2 before any log
    setting applies, so stderr is pointed at /dev/null while TensorFlow loads
    and finds its devices; Python errors still raise normally afterwards."""
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    sys.stderr.flush()
    os.dup2(null, 2)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def main() -> None:
    args = sys.argv[1:]
    if args and not {"--help", "-h"} & set(args):
        _quiet_tensorflow()
    try:
        app()
    except UserError as e:
        _echo(f"error: {e}")
        sys.exit(2)
    except KeyboardInterrupt:
        _echo("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
