"""Training driver shared by every family: ``tfanomaly.train(config)``.

A run directory holds everything a run produced::

    RUN/config.yaml          the resolved config
    RUN/backup/              BackupAndRestore state (a killed run resumes here)
    RUN/checkpoints/last.keras
    RUN/logs/                TensorBoard + history.csv
    RUN/samples/epoch_001.png  X, X_n, G(X_n), heatmap grids
    RUN/model.keras          the final model (safe_mode loadable)
    RUN/train_summary.json   steps, time, images/s
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

import cv2
import keras
import numpy as np

from tfanomaly import guards, runtime
from tfanomaly.config import Config, atomic_write_text, save_config
from tfanomaly.data.pipeline import Data
from tfanomaly.errors import UserError
from tfanomaly.models import registry


def default_run_dir(cfg: Config) -> Path:
    stem = Path(cfg.source_file).stem if cfg.source_file and not cfg.source_file.startswith("<") else cfg.family
    return Path(cfg.train.out_dir) / stem


def tile_grid(columns: dict, max_rows: int = 8) -> np.ndarray:
    """uint8 grid: one column per named array [B, H, W, C] in [0, 1], one row per sample."""
    cols = []
    for name, arr in columns.items():
        a = np.clip(np.asarray(arr, np.float32)[:max_rows], 0, 1)
        if a.shape[-1] not in (1, 3):
            a = a[..., :3]
        if a.shape[-1] == 1:
            a = np.repeat(a, 3, -1)
        col = np.concatenate(list(a), axis=0)
        head = np.zeros((14, col.shape[1], 3), np.uint8)
        cv2.putText(head, name[: max(1, col.shape[1] // 7)], (1, 11), cv2.FONT_HERSHEY_PLAIN, 0.8, (255, 255, 255), 1)
        cols.append(np.concatenate([head.astype(np.float32) / 255.0, col], 0))
        cols.append(np.full((cols[-1].shape[0], 2, 3), 0.5, np.float32))
    return (np.concatenate(cols[:-1], axis=1) * 255).round().astype(np.uint8)


def write_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    os.replace(tmp, path)


class SessionSteps(keras.callbacks.Callback):
    """Counts the optimizer steps this session ran (after BackupAndRestore restored a killed run)."""

    def on_train_begin(self, logs=None):
        self.start = int(self.model.step_counter.numpy())

    def on_train_end(self, logs=None):
        self.done = int(self.model.step_counter.numpy()) - self.start


class TimeBudget(keras.callbacks.Callback):
    """Stops training once ``minutes`` of wall time have passed (checked after every batch)."""

    def __init__(self, minutes: float):
        super().__init__()
        self.seconds = minutes * 60.0

    def on_train_begin(self, logs=None):
        self.start = time.time()
        self.stopped = False

    def on_train_batch_end(self, batch, logs=None):
        if time.time() - self.start >= self.seconds:
            self.model.stop_training = True
            self.stopped = True


class SampleImages(keras.callbacks.Callback):
    """Saves X, X_n, G(X_n) and heatmap grids of a fixed batch every N epochs."""

    def __init__(self, batch: dict, out_dir: Path, every: int = 1):
        super().__init__()
        self.batch = batch
        self.out_dir = Path(out_dir)
        self.every = every

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        cols = {k: np.asarray(v) for k, v in self.model.sample_outputs(self.batch).items()}
        write_png(self.out_dir / f"epoch_{epoch + 1:03d}.png", tile_grid(cols))


class ReduceLROnPlateauAll(keras.callbacks.Callback):
    """Keras' ReduceLROnPlateau for models with several optimizers: multiplies
    every optimizer's (constant) learning rate by ``factor`` when ``monitor``
    has not improved for ``patience`` epochs."""

    def __init__(self, monitor: str, patience: int, factor: float, min_lr: float, min_delta: float = 1e-6):
        super().__init__()
        self.monitor, self.patience, self.factor, self.min_lr, self.min_delta = monitor, patience, factor, min_lr, min_delta
        self.best = float("inf")
        self.wait = 0
        self.reductions = []  # (epoch, new lr)

    def _optimizers(self):
        return [getattr(self.model, n) for n in self.model._optimizer_names]

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise UserError(f"train.reduce_on_plateau.monitor: {self.monitor!r} is not a logged value; logged: {', '.join(sorted(logs))}")
        value = float(logs[self.monitor])
        if value < self.best - self.min_delta:
            self.best, self.wait = value, 0
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.wait = 0
                for opt in self._optimizers():
                    new = max(float(opt.learning_rate.numpy()) * self.factor, self.min_lr)
                    opt.learning_rate.assign(new)
                self.reductions.append((epoch, new))
        logs["lr"] = float(self._optimizers()[0].learning_rate.numpy())


def save_model_atomic(model: keras.Model, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


def train(cfg: Config, run_dir: str | os.PathLike | None = None, resume: bool = False, extra_callbacks=(), verbose: int | str = "auto") -> Path:
    """Train the family named by ``cfg.family``; returns the run directory."""
    run = Path(run_dir) if run_dir else default_run_dir(cfg)
    if run.exists() and any(run.iterdir()) and not resume:
        raise UserError(f"{run}: run directory already holds a run; pass --resume to continue it or --run-dir for a new one")
    if resume and not (run / "config.yaml").exists():
        raise UserError(f"{run}: nothing to resume (no config.yaml); start the run without --resume")
    run.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run / "config.yaml")

    runtime.setup(cfg)
    strategy = runtime.strategy_for(cfg)
    data = Data(cfg)
    global_batch = cfg.train.batch_size
    two_domain = registry.model_class(cfg.family).trains_on_defects
    n_patches = data.train_patches(two_domain)
    steps = cfg.train.steps_per_epoch or max(1, n_patches // global_batch)
    total_steps = steps * cfg.train.epochs
    accum = cfg.train.grad_accum_steps  # batches per optimizer update
    ds = data.train_dataset(global_batch, two_domain)
    sample_batch = {k: v[:8] for k, v in next(iter(ds)).items()}

    with strategy.scope():
        model = registry.build(cfg)
        guards.check_model(model)
        model.compile_for_training(cfg.train, max(1, total_steps // accum), global_batch)

    val_ds = data.validation_dataset(global_batch)
    plateau = []
    rp = cfg.train.reduce_on_plateau
    if rp.patience:
        first = model.metrics[0].name
        monitor = rp.monitor or (f"val_{first}" if val_ds is not None else first)
        plateau = [ReduceLROnPlateauAll(monitor, rp.patience, rp.factor, rp.min_lr)]

    callbacks = [
        keras.callbacks.BackupAndRestore(str(run / "backup"), delete_checkpoint=True),
        session := SessionSteps(),
        keras.callbacks.TerminateOnNaN(),
        *plateau,  # before the loggers, so they see its "lr"
        keras.callbacks.ModelCheckpoint(str(run / "checkpoints" / "last.keras")),
        keras.callbacks.TensorBoard(str(run / "logs"), write_graph=False, update_freq="epoch"),
        keras.callbacks.CSVLogger(str(run / "logs" / "history.csv"), append=True),
        SampleImages(sample_batch, run / "samples", cfg.train.samples_every),
        *([TimeBudget(cfg.train.time_budget_minutes)] if cfg.train.time_budget_minutes else []),
        *extra_callbacks,
    ]
    (run / "logs").mkdir(exist_ok=True)
    start = time.time()
    history = model.fit(ds, epochs=cfg.train.epochs, steps_per_epoch=steps, callbacks=callbacks, verbose=verbose, validation_data=val_ds)
    elapsed = time.time() - start
    done = session.done * accum  # batches (the step counter counts optimizer updates)
    if any(not np.all(np.isfinite(v)) for v in history.history.values()):
        raise UserError(f"{run}: training diverged (NaN loss); lower train.learning_rate")
    save_model_atomic(model, run / "model.keras")
    summary = {
        "family": cfg.family,
        "train_patches": n_patches,
        "steps_per_epoch": steps,
        "epochs": cfg.train.epochs,
        "steps_this_session": done,
        "global_step": int(model.step_counter.numpy()) * accum,
        "grad_accum_steps": accum,
        "seconds": round(elapsed, 2),
        "images_per_second": round(done * global_batch / max(elapsed, 1e-9), 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "final_losses": {k: float(v[-1]) for k, v in history.history.items()} if history.history else {},
        "lr_reductions": [{"epoch": e + 1, "lr": lr} for e, lr in plateau[0].reductions] if plateau else [],
    }
    atomic_write_text(run / "train_summary.json", json.dumps(summary, indent=2))
    return run


def load_model(run_dir: str | os.PathLike) -> keras.Model:
    """Load the final model of a run directory (safe mode)."""
    run = Path(run_dir)
    path = run / "model.keras" if run.is_dir() else run
    if not path.exists():
        raise UserError(f"{run}: no model.keras here: is this a finished run directory?")
    # importing the families registers their classes for deserialization
    from tfanomaly.models import registry as _registry

    for name in _registry.names():
        _registry.model_class(name)
    return keras.models.load_model(path, safe_mode=True, compile=False)
