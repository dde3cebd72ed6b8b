"""Training driver shared by every family: ``tfanomaly.train(config)``.

It fills a run directory, whose layout :class:`tfanomaly.run.Run` owns.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import time
from pathlib import Path

import keras
import numpy as np

from tfanomaly import guards, runtime
from tfanomaly.batch import IMAGE, PERTURB_MASK, PERTURBED
from tfanomaly.config import Config, save_config
from tfanomaly.data.pipeline import Data, acquisition_images, pack_files
from tfanomaly.errors import ConfigError, UserError
from tfanomaly.files import atomic_write_text, tile_grid, write_png
from tfanomaly.models import registry
from tfanomaly.run import Run, load_model  # noqa: F401 (load_model: part of this module's API since the start)


def default_run_dir(cfg: Config) -> Path:
    stem = Path(cfg.source_file).stem if cfg.source_file and not cfg.source_file.startswith("<") else cfg.family
    return Path(cfg.train.out_dir) / stem


class SessionSteps(keras.callbacks.Callback):
    """Counts the optimizer steps this session ran (after a resumed run's backup was restored;
    a mid-epoch resume runs two ``fit`` calls, counted together)."""

    start = None

    def on_train_begin(self, logs=None):
        if self.start is None:
            self.start = int(self.model.step_counter.numpy())

    def on_train_end(self, logs=None):
        self.done = int(self.model.step_counter.numpy()) - self.start


class TimeBudget(keras.callbacks.Callback):
    """Stops training once ``minutes`` of wall time have passed (checked after every batch)."""

    def __init__(self, minutes: float):
        super().__init__()
        self.seconds = minutes * 60.0

    start = None

    def on_train_begin(self, logs=None):
        if self.start is None:  # one budget for the whole session, across the fits of a mid-epoch resume
            self.start = time.time()

    def on_train_batch_end(self, batch, logs=None):
        if time.time() - self.start >= self.seconds:
            self.model.stop_training = True


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


class TrainingMonitor(keras.callbacks.Callback):
    """Says, every epoch, whether training is working, on a fixed batch of held-out
    good images (the validation split; a fixed training batch when there is none):

    - ``mon_ssim`` / ``mon_psnr``: SSIM and PSNR of the model's reconstruction vs X;
    - ``mon_spread``: mean over pixels of the reconstructions' std across the batch,
      relative to the inputs' (about 1 for a working generator, 0 for a constant one);
    - ``mon_synth_image_auroc`` / ``mon_synth_pixel_auroc``: AUROC of the scores and
      heatmaps on the same images under the training perturbation (Perlin or
      corruption), against its mask: can the model see synthetic anomalies?

    The values go into the epoch logs (so history.csv, TensorBoard and the run
    summary get them); a collapsed generator (``mon_spread`` below
    ``collapse_ratio`` for two epochs in a row, or in the last epoch) prints a
    warning naming the epoch, and a run that ends with ``mon_spread`` below
    ``min_spread`` (reconstructions that vary much less than the images: parts of
    them drawn as a typical value, as in the vial demo's failed trajectories,
    docs/benchmarks.md) prints another."""

    def __init__(self, batch: dict, held_out: bool, collapse_ratio: float = 0.05, echo=print, min_spread: float = 0.0):
        super().__init__()
        self.batch = batch
        self.held_out = held_out
        self.collapse_ratio = collapse_ratio
        self.min_spread = min_spread
        self.echo = echo
        self.collapsed_epochs: list[int] = []
        self.last: dict = {}
        self.epoch = 0  # last finished epoch (1-based)
        self.warned = None  # epoch of the last warning

    @staticmethod
    def measure(model, batch: dict) -> dict:
        import tensorflow as tf

        from tfanomaly import metrics

        x = tf.cast(batch[IMAGE], tf.float32)
        out = model.score(x)
        rec = tf.clip_by_value(tf.cast(out["reconstruction"], tf.float32), 0.0, 1.0)
        vals = {
            "mon_ssim": float(tf.reduce_mean(tf.image.ssim(x, rec, 1.0, filter_size=min(11, x.shape[1], x.shape[2])))),
            "mon_psnr": float(tf.reduce_mean(tf.image.psnr(x, rec, 1.0))),
        }
        spread_in = float(tf.reduce_mean(tf.math.reduce_std(x, axis=0)))
        spread_out = float(tf.reduce_mean(tf.math.reduce_std(rec, axis=0)))
        vals["mon_spread"] = spread_out / spread_in if spread_in > 1e-6 else float("nan")
        m = np.asarray(batch[PERTURB_MASK], np.float32)
        if m.max() > 0.5:
            pert = model.score(tf.cast(batch[PERTURBED], tf.float32))
            labels = (m.reshape(len(m), -1).max(1) > 0.5).astype(int)
            if 0 < labels.sum() < len(labels):  # both kinds in the batch (a corruption of probability 1 has no clean image)
                vals["mon_synth_image_auroc"] = metrics.roc_auc(labels, np.asarray(pert["score"], np.float64))
            vals["mon_synth_pixel_auroc"] = metrics.roc_auc((m[..., 0] > 0.5).ravel(), np.asarray(pert["heatmap"], np.float32)[..., 0].ravel())
        return vals

    def on_epoch_end(self, epoch, logs=None):
        vals = self.measure(self.model, self.batch)
        self.last = vals
        if logs is not None:
            logs.update(vals)
        if vals["mon_spread"] < self.collapse_ratio:
            self.collapsed_epochs.append(epoch + 1)
            # a fresh generator's first epoch can look flat (batch-norm statistics still settling):
            # warn from the second collapsed epoch in a row, or at the end of training
            if epoch in self.collapsed_epochs:  # the previous epoch (1-based) was flat too
                self._warn(epoch + 1)
        self.epoch = epoch + 1

    def on_train_end(self, logs=None):
        if self.collapsed_epochs[-1:] == [self.epoch]:  # said already, or now
            if self.warned != self.epoch:
                self._warn(self.epoch)
        elif self.last and self.last["mon_spread"] < self.min_spread:
            where = "held-out" if self.held_out else "training"
            self.echo(
                f"\nwarning: training ended with reconstructions of {len(self.batch['image'])} {where} images that vary much less "
                f"than the images (spread {self.last['mon_spread']:.3g} of the inputs', below train.monitor_min_spread "
                f"{self.min_spread:g}): parts of them are drawn as a typical value instead of reproduced; on the vial demo "
                "such runs scored poorly (docs/benchmarks.md). Look at the run's samples/ and consider another seed."
            )

    def _warn(self, epoch: int):
        self.warned = epoch
        where = "held-out" if self.held_out else "training"
        self.echo(
            f"\nwarning: epoch {epoch}: the reconstructions of {len(self.batch['image'])} {where} images are nearly "
            f"identical (spread {self.last['mon_spread']:.3g} of the inputs'): the generator has collapsed to a constant output"
        )


class HistoryCSV(keras.callbacks.Callback):
    """``logs/history.csv``: one row per epoch with the logged values. Unlike
    Keras' CSVLogger it adds no empty ``val_*`` columns when there is no
    validation split; a resumed run appends under the header it started with."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = Path(path)
        self.keys = None

    def on_epoch_end(self, epoch, logs=None):
        import csv

        logs = logs or {}
        if self.keys is None:
            if self.path.exists() and self.path.stat().st_size:
                with open(self.path, newline="") as f:
                    self.keys = next(csv.reader(f))[1:]
            else:
                self.keys = sorted(logs)
                with open(self.path, "w", newline="") as f:
                    csv.writer(f).writerow(["epoch", *self.keys])
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([epoch, *(float(logs[k]) if k in logs else "" for k in self.keys)])


