"""tfanomaly: reconstruction- and GAN-based visual anomaly detection (Keras 3 / TensorFlow).

The Python API mirrors the command line::

    cfg = tfanomaly.load_config("configs/vials_demo.yaml", ["train.epochs=2"])
    run = tfanomaly.train(cfg)                          # -> run directory
    summary = tfanomaly.evaluate_run(run, cfg)          # -> metrics, thresholds, report
    tfanomaly.export(run, "saved_models/vials_demo")   # -> SavedModel + tfanomaly.json

TensorFlow is imported on first use of train/evaluate/export, not on import.
"""

from tfanomaly.config import load_config  # noqa: E402
from tfanomaly.errors import ConfigError, DataError, UserError  # noqa: E402
from tfanomaly.version import __version__  # noqa: E402

__all__ = ["load_config", "train", "train_splits", "evaluate_run", "export", "load_model", "UserError", "ConfigError", "DataError", "__version__"]


def train(cfg, run_dir=None, resume=False, **kw):
    from tfanomaly.train import train as _train

    return _train(cfg, run_dir, resume, **kw)


def train_splits(cfg, seeds, parent=None, resume=False, **kw):
    """One run per split seed in ``parent/split_<seed>`` (``tfanomaly train --split-seeds``)."""
    from tfanomaly.train import train_splits as _train_splits

    return _train_splits(cfg, seeds, parent, resume, **kw)


def load_model(run_dir):
    from tfanomaly.run import load_model as _load

    return _load(run_dir)


def evaluate_run(run_dir, cfg=None, out_dir=None, **kw):
    """Evaluate the model of a run directory (config from the run unless given)."""
    from tfanomaly.evaluate import evaluate
    from tfanomaly.run import Run

    run = Run(run_dir)
    return evaluate(run.load_model(), cfg or run.config(), out_dir or run.eval_dir, **kw)


def export(run_dir, out, thresholds_file=None, force=False):
    from tfanomaly.export import export as _export

    return _export(run_dir, out, thresholds_file, force=force)
