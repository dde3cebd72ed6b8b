"""Small image filters shared by the data pipeline and the models (a leaf:
it imports only TensorFlow)."""

from __future__ import annotations

import math

import tensorflow as tf


def gaussian_kernel(sigma: float, channels: int = 1):
    """[k, k, channels, 1] normalised gaussian for depthwise convolution."""
    radius = max(1, int(math.ceil(3.0 * sigma)))
    ax = tf.range(-radius, radius + 1, dtype=tf.float32)
    g = tf.exp(-(ax**2) / (2.0 * sigma * sigma))
    g = g / tf.reduce_sum(g)
    return tf.tile((g[:, None] * g[None, :])[:, :, None, None], [1, 1, channels, 1])