class KeepCheckpoints(keras.callbacks.Callback):
    """Saves ``checkpoints/step_NNNNNNN.keras`` every ``every`` epochs (for learning curves)."""

    def __init__(self, run: Run, every: int, batches_per_step: int = 1):
        super().__init__()
        self.run, self.every, self.batches_per_step = run, every, batches_per_step

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0:
            step = int(self.model.step_counter.numpy()) * self.batches_per_step
            self.run.checkpoints_dir.mkdir(parents=True, exist_ok=True)
            save_model_atomic(self.model, self.run.step_checkpoint(step))


class StepBackup(keras.callbacks.Callback):
    """Backs up the training state every ``every`` optimizer steps and at every
    epoch end, for ``--resume`` (Keras' ``BackupAndRestore`` restores the epoch,
    not the step, and writes its file in place). The weights file holds every
    variable of the model, its optimizers and so the step counter: the resume
    position is read from it, so a kill between two files cannot disagree.
    Each write goes to a temporary file first and is renamed over the last one.
    The backup is kept when training ends: it is the state a later ``--resume``
    with more epochs (or a new time budget) continues from."""

    def __init__(self, run: Run, every: int, batches_per_step: int = 1):
        super().__init__()
        self.run, self.every, self.batches_per_step = run, every, batches_per_step
        self.saved_at = None

    def on_train_batch_end(self, batch, logs=None):
        if self.every and batch + 1 != self.params.get("steps"):  # the epoch's last batch: on_epoch_end saves
            step = int(self.model.step_counter.numpy())
            if step % self.every == 0 and step != self.saved_at:
                self.save()

    def on_epoch_end(self, epoch, logs=None):
        self.save(epoch + 1)

    def save(self, epochs_done: int | None = None) -> None:
        step = int(self.model.step_counter.numpy())
        d = self.run.backup_dir
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / "tmp.weights.h5"  # Keras wants the .weights.h5 suffix
        self.model.save_weights(str(tmp), overwrite=True)
        os.replace(tmp, self.run.backup_weights)
        meta = {"global_step": step * self.batches_per_step, "optimizer_steps": step, "saved": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if epochs_done is not None:
            meta["epochs_done"] = epochs_done
        atomic_write_text(self.run.backup_info, json.dumps(meta, indent=1))
        self.saved_at = step


def restore_backup(model: keras.Model, run: Run) -> int | None:
    """Load the run's backup into ``model``; returns the batches it had trained
    (optimizer steps x ``grad_accum_steps``), or None when there is no backup."""
    path = run.backup_weights
    if not path.exists():
        legacy = run.backup_dir / "latest.weights.h5"  # Keras' BackupAndRestore (runs of earlier versions)
        if not legacy.exists():
            return None
        path = legacy
    try:
        model.load_weights(str(path))
    except Exception as e:  # noqa: BLE001 (h5py and Keras raise several kinds for a damaged file)
        raise UserError(
            f"{path}: the training backup cannot be read ({type(e).__name__}: {e}); delete {run.backup_dir} to resume from checkpoints/last.keras' epoch by hand, or start a new run"
        ) from None
    return int(model.step_counter.numpy())


def train_input(cfg: Config, data: Data, strategy, global_batch: int, two_domain: bool):
    """The training input and, when it is sharded by file, this worker's share: (dataset, {"pipeline",
    "pipelines", "files"} or None). A multi-worker job on a pack reads each shard with one worker only
    (``distribute_datasets_from_function``: worker i of n reads the pack's files i, i + n, ..., batched
    per replica); any other input is one pipeline that every worker builds and that tf.distribute splits
    by element."""
    if cfg.train.distribute != "multi_worker" or data.pack_info is None:
        return data.train_dataset(global_batch, two_domain), None
    share = {}

    def per_worker(ctx):
        n, i = ctx.num_input_pipelines, ctx.input_pipeline_id
        share.update(pipeline=i, pipelines=n, files=[Path(f).name for f in pack_files(cfg, "train", (n, i))])
        return data.train_dataset(ctx.get_per_replica_batch_size(global_batch), two_domain, shard=(n, i))

    return strategy.distribute_datasets_from_function(per_worker), share


def fit_from(model: keras.Model, ds, steps: int, epochs: int, done: int, **fit_kw) -> list:
    """Train from batch ``done`` of the plan (``epochs`` x ``steps``): a resume in
    the middle of an epoch first finishes that epoch's remaining batches (one
    short ``fit``; its logged losses average those batches only), then runs the
    remaining epochs, so epoch ends stay at multiples of ``steps``. Returns
    the History of each ``fit`` that ran. A callback that stopped the first
    (time budget, NaN loss) stops the second: ``fit`` leaves ``stop_training`` set."""
    epoch, into = divmod(done, steps)
    histories = []
    if into and epoch < epochs:
        histories.append(model.fit(ds, initial_epoch=epoch, epochs=epoch + 1, steps_per_epoch=steps - into, **fit_kw))
        epoch += 1
        if model.stop_training:
            return histories
    if epoch < epochs:
        histories.append(model.fit(ds, initial_epoch=epoch, epochs=epochs, steps_per_epoch=steps, **fit_kw))
    return histories


def save_model_atomic(model: keras.Model, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


def describe_start(cfg: Config, data: Data, n_patches: int, steps: int, two_domain: bool) -> str:
    """The line printed when training starts: what trains on what, and how long."""
    d = cfg.data
    unit = "patches" if d.source == "vials" else "images"
    val = data.count("val", True) if cfg.train.validation_fraction > 0 else 0
    test = data.count("test", False) if data.pack_info is None else data.pack_info["subsets"].get("test", {}).get("patches", 0)
    what = f"{n_patches} training {unit}" + (" per domain (good and defective)" if two_domain else "")
    if d.tiling.enabled:
        shape = f"random {d.image_size[0]}x{d.image_size[1]} tiles of the whole images at scale {d.tiling.scale:g} (scored by tiles at stride {d.tiling.stride[0]}x{d.tiling.stride[1]})"
    else:
        shape = f"resized to {d.image_size[0]}x{d.image_size[1]}"
    split = f"split {d.split.mode}, seed {d.split.seed}" if d.source != "mvtec" else "MVTec train/test folders"
    return (
        f"training {cfg.family} on {what} ({shape}); {val} held out for validation, {test} test {unit}; "
        f"{split}; {steps} steps of {cfg.train.batch_size} per epoch, up to {cfg.train.epochs} epochs" + (f" or {cfg.train.time_budget_minutes:g} minutes" if cfg.train.time_budget_minutes else "")
    )


def unseen_scored_images(cfg: Config) -> str | None:
    """A warning when the vial line scores kinds of image it never trains on (a rank
    image in ``data.eval_ranks`` missing from ``data.rank_images``, or a frame outside
    ``data.train_frames``): the generator then reconstructs them by extrapolation,
    and how well depends on the training trajectory (docs/benchmarks.md, the demo's
    seeds). None when every scored image is a kind the model trained on."""
    if cfg.data.source != "vials":
        return None
    (scored_frames, scored_ranks), (frames_seen, ranks_seen) = (acquisition_images(cfg.data, t) for t in (False, True))
    ranks = sorted(set(scored_ranks) - set(ranks_seen))
    frames = sorted(set(scored_frames) - set(frames_seen))
    unseen = [f"rank image {r}" for r in ranks] + [f"frame {f}" for f in frames]
    if not unseen:
        return None
    fix = " and ".join(x for x in (ranks and "data.rank_images", frames and "data.train_frames") if x)
    return (
        f"warning: the model is scored on {', '.join(unseen)} (data.eval_ranks / data.eval_frames) but never trains on "
        f"{'it' if len(unseen) == 1 else 'them'}; add {'it' if len(unseen) == 1 else 'them'} to {fix}"
    )


@contextlib.contextmanager
def _removed_if_setup_fails(run: Path, fresh: bool):
    """Remove the run folder this call created when training fails before its
    first step (bad data, a refused model, a config error found late): it holds
    nothing but the config, and the corrected rerun would be refused by it. A
    folder that existed before (``--resume``) is never touched."""
    try:
        yield
    except BaseException:
        if fresh:
            shutil.rmtree(run, ignore_errors=True)
        raise


def train_splits(cfg: Config, seeds: list[int], parent: str | os.PathLike | None = None, resume: bool = False, echo=print, **kw) -> list[Path]:
    """Repeated data splits: one run per seed in ``parent/split_<seed>``, each with
    ``seed`` and ``data.split.seed`` set to it. Finished splits are skipped and
    unfinished ones resumed, so an interrupted series continues with the same
    call. Evaluate them together with :func:`tfanomaly.evaluate.evaluate_splits`."""
    import copy

    from tfanomaly.run import split_run

    parent = Path(parent) if parent else default_run_dir(cfg)
    runs = []
    for s in seeds:
        sub = split_run(parent, s)
        if sub.finished:
            echo(f"{sub.path}: already trained, skipped")
        else:
            one = copy.deepcopy(cfg)
            one.seed = one.data.split.seed = s
            train(one, sub.path, resume=resume or sub.started, echo=echo, **kw)
        runs.append(sub.path)
    return runs


def train(cfg: Config, run_dir: str | os.PathLike | None = None, resume: bool = False, extra_callbacks=(), verbose: int | str = "auto", echo=print) -> Path:
    """Train the family named by ``cfg.family``; returns the run directory.

    Under ``train.distribute: multi_worker`` every worker runs this with the same
    arguments; the chief writes the run folder, the other workers write theirs to
    a temporary folder that is removed at the end (and read the chief's backup on
    ``resume``), as TensorFlow's multi-worker checkpointing asks."""
    run = Path(run_dir) if run_dir else default_run_dir(cfg)
    chief, role = runtime.worker_role(cfg)
    if not chief:
        import tempfile

        scratch = Path(tempfile.mkdtemp(prefix=f"tfanomaly-{role}-"))
        try:
            _train(cfg, scratch, resume, extra_callbacks, 0, echo=lambda m: None, backup_from=Run(run) if resume else None)  # a quiet console
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return run
    return _train(cfg, run, resume, extra_callbacks, verbose, echo)


def _train(cfg: Config, run: Path, resume: bool, extra_callbacks, verbose, echo, backup_from: Run | None = None) -> Path:
    layout = Run(run)
    if backup_from is not None:  # a non-chief worker: its scratch folder, the chief's backup
        resume = False
    if run.exists() and any(run.iterdir()) and not resume:
        raise UserError(f"{run}: run directory already holds a run; pass --resume to continue it or --run-dir for a new one")
    if resume and not layout.started:
        raise UserError(f"{run}: nothing to resume (no config.yaml); start the run without --resume")
    fresh = not (run.exists() and any(run.iterdir()))
    with _removed_if_setup_fails(run, fresh):  # a failed start must not block the corrected rerun
        run.mkdir(parents=True, exist_ok=True)
        started = layout.config_file.stat().st_mtime if resume and layout.config_file.exists() else None
        save_config(cfg, layout.config_file)
        if started is not None:  # config.yaml's time stays the run's start (learning curves count wall time from it)
            os.utime(layout.config_file, (started, started))

        strategy = runtime.strategy_for(cfg)  # first: a multi-worker strategy must precede every other TF op
        runtime.setup(cfg)
        data = Data(cfg)
        global_batch = cfg.train.batch_size
        replicas = strategy.num_replicas_in_sync
        if global_batch % replicas:
            raise ConfigError(f"{cfg.source_file}: train.batch_size: expected a multiple of the {replicas} replicas of train.distribute: {cfg.train.distribute}, got {global_batch}")
        two_domain = registry.model_class(cfg.family).trains_on_defects
        n_patches = data.train_patches(two_domain)
        steps = cfg.train.steps_per_epoch or max(1, n_patches // global_batch)
        total_steps = steps * cfg.train.epochs
        accum = cfg.train.grad_accum_steps  # batches per optimizer update
        ds, input_shards = train_input(cfg, data, strategy, global_batch, two_domain)
        # the sample grid's batch comes from a dataset of its own: an iterator of ``ds`` would move the
        # shuffle seed generators that ``ds`` shares with every later iterator (its prefetching too), so
        # the batches trained on would depend on it, and a strategy's copy of ``ds`` would see others
        sample_batch = {k: v[:8] for k, v in next(iter(data.train_dataset(global_batch, two_domain))).items()}

        with strategy.scope():
            model = registry.build(cfg)
            guards.check_model(model)
            model.compile_for_training(cfg.train, max(1, total_steps // accum), global_batch)

        val_ds = data.validation_dataset(global_batch)
        watch = TrainingMonitor(data.monitor_batch(), held_out=val_ds is not None, echo=echo, min_spread=cfg.train.monitor_min_spread)
        echo(describe_start(cfg, data, n_patches, steps, two_domain))
        if (unseen := unseen_scored_images(cfg)) is not None:
            echo(unseen)
        plateau = []
        rp = cfg.train.reduce_on_plateau
        if rp.patience:
            first = model.metrics[0].name
            monitor = rp.monitor or (f"val_{first}" if val_ds is not None else first)
            plateau = [ReduceLROnPlateauAll(monitor, rp.patience, rp.factor, rp.min_lr)]

        done = 0
        if resume or backup_from is not None:
            restored = restore_backup(model, backup_from or layout)
            if restored is None:
                echo(f"{run}: no backup to resume from ({layout.backup_dir} is missing): training starts at step 0")
            else:
                done = restored * accum
                epoch, into = divmod(done, steps)
                if done >= total_steps:
                    echo(f"{run}: already trained all {total_steps} steps ({cfg.train.epochs} epochs of {steps}); raise train.epochs (--set train.epochs=N) to train on")
                    return run
                echo(f"resuming at global step {done} of {total_steps}: epoch {epoch + 1}, step {into + 1} of {steps}")

        callbacks = [
            StepBackup(layout, cfg.train.backup_every_steps, accum),
            session := SessionSteps(),
            keras.callbacks.TerminateOnNaN(),
            watch,  # before the loggers, so they record its measures
            *plateau,  # before the loggers, so they see its "lr"
            keras.callbacks.ModelCheckpoint(str(layout.last_checkpoint)),
            keras.callbacks.TensorBoard(str(layout.logs_dir), write_graph=False, update_freq="epoch"),
            HistoryCSV(layout.history_file),
            SampleImages(sample_batch, layout.samples_dir, cfg.train.samples_every),
            *([TimeBudget(cfg.train.time_budget_minutes)] if cfg.train.time_budget_minutes else []),
            *([KeepCheckpoints(layout, cfg.train.checkpoint_every, accum)] if cfg.train.checkpoint_every else []),
            *extra_callbacks,
        ]
        layout.logs_dir.mkdir(exist_ok=True)
    start = time.time()
    histories = fit_from(model, ds, steps, cfg.train.epochs, done, callbacks=callbacks, verbose=verbose, validation_data=val_ds, shuffle=False)
    elapsed = time.time() - start
    done = session.done * accum  # batches (the step counter counts optimizer updates)
    logged = {}  # the logs of every fit that ran, in order
    for h in histories:
        for k, v in h.history.items():
            logged.setdefault(k, []).extend(v)
    # the monitor's measures (mon_*) may be undefined (nan) on a healthy run; the losses may not
    if any(not np.all(np.isfinite(v)) for k, v in logged.items() if not k.startswith("mon_")):
        raise UserError(f"{run}: training diverged (NaN loss); lower train.learning_rate")
    save_model_atomic(model, layout.model_file)
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
        "final_losses": {k: float(v[-1]) for k, v in logged.items() if v},
        "monitor": watch.last,
        "collapsed_epochs": watch.collapsed_epochs,
        "lr_reductions": [{"epoch": e + 1, "lr": lr} for e, lr in plateau[0].reductions] if plateau else [],
        **({"input_shards": input_shards} if input_shards else {}),
    }
    atomic_write_text(layout.summary_file, json.dumps(summary, indent=2))
    return run
