"""Process-wide TensorFlow setup: logging, seeds, precision, strategy."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402


def setup(cfg) -> None:
    """Seed everything and apply the precision policy of ``cfg``."""
    keras.utils.set_random_seed(cfg.seed)
    keras.mixed_precision.set_global_policy(cfg.train.mixed_precision)


def strategy_for(cfg) -> tf.distribute.Strategy:
    kind = cfg.train.distribute
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    if kind == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()
