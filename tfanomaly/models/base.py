"""The one contract every family implements.

A family is a ``keras.Model`` subclass that
- builds its sub-networks in ``__init__`` from its config dataclass (passed as
  a plain dict, so ``get_config`` mirrors ``__init__`` and ``.keras`` files
  load with ``safe_mode=True``);
- overrides ``compile`` to take its optimizers, and ``train_step`` to run one
  step with ``tf.GradientTape``, returning named losses tracked by
  ``keras.metrics.Mean``;
- implements ``score(images) -> {score [B], heatmap [B,H,W,1],
  reconstruction [B,H,W,C]}``, a tf.function-friendly inference path that
  export wraps unchanged.
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from tfanomaly.errors import UserError


def make_optimizer(train_cfg, total_steps: int, lr_scale: float = 1.0, name: str = "adam"):
    """Adam with the configured schedule (constant, cosine with restarts, or
    constant then linear decay to zero from the middle of training) and
    gradient accumulation. ``total_steps`` counts optimizer updates."""
    lr = train_cfg.learning_rate * lr_scale
    if train_cfg.lr_schedule == "cosine_restarts":
        lr = keras.optimizers.schedules.CosineDecayRestarts(lr, first_decay_steps=train_cfg.first_decay_steps, t_mul=2.0, m_mul=train_cfg.restart_m_mul, alpha=0.0)
    elif train_cfg.lr_schedule == "linear_decay":
        lr = HalfwayLinearDecay(lr, max(total_steps, 2))
    if train_cfg.warmup_steps:
        lr = LinearWarmup(lr, train_cfg.warmup_steps)
    # Keras averages the gradients of ``grad_accum_steps`` batches and applies
    # them once; ``iterations`` (the schedules' step) counts applied updates.
    accum = train_cfg.grad_accum_steps if train_cfg.grad_accum_steps > 1 else None
    return keras.optimizers.Adam(lr, beta_1=train_cfg.beta_1, beta_2=train_cfg.beta_2, gradient_accumulation_steps=accum, name=name)


@keras.saving.register_keras_serializable(package="tfanomaly")
class HalfwayLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Constant for the first half of training, then linear to zero (CycleGAN)."""

    def __init__(self, initial_learning_rate, total_steps):
        self.initial_learning_rate = initial_learning_rate
        self.total_steps = total_steps

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        half = self.total_steps / 2.0
        frac = tf.clip_by_value((step - half) / half, 0.0, 1.0)
        return self.initial_learning_rate * (1.0 - frac)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "total_steps": self.total_steps}


@keras.saving.register_keras_serializable(package="tfanomaly")
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """``after`` (a schedule or a constant) scaled by min(1, (step + 1) / warmup_steps):
    the first updates of a fresh model are small, a common guard against early
    instability (it did not rescue the demo's seed 1, docs/benchmarks.md)."""

    def __init__(self, after, warmup_steps):
        if isinstance(after, dict):
            after = keras.saving.deserialize_keras_object(after)
        self.after = after
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        ramp = tf.minimum(1.0, (tf.cast(step, tf.float32) + 1.0) / float(self.warmup_steps))
        base = self.after(step) if callable(self.after) else self.after
        return ramp * tf.cast(base, tf.float32)

    def get_config(self):
        after = keras.saving.serialize_keras_object(self.after) if callable(self.after) else self.after
        return {"after": after, "warmup_steps": self.warmup_steps}


class AnomalyModel(keras.Model):
    """Base class of the five families (see the module docstring).

    Every family defines, and class creation checks that it does:

    - ``score(images) -> {"score": [B], "heatmap": [B, H, W, 1], "reconstruction": [B, H, W, C]}``
      for images [B, H, W, C] in [0, 1]: raw scores (higher = more anomalous, never normalised by
      the batch), graph code that export wraps unchanged;
    - ``sample_outputs(batch) -> {name: [B, H, W, C] in [0, 1]}``: the columns of the sample-image
      callback (input, perturbed input, reconstruction, heatmap, ...);
    - ``optimizer_groups() -> {attribute name: (lr scale, trainable variables)}``, one Adam each,
      the first group's step counter being the model's;
    - ``train_step(batch)``.
    """

    REQUIRED = ("score", "sample_outputs", "train_step", "optimizer_groups")

    family: str = ""
    config_class = None
    trains_on_defects = False  # True: batches carry "abnormal" images of the defective class too
    # model config keys that change only how ``score`` reads the trained networks (no weight
    # depends on them): evaluation may set them, and the thresholds file records them
    SCORE_OPTIONS: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        missing = [m for m in cls.REQUIRED if not any(m in vars(k) for k in cls.__mro__ if k is not AnomalyModel and issubclass(k, AnomalyModel))]
        if missing:
            raise TypeError(f"{cls.__name__}: a family must define {', '.join(missing)} (see tfanomaly.models.base)")

    def __init__(self, model_config: dict, image_shape, **kwargs):
        super().__init__(**kwargs)
        self.model_config = dict(model_config)
        self.cfg = self.config_class(**self.model_config)
        self.image_shape = tuple(int(v) for v in image_shape)
        self.global_batch_size = None  # set by compile() for strategy-safe averaging

    @classmethod
    def from_run_config(cls, cfg):
        h, w = cfg.data.image_size
        return cls(dataclasses.asdict(cfg.model), (h, w, cfg.data.channels), name=cfg.family)

    # -- optimizers (shared by every family) ---------------------------------
    def compile(self, optimizers: dict, global_batch_size=None, **kwargs):
        # No Keras-level optimizer: each network's optimizer is an attribute
        # (saved and restored with the model, by the training backup too).
        super().compile(optimizer=None, **kwargs)
        self.global_batch_size = global_batch_size  # strategy-safe loss averaging
        self._optimizer_names = list(optimizers)
        groups = self.optimizer_groups()
        for name, opt in optimizers.items():
            setattr(self, name, opt)
            # slot variables now, so the train step is traced once, not twice
            opt.build(groups[name][1])

    def compile_for_training(self, train_cfg, total_steps: int, global_batch_size: int):
        self.compile(
            optimizers={name: make_optimizer(train_cfg, total_steps, scale, name=name.replace("optimizer", "adam")) for name, (scale, _) in self.optimizer_groups().items()},
            global_batch_size=global_batch_size,
            jit_compile=train_cfg.jit_compile,
        )

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Nothing to build: the networks are built with the model and the optimizers'
        slots in ``compile``. Under a tf.distribute strategy keras would otherwise pull
        one batch from a fresh iterator of the training data before fitting, which moves
        the data's shuffle seeds: N replicas would then train on another order of the
        same images than one process does."""
        return

    @property
    def step_counter(self):
        return getattr(self, self._optimizer_names[0]).iterations

    def get_config(self):
        return {"model_config": self.model_config, "image_shape": list(self.image_shape), "name": self.name}

    # -- score options (how score() reads the networks) ------------------------
    def score_options(self) -> dict:
        return {k: getattr(self.cfg, k) for k in self.SCORE_OPTIONS}

    def set_score_options(self, options: dict, where: str = "score options") -> None:
        """Switch the score options (see ``SCORE_OPTIONS``) of a trained model;
        call before ``score`` is traced. Values are checked by the family config."""
        unknown = sorted(set(options) - set(self.SCORE_OPTIONS))
        if unknown:
            allowed = ", ".join(self.SCORE_OPTIONS) or "none"
            raise UserError(f"{where}: {self.family} has no score option {unknown[0]!r} (it has: {allowed})")
        from tfanomaly.config import from_dict  # the config's own type and range checks of every field

        merged = {**dict(self.model_config), **options}
        cfg = from_dict(self.config_class, merged, "model", where)
        check = getattr(cfg, "check_score_options", None)
        if check:
            check(where)
        self.model_config = merged
        self.cfg = cfg

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def call(self, images, training=False):
        return self.score(images)

    def export_modules(self) -> list:
        """The layers/models whose variables ``score`` reads (what export saves)."""
        return [self]

    def _track(self, *names):
        self._trackers = {n: keras.metrics.Mean(name=n) for n in names}

    @property
    def metrics(self):
        return list(getattr(self, "_trackers", {}).values())

    def _report(self, values: dict, extra: dict | None = None):
        """Track the step's losses. ``values`` are this replica's share of global-batch
        means (``_avg``); times the number of replicas they are the mean over its own
        images, and keras averages those over replicas: the logs show the global
        batch's means under any strategy. ``extra`` values (counters, the same on
        every replica) are logged as they are."""
        strategy = tf.distribute.get_strategy()
        n = strategy.num_replicas_in_sync
        for k, v in values.items():
            self._trackers[k].update_state(v * n)
        logs = {k: t.result() for k, t in self._trackers.items()}
        logs.update({k: tf.cast(v, tf.float32) for k, v in (extra or {}).items()})
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            # keras reduces a multi-worker step's logs with strategy.reduce(MEAN, v, axis=0): they need an axis
            logs = {k: tf.reshape(v, [1]) for k, v in logs.items()}
        return logs

    @staticmethod
    def _replica_rows(draw, n):
        """``draw(m)`` gives m random rows (a latent batch, mixing weights). Under a
        strategy each replica draws the rows of the whole global batch (the generator
        state is shared, so the values are the same) and keeps its own ``n``: N
        replicas use what one process draws for the global batch."""
        ctx = tf.distribute.get_replica_context()
        k = ctx.num_replicas_in_sync if ctx is not None else 1
        if k == 1:
            return draw(n)
        i = ctx.replica_id_in_sync_group
        return draw(n * k)[i * n : (i + 1) * n]

    def _avg(self, per_example):
        return tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch_size)
